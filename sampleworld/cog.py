"""Write single-band Cloud Optimized GeoTIFFs (GDAL's COG driver through rasterio).

Every raster of the world goes through :func:`write_cog`: tiled (``blocksize``), compressed (ZSTD or
DEFLATE with the predictor that suits the dtype: horizontal differencing for integers, floating-point
for floats), internal overviews down to one block (``average`` for measurements, ``nearest`` for
class codes), nodata set. Output bytes depend only on the array and these options.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from sampleworld.config import CogConfig


def write_cog(
    path: Path,
    data: np.ndarray,
    *,
    crs: CRS | int,
    transform: Affine,
    nodata: float | int | None,
    categorical: bool,
    cog: CogConfig,
    description: str | None = None,
) -> int:
    """Write a 2-D array as a COG and return the file size in bytes.

    Parameters
    ----------
    path:
        Output ``.tif`` (parent folders are created).
    data:
        (rows, cols) array; its dtype is the file's dtype.
    crs:
        A rasterio CRS or an EPSG code.
    transform:
        Affine pixel -> CRS transform (north-up).
    nodata:
        Nodata value written to the file (``None`` for none).
    categorical:
        Class codes: overviews by ``nearest`` (else ``average``).
    cog:
        Block size and compression.
    description:
        Band description (e.g. ``"B04"``).

    Raises
    ------
    ValueError
        If ``data`` is not 2-D.
    """
    if data.ndim != 2:
        raise ValueError(f"write_cog expects a 2-D array, got shape {data.shape}; write one band per file")
    path.parent.mkdir(parents=True, exist_ok=True)
    predictor = "FLOATING_POINT" if np.issubdtype(data.dtype, np.floating) else "STANDARD"
    if categorical:
        predictor = "NO"
    profile = {
        "driver": "COG",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": CRS.from_epsg(crs) if isinstance(crs, int) else crs,
        "transform": transform,
        "nodata": nodata,
        "blocksize": cog.blocksize,
        "compress": cog.compress,
        "level": cog.level,
        "predictor": predictor,
        "overviews": "AUTO",
        "overview_resampling": "nearest" if categorical else "average",
        "num_threads": 1,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        if description:
            dst.set_band_description(1, description)
    return path.stat().st_size
