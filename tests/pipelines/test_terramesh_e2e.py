"""The two real TerraMesh locations, served through the STAC API, come out of `copgen preprocess` equal to
the source GeoTIFFs on every window pixel they cover (S1 dB -> linear and the 1..9 land-cover coding handled)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from tests.paths import REAL
from tests.pipelines.helpers import run_cli
from transforms.cube import load_spec, read_window

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (REAL / "terramesh").is_dir(), reason="../shared/data/real/terramesh absent")]

LOCATIONS = ("637U_59R_1_3", "38D_378R_2_3")
S2_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
TERRAMESH_TO_ESRI = {1: 1, 2: 2, 3: 4, 4: 5, 5: 7, 6: 8, 7: 9, 8: 10, 9: 11}


@pytest.fixture(scope="module")
def terramesh_api(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from sampleworld import generate_world

    world = tmp_path_factory.mktemp("tm-world")
    generate_world(world, preset="small", terramesh_dir=REAL / "terramesh")
    return services.stac_api(load=world)


def _bbox(path: Path) -> str:
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as src:
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    return f"{w},{s},{e},{n}"


def _source_pixels(path: Path, band: int, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source values at the pixels containing (xs, ys), and whether each point falls inside the source."""
    with rasterio.open(path) as src:
        data = src.read(band).astype(np.float64)
        rows, cols = rasterio.transform.rowcol(src.transform, xs.ravel(), ys.ravel(), op=np.floor)
    rows = np.asarray(rows, dtype=np.int64).reshape(xs.shape)
    cols = np.asarray(cols, dtype=np.int64).reshape(xs.shape)
    inside = (rows >= 0) & (rows < data.shape[0]) & (cols >= 0) & (cols < data.shape[1])
    values = np.full(xs.shape, np.nan)
    values[inside] = data[rows[inside], cols[inside]]
    return values, inside


@pytest.mark.parametrize("location", LOCATIONS)
def test_terramesh_location_round_trips_through_the_catalog(location: str, terramesh_api: Any, tmp_path: Path) -> None:
    src = {m: REAL / "terramesh" / m / f"{location}.tif" for m in ("S2L2A", "S1RTC", "LULC")}
    out = tmp_path / "tm.zarr"
    proc = run_cli("preprocess", "--stac-url", terramesh_api.url, "--bbox", _bbox(src["S2L2A"]),
                   "--start", "2021-07-01", "--modalities", "s2l2a_10m,s1,lulc", "--output", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    spec = load_spec(str(out))
    with rasterio.open(src["S2L2A"]) as ds:
        assert {w.epsg for w in spec.windows} == {ds.crs.to_epsg()}
    covered = 0
    for win in spec.windows:
        gb = win.geobox(10.0)
        xs, ys = np.meshgrid(gb.x_coords, gb.y_coords)
        s2 = read_window(str(out), win.key, "S2L2A_B02_B03_B04_B08", 0)
        for c, band in enumerate(("B04", "B03", "B02", "B08")):
            expected, inside = _source_pixels(src["S2L2A"], S2_ORDER.index(band) + 1, xs, ys)
            np.testing.assert_array_equal(s2[c][inside], expected[inside].astype(np.float32))
            assert np.isnan(s2[c][~inside]).all()
        s1 = read_window(str(out), win.key, "S1RTC_vh_vv", 0)
        for c in (0, 1):  # vv, vh; the source holds dB
            expected, inside = _source_pixels(src["S1RTC"], c + 1, xs, ys)
            np.testing.assert_allclose(10 * np.log10(s1[c][inside]), expected[inside], atol=1e-4)
        lulc = read_window(str(out), win.key, "LULC_LULC", 0)[0]
        expected, inside = _source_pixels(src["LULC"], 1, xs, ys)
        esri = np.vectorize(lambda v: TERRAMESH_TO_ESRI.get(int(v), 255))(expected[inside])
        np.testing.assert_array_equal(lulc[inside], esri)
        covered += int(inside.sum())
    assert covered >= 224 * 224 * 0.9, "the windows must cover (almost) the whole patch"
