"""Reading a band onto a target grid: exact windows, boundless edges, warps, and broken sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from transforms.geobox import GeoBox
from transforms.raster_read import ReadError, Resampling, read_band


def _write_cog(path: Path, data: np.ndarray, epsg: int, x0: float, y0: float, res: float, nodata: float) -> None:
    with rasterio.open(path, "w", driver="COG", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=f"EPSG:{epsg}", transform=from_origin(x0, y0, res, res),
                       nodata=nodata, compress="DEFLATE", blocksize=256) as dst:
        dst.write(data, 1)


@pytest.fixture()
def cog(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = rng.integers(1, 10000, size=(600, 600), dtype=np.uint16)
    data[10:20, 10:20] = 0
    path = tmp_path / "B04.tif"
    _write_cog(path, data, 32632, 500_000.0, 5_100_000.0, 10.0, 0)
    return path


def test_exact_window_equals_numpy_slice(cog: Path) -> None:
    gb = GeoBox.from_origin(32632, 500_000.0 + 50 * 10, 5_100_000.0 - 30 * 10, 10.0, 192, 192)
    out = read_band(f"file://{cog}", gb, scale=1e-4)
    with rasterio.open(cog) as src:
        ref = src.read(1)[30:222, 50:242].astype(np.float64)
    assert out.exact
    np.testing.assert_allclose(out.values[out.valid], (ref * 1e-4)[ref != 0], rtol=1e-6)
    assert (~out.valid).sum() == (ref == 0).sum()


def test_window_hanging_off_the_edge_is_invalid_there(cog: Path) -> None:
    gb = GeoBox.from_origin(32632, 500_000.0 - 100.0, 5_100_000.0, 10.0, 192, 192)
    out = read_band(str(cog), gb)
    assert out.exact
    assert not out.valid[:, :10].any()
    assert out.valid[50:, 10:].all()
    assert np.isnan(out.values[:, :10]).all()


def test_coarsening_averages(cog: Path) -> None:
    gb = GeoBox.from_origin(32632, 500_000.0 + 600, 5_100_000.0 - 600, 60.0, 32, 32)
    out = read_band(str(cog), gb, resampling=Resampling.AVERAGE)
    with rasterio.open(cog) as src:
        ref = src.read(1)[60:252, 60:252].astype(np.float64).reshape(32, 6, 32, 6).mean(axis=(1, 3))
    assert not out.exact
    np.testing.assert_allclose(out.values, ref, rtol=1e-5)


def test_warp_from_geographic(tmp_path: Path) -> None:
    # a DEM-like plane in EPSG:4326 at 1 arc-second; the warped values follow the same plane
    n = 400
    lon0, lat0, res = 9.0, 46.01, 1 / 3600
    lons = lon0 + res * (np.arange(n) + 0.5)
    dem = np.tile((lons - lon0) * 1e5, (n, 1)).astype(np.float32)
    path = tmp_path / "dem.tif"
    _write_cog(path, dem, 4326, lon0, lat0, res, -9999.0)
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 32632, always_xy=True).transform(lon0 + 0.05, lat0 - 0.05)
    x0, y0 = round(x / 60) * 60, round(y / 60) * 60
    gb = GeoBox.from_origin(32632, x0, y0, 30.0, 64, 64)
    out = read_band(str(path), gb, resampling=Resampling.BILINEAR)
    assert not out.exact and out.valid.all()
    back = Transformer.from_crs(32632, 4326, always_xy=True)
    px_lon, _ = back.transform(gb.x_coords[None, :].repeat(64, 0), gb.y_coords[:, None].repeat(64, 1))
    np.testing.assert_allclose(out.values, (px_lon - lon0) * 1e5, atol=3.0)  # within one source pixel step


def test_missing_and_corrupt_files_raise_read_error(tmp_path: Path) -> None:
    gb = GeoBox.from_origin(32632, 0, 0, 10.0, 8, 8)
    with pytest.raises(ReadError, match="missing.tif"):
        read_band(str(tmp_path / "missing.tif"), gb)
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 100)
    with pytest.raises(ReadError, match="corrupt.tif"):
        read_band(str(bad), gb)
