"""Quicklook rendering: arrays in physical units -> uint8 RGB images a person can look at.

Pure numpy; PNG writing uses Pillow. Every renderer takes one window or mosaic ``(C, H, W)`` or
``(H, W)`` array and returns ``(H, W, 3)`` uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from copgen_core.normalize import LULC_CLASS_NAMES, LULC_CODES, LULC_PALETTE

LULC_COLOURS: dict[int, tuple[int, int, int]] = {
    code: tuple(int(v) for v in LULC_PALETTE[i]) for i, code in enumerate(LULC_CODES)  # type: ignore[misc]
}
"""Raw Esri/IO class code -> RGB (COP-GEN's palette)."""
LULC_NAMES: dict[int, str] = dict(zip(LULC_CODES, LULC_CLASS_NAMES, strict=True))
CLOUD_COLOURS: dict[int, tuple[int, int, int]] = {0: (40, 40, 40), 1: (255, 255, 255), 2: (160, 200, 235),
                                                  3: (110, 70, 150)}
"""Cloud-mask code -> RGB: clear dark grey, thick white, thin light blue, shadow purple (readable at a glance;
the official thumbnails reuse the first four land-cover colours, ``copgen_core.normalize.CLOUD_PALETTE``)."""


def _stretch(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    y = (np.nan_to_num(x, nan=lo) - lo) / max(hi - lo, 1e-12)
    return (np.clip(y, 0, 1) * 255).astype(np.uint8)


def rgb_composite(bands: np.ndarray, *, max_dn: float = 3000.0, offset_dn: float = 0.0,
                  gamma: float = 1 / 1.4) -> np.ndarray:
    """True-colour composite from (3, H, W) reflectance DN in R, G, B order.

    ``offset_dn`` is subtracted first (1000 for S2 L2A on processing baseline >= 04.00). NaN renders black.
    """
    x = (np.asarray(bands, dtype=np.float64)[:3] - offset_dn) / max_dn
    x = np.clip(np.nan_to_num(x, nan=0.0), 0, 1) ** gamma
    return (np.moveaxis(x, 0, -1) * 255).astype(np.uint8)


def categorical(codes: np.ndarray, palette: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """(H, W) class codes -> RGB with ``palette``; unknown codes render magenta so they stand out."""
    codes = np.asarray(codes)
    out = np.empty(codes.shape + (3,), dtype=np.uint8)
    out[...] = (255, 0, 255)
    for code, rgb in palette.items():
        out[codes == code] = rgb
    return out


def hillshade(dem_m: np.ndarray, *, gsd_m: float = 30.0, azimuth_deg: float = 315.0,
              altitude_deg: float = 45.0) -> np.ndarray:
    """Shaded relief of a (H, W) DEM in metres, tinted by elevation."""
    raw = np.asarray(dem_m, dtype=np.float64)
    nodata = ~np.isfinite(raw)
    z = np.where(nodata, np.nanmean(raw) if (~nodata).any() else 0.0, raw)
    d_row, d_col = np.gradient(z, gsd_m)
    nx, ny, nz = -d_col, d_row, np.ones_like(z)  # surface normal (east, north, up); rows run southward
    norm = np.sqrt(nx**2 + ny**2 + nz**2)
    az, alt = np.radians(azimuth_deg), np.radians(altitude_deg)
    sun = (np.sin(az) * np.cos(alt), np.cos(az) * np.cos(alt), np.sin(alt))
    shade = np.clip((nx * sun[0] + ny * sun[1] + nz * sun[2]) / norm, 0, 1)
    lo, hi = np.percentile(z[~nodata], [2, 98]) if (~nodata).any() else (0.0, 1.0)
    t = np.clip((z - lo) / max(hi - lo, 1e-6), 0, 1)
    tint = np.stack([0.35 + 0.55 * t, 0.55 + 0.25 * t, 0.30 + 0.45 * t], axis=-1)
    rgb = (np.clip(tint * (0.35 + 0.65 * shade[..., None]), 0, 1) * 255).astype(np.uint8)
    rgb[nodata] = 0
    return rgb


def s1_false_colour(vv_vh_linear: np.ndarray) -> np.ndarray:
    """(2, H, W) VV, VH linear gamma0 -> RGB (VV dB, VH dB, VV/VH ratio), a common SAR rendering."""
    vv = 10 * np.log10(np.clip(np.asarray(vv_vh_linear[0], dtype=np.float64), 1e-6, None))
    vh = 10 * np.log10(np.clip(np.asarray(vv_vh_linear[1], dtype=np.float64), 1e-6, None))
    return np.stack([_stretch(vv, -25, 0), _stretch(vh, -30, -5), _stretch(vv - vh, 0, 15)], axis=-1)


def colormap(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """(H, W) scalar field -> RGB with a perceptually ordered ramp (dark blue -> yellow), for mean/spread maps."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    lo = float(np.percentile(finite, 2)) if lo is None and finite.size else (lo or 0.0)
    hi = float(np.percentile(finite, 98)) if hi is None and finite.size else (hi or 1.0)
    t = np.clip((np.nan_to_num(v, nan=lo) - lo) / max(hi - lo, 1e-12), 0, 1)
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], float)
    pos = t * (len(stops) - 1)
    i = np.clip(pos.astype(int), 0, len(stops) - 2)
    f = (pos - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def grid(images: Sequence[np.ndarray], *, cols: int | None = None, pad: int = 4) -> np.ndarray:
    """Tile equally sized (H, W, 3) images into one sheet, row-major, with white padding."""
    if not images:
        raise ValueError("grid() needs at least one image")
    h, w = images[0].shape[:2]
    n = len(images)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    sheet = np.full((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = im[:h, :w]
    return sheet


def upscale(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of (H, W, 3) to (size, size, 3), so coarse grids line up in sheets."""
    h, w = image.shape[:2]
    rows = (np.arange(size) * h // size).clip(0, h - 1)
    cols = (np.arange(size) * w // size).clip(0, w - 1)
    return image[rows][:, cols]


def save_png(image: np.ndarray, path: Path) -> Path:
    """Write (H, W, 3) uint8 to ``path`` (parents created). Returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, optimize=True)
    return path
