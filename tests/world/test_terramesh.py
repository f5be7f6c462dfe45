"""The real TerraMesh patches are registered beside the synthetic world, quirks and all."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from sampleworld.terramesh import MODALITIES, TERRAMESH_LULC_TO_ESRI, find_locations
from tests.world.world_fixtures import TERRAMESH, World, read_asset, small_world

pytestmark = pytest.mark.skipif(not TERRAMESH.is_dir(),
                                reason=f"real TerraMesh data not found at {TERRAMESH} (../shared is absent)")


@pytest.fixture(scope="module")
def world() -> World:
    return small_world()


def _terramesh_items(world: World, collection: str) -> list[dict]:
    return [i for i in world.items(collection) if i["properties"]["copgen:source"] == "terramesh"]


def test_every_location_and_modality_is_an_item(world):
    locations = [loc.name for loc in find_locations(TERRAMESH)]
    assert set(locations) == {"637U_59R_1_3", "38D_378R_2_3"}
    assert world.manifest.terramesh["locations"] == locations
    for folder, coll in MODALITIES.items():
        ids = {i["id"] for i in _terramesh_items(world, coll)}
        assert ids == {f"terramesh-{loc}-{folder}" for loc in locations}


def test_crs_and_transform_are_those_of_the_source_files(world):
    for folder, coll in MODALITIES.items():
        for item in _terramesh_items(world, coll):
            loc = item["properties"]["copgen:location"]
            with rasterio.open(TERRAMESH / folder / f"{loc}.tif") as src:
                source = src.read()
                epsg, transform = src.crs.to_epsg(), list(src.transform)[:6]
            assert item["properties"]["proj:epsg"] == epsg
            for i, asset in enumerate(item["assets"].values()):
                assert asset["proj:epsg"] == epsg and asset["proj:code"] == f"EPSG:{epsg}"
                assert asset["proj:transform"] == transform
                with rasterio.open(asset["href"]) as cog:
                    assert cog.crs.to_epsg() == epsg and list(cog.transform)[:6] == transform
                    assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
                np.testing.assert_allclose(read_asset(asset), source[i], rtol=1e-6)


def test_quirks_are_kept_and_stated(world):
    s1 = _terramesh_items(world, "sentinel-1-rtc")
    for item in s1:
        vv = read_asset(item["assets"]["vv"])
        assert item["properties"]["copgen:s1_units"] == "dB"
        assert item["assets"]["vv"]["raster:bands"][0]["unit"] == "dB"
        assert np.median(vv) < 0, "values are in dB, not linear power"
    for item in _terramesh_items(world, "sentinel-2-l2a"):
        assert item["assets"]["B01"]["proj:transform"][0] == 10.0, "60 m bands come resampled to 10 m"
        assert item["assets"]["B01"]["copgen:native_gsd"] == 60.0
        assert "B10" not in item["assets"]
    for item in _terramesh_items(world, "io-lulc-annual-v02"):
        codes = set(np.unique(read_asset(item["assets"]["data"])).tolist())
        assert codes <= set(TERRAMESH_LULC_TO_ESRI) and item["properties"]["copgen:lulc_codes"] == "terramesh-1..9"


def test_farmland_patch_has_vegetation_ndvi(world):
    (item,) = [i for i in _terramesh_items(world, "sentinel-2-l2a")
               if i["properties"]["copgen:location"] == "637U_59R_1_3"]
    red = read_asset(item["assets"]["B04"]).astype(float)
    nir = read_asset(item["assets"]["B08"]).astype(float)
    assert np.mean((nir - red) / (nir + red)) > 0.4
    assert item["properties"]["copgen:cells"] == ["637U_59R"]
    lon = (item["bbox"][0] + item["bbox"][2]) / 2
    lat = (item["bbox"][1] + item["bbox"][3]) / 2
    assert (lat, lon) == pytest.approx((57.227, 9.845), abs=0.02)
