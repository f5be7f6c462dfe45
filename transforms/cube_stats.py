"""Per-pixel ensemble statistics: pure NumPy functions over the member axis.

Continuous modalities get mean, sample standard deviation and the 5/50/95th percentiles; categorical
ones get per-class member frequencies and the modal class. Everything is computed per window from
that window's members only, so the statistics of a window never depend on its neighbours or on the
order windows are written in.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

PERCENTILES: dict[str, float] = {"p05": 5.0, "p50": 50.0, "p95": 95.0}
"""Percentile statistics and their levels in percent."""

NO_CLASS = 255
"""Mode of a pixel where no member holds a known class code (same as the cube's uint8 fill)."""


def nan_percentile(members: np.ndarray, q: float) -> np.ndarray:
    """Percentile over axis 0, ignoring NaN, with NumPy's default ``"linear"`` method.

    Equal to ``np.nanpercentile(members, q, axis=0)`` but vectorised: NumPy falls back to a Python
    loop over pixels as soon as one NaN is present, which is ~1000x slower on a 192 px window.

    Parameters
    ----------
    members:
        (M, ...) float array.
    q:
        Percentile in [0, 100].

    Returns
    -------
    np.ndarray
        (...) float64; NaN where every member is NaN.
    """
    x = np.sort(np.asarray(members, dtype=np.float64), axis=0)  # NaN sorts last
    n = np.sum(~np.isnan(x), axis=0)
    pos = (q / 100.0) * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    frac = pos - lo
    below = np.take_along_axis(x, lo[None], axis=0)[0]
    above = np.take_along_axis(x, hi[None], axis=0)[0]
    out = below + (above - below) * frac
    # NumPy's lerp: for frac >= 0.5 it computes from the upper neighbour, keeping exact endpoints.
    out = np.where(frac >= 0.5, above - (above - below) * (1 - frac), out)
    return np.where(n > 0, out, np.nan)


def continuous_stats(members: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, standard deviation and 5/50/95th percentiles over the members.

    Parameters
    ----------
    members:
        (M, C, H, W) array in physical units; NaN marks no-data and is ignored.

    Returns
    -------
    dict[str, np.ndarray]
        ``mean``, ``std``, ``p05``, ``p50``, ``p95``, each (C, H, W) float32. ``std`` is the sample
        standard deviation (``ddof=1``), so it is NaN for a single member. A pixel whose members are
        all NaN is NaN in every statistic.
    """
    x = np.asarray(members, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"members must be (M, C, H, W), got shape {x.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels and M=1 std are NaN by definition
        out = {"mean": np.nanmean(x, axis=0), "std": np.nanstd(x, axis=0, ddof=1)}
    for name, q in PERCENTILES.items():
        out[name] = nan_percentile(x, q)
    return {k: v.astype(np.float32) for k, v in out.items()}


def class_frequencies(members: np.ndarray, codes: Sequence[int]) -> np.ndarray:
    """Fraction of members holding each class code, per pixel.

    Parameters
    ----------
    members:
        (M, H, W) or (M, 1, H, W) integer class codes.
    codes:
        The K class codes to count, in the order of the output.

    Returns
    -------
    np.ndarray
        (K, H, W) float32 in [0, 1]: ``count(members == codes[k]) / M``. Members holding a code not
        in ``codes`` (e.g. the 255 fill) count towards no class, so a pixel's fractions then sum to
        less than 1.
    """
    x = np.asarray(members)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"categorical members must have one channel, got shape {x.shape}")
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"members must be (M, H, W) or (M, 1, H, W), got shape {x.shape}")
    counts = np.stack([np.count_nonzero(x == c, axis=0) for c in codes])
    return (counts / x.shape[0]).astype(np.float32)


def class_mode(freq: np.ndarray, codes: Sequence[int]) -> np.ndarray:
    """Most frequent class code per pixel.

    Parameters
    ----------
    freq:
        (K, H, W) class frequencies from :func:`class_frequencies`.
    codes:
        The K class codes, in the order of ``freq``.

    Returns
    -------
    np.ndarray
        (H, W) uint8. Ties go to the class listed first in ``codes`` (the smallest code, for the
        ascending code tables of the cube). :data:`NO_CLASS` where no member holds a known code.
    """
    f = np.asarray(freq)
    table = np.asarray(codes, dtype=np.uint8)
    mode = table[np.argmax(f, axis=0)]  # argmax returns the first maximum
    return np.where(f.max(axis=0) > 0, mode, np.uint8(NO_CLASS)).astype(np.uint8)
