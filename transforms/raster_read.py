"""Read one raster band onto a target GeoBox: exact windowed reads when the grids nest, warping otherwise.

This is the pixel-level primitive of the read step. It knows nothing of STAC or modalities: give it an href,
a band index and the target grid, and it returns float32 values and a validity mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from transforms.geobox import GeoBox


class Resampling(StrEnum):
    """How source pixels become target pixels when the grids differ."""

    NEAREST = "nearest"  # categorical data (class codes, masks)
    BILINEAR = "bilinear"  # smooth continuous fields at similar resolution (DEM)
    AVERAGE = "average"  # coarsening continuous data (10 m -> 20/60 m)
    MODE = "mode"  # coarsening categorical data


class ReadError(RuntimeError):
    """A source could not be read (missing file, 404, corrupt COG). The message names the href."""


@dataclass(frozen=True)
class BandRead:
    """Values of one band on the target grid.

    ``values`` is float32 (H, W) in source units after ``scale``/``offset``; ``valid`` is bool (H, W), False
    where the source had nodata or did not cover the target. ``exact`` says whether the read was a plain
    windowed read (grids nest) rather than a warp.
    """

    values: np.ndarray
    valid: np.ndarray
    exact: bool


def _integer_offset(src_transform, geobox: GeoBox) -> tuple[int, int] | None:  # noqa: ANN001
    """(col_off, row_off) if the target grid is the source grid shifted by whole pixels, else None."""
    a, b, c, d, e, f = geobox.transform
    if b != 0 or d != 0 or src_transform.b != 0 or src_transform.d != 0:
        return None
    if not (np.isclose(src_transform.a, a, rtol=0, atol=1e-9) and np.isclose(src_transform.e, e, rtol=0, atol=1e-9)):
        return None
    col = (c - src_transform.c) / a
    row = (f - src_transform.f) / e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(col)), int(round(row))


def read_band(
    href: str,
    geobox: GeoBox,
    *,
    band: int = 1,
    resampling: Resampling = Resampling.NEAREST,
    nodata: float | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
) -> BandRead:
    """Read band ``band`` (1-based) of ``href`` onto ``geobox``.

    Parameters
    ----------
    href:
        Local path, ``file://`` URL or ``http(s)://`` URL of a GeoTIFF/COG.
    geobox:
        Target grid. When it has the source's CRS and pixel size and whole-pixel offsets, the read is an
        exact windowed read (boundless; pixels outside the source are invalid). Otherwise the source is
        warped with ``resampling``.
    nodata:
        Source nodata value; defaults to the file's own nodata tag.
    scale, offset:
        Applied to valid pixels: ``physical = raw * scale + offset``.

    Raises
    ------
    ReadError
        If the file is missing, unreadable or corrupt; the message names the href and the cause.
    """
    import rasterio
    from rasterio.enums import Resampling as RioResampling
    from rasterio.warp import reproject
    from rasterio.windows import Window as RioWindow

    path = href[7:] if href.startswith("file://") else href
    try:
        with rasterio.open(path) as src:
            if band < 1 or band > src.count:
                raise ReadError(f"{href}: band {band} requested but the file has {src.count} band(s)")
            src_nodata = src.nodata if nodata is None else nodata
            src_epsg = src.crs.to_epsg() if src.crs is not None else None
            h, w = geobox.shape
            offsets = _integer_offset(src.transform, geobox) if src_epsg == geobox.epsg else None
            if offsets is not None:
                col, row = offsets
                raw = src.read(band, window=RioWindow(col, row, w, h), boundless=True, masked=True,
                               fill_value=src_nodata if src_nodata is not None else 0)
                data = np.asarray(raw.data, dtype=np.float64)
                valid = ~np.ma.getmaskarray(raw)
                # boundless reads mark out-of-source pixels via the mask only when nodata is set
                rows = np.arange(row, row + h)
                cols = np.arange(col, col + w)
                inside = ((rows >= 0) & (rows < src.height))[:, None] & ((cols >= 0) & (cols < src.width))[None, :]
                valid &= inside
                exact = True
            else:
                fill = np.nan
                dest = np.full((h, w), fill, dtype=np.float64)
                reproject(
                    source=rasterio.band(src, band),
                    destination=dest,
                    src_nodata=src_nodata,
                    dst_transform=geobox.rasterio_transform(),
                    dst_crs=f"EPSG:{geobox.epsg}",
                    dst_nodata=fill,
                    resampling=getattr(RioResampling, resampling.value),
                )
                valid = np.isfinite(dest)
                data = np.where(valid, dest, 0.0)
                exact = False
    except ReadError:
        raise
    except Exception as exc:  # rasterio raises several unrelated types for missing/corrupt files
        raise ReadError(f"cannot read {href}: {type(exc).__name__}: {exc}") from exc
    if src_nodata is not None and exact and not np.isnan(src_nodata):
        valid &= data != src_nodata
    valid &= np.isfinite(data)
    values = np.where(valid, data * scale + offset, np.nan).astype(np.float32)
    return BandRead(values=values, valid=valid, exact=exact)
