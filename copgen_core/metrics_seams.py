"""Seam visibility of a mosaic of generated windows (large-area generation, see the model notes §8).

Each window is generated on its own, so neighbouring windows need not agree where they meet: a seam is
a jump in value across a window border that the image does not have elsewhere. The seam ratio compares
the mean absolute difference between neighbouring pixels *across* window borders with the same mean
*inside* windows. 1.0 means the borders are invisible (as rough as anywhere else); 2.0 means the
jumps across borders are twice the usual pixel-to-pixel change.

Window layout: windows start every ``pitch`` pixels from ``offset`` (the index of the first row/column
of a window), so the pixel pair (i - 1, i) along an axis straddles a border when ``(i - offset) %
pitch == 0``. With overlapping, blended windows, ``pitch`` is the stride.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SeamGradients(NamedTuple):
    """Mean absolute neighbour differences across window borders and inside windows, (...)."""

    across: np.ndarray
    inside: np.ndarray


def _pair_arg(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a (rows, cols) pair, got {value!r}")
    return int(pair[0]), int(pair[1])


def _border(n: int, pitch: int, offset: int) -> np.ndarray:
    """(n - 1,) bool: whether the pair (i - 1, i), i = 1..n-1, straddles a window border."""
    return (np.arange(1, n) - offset) % pitch == 0


def seam_gradients(
    mosaic: np.ndarray, pitch: int | tuple[int, int], offset: int | tuple[int, int] = 0,
    inside_every: int | None = None,
) -> SeamGradients:
    """Mean |difference| of 4-neighbour pixel pairs across window borders and inside windows.

    With ``inside_every = k`` the inside mean only counts pairs on lines at the borders' phase modulo
    ``k`` (``(i - offset) % k == 0``) that are not borders: with a VAE decoder that works in k x k
    latent cells (k = 8 here), every cell edge is rougher than the pixels within a cell, and window
    borders are cell edges, so this compares a border with the other cell edges (a like-for-like
    baseline); ``None`` compares it with every pair inside windows.

    Parameters
    ----------
    mosaic:
        (..., H, W) image(s), e.g. (C, H, W) for per-band values; NaN pairs are skipped.
    pitch:
        Window pitch (stride) in pixels, one int or (rows, cols); >= 2.
    offset:
        Index of the first row/column of a window, one int or (rows, cols).

    Returns
    -------
    SeamGradients
        ``across`` and ``inside``, each (...) float64 (NaN if no such pair is finite).

    Raises
    ------
    ValueError
        On a pitch below 2, or an image with no border inside it or no pair inside a window.
    """
    x = np.asarray(mosaic, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"mosaic must be (..., H, W), got shape {x.shape}")
    (py, px), (oy, ox) = _pair_arg(pitch, "pitch"), _pair_arg(offset, "offset")
    if py < 2 or px < 2:
        raise ValueError(f"pitch must be >= 2 pixels (a window of 1 pixel has no inside), got {(py, px)}")
    h, w = x.shape[-2:]
    rows, cols = _border(h, py, oy), _border(w, px, ox)
    if not rows.any() and not cols.any():
        raise ValueError(
            f"no window border falls inside the {h} x {w} mosaic with pitch {(py, px)} and offset {(oy, ox)}; "
            "check the pitch (in pixels of this grid) and the offset"
        )
    dy = np.abs(np.diff(x, axis=-2))  # (..., H-1, W): pair (i-1, i) along rows
    dx = np.abs(np.diff(x, axis=-1))  # (..., H, W-1)
    across_y = np.broadcast_to(rows[:, None], dy.shape)
    across_x = np.broadcast_to(cols[None, :], dx.shape)
    inside_y, inside_x = ~across_y, ~across_x
    if inside_every is not None:
        if inside_every < 2:
            raise ValueError(f"inside_every must be >= 2 pixels, got {inside_every}")
        inside_y = inside_y & np.broadcast_to(_border(h, inside_every, oy)[:, None], dy.shape)
        inside_x = inside_x & np.broadcast_to(_border(w, inside_every, ox)[None, :], dx.shape)

    def mean(values: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
        total = sum(np.where(m & np.isfinite(v), v, 0.0).sum(axis=(-2, -1)) for v, m in zip(values, masks, strict=True))
        count = sum((m & np.isfinite(v)).sum(axis=(-2, -1)) for v, m in zip(values, masks, strict=True))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(np.where(count > 0, total / np.maximum(count, 1), np.nan))

    inside_count = int(inside_y.sum() + inside_x.sum())
    if inside_count == 0:
        raise ValueError("no neighbour pair lies inside a window; the mosaic is smaller than one window")
    return SeamGradients(
        across=mean([dy, dx], [across_y, across_x]),
        inside=mean([dy, dx], [inside_y, inside_x]),
    )


def seam_ratio(
    mosaic: np.ndarray, pitch: int | tuple[int, int], offset: int | tuple[int, int] = 0,
    inside_every: int | None = None,
) -> np.ndarray:
    """Seam ratio ``across / inside`` of :func:`seam_gradients`: 1.0 = invisible seams, (...) float64.

    A flat mosaic (no difference anywhere) gives NaN; seams on an otherwise flat image give inf.
    """
    g = seam_gradients(mosaic, pitch, offset, inside_every)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(g.across / g.inside)


__all__ = ["SeamGradients", "seam_gradients", "seam_ratio"]
