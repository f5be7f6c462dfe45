"""COG structure, the output layout and the STAC catalog (pystac round trip, extension fields)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from pystac.extensions.eo import EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension
from pystac.extensions.sar import SarExtension
from pystac.extensions.sat import SatExtension
from shapely.geometry import box, shape

from sampleworld.geometry import utm_to_lonlat
from sampleworld.stac_items import COLLECTIONS, EXT
from tests.world.world_fixtures import World, small_world


@pytest.fixture(scope="module")
def world() -> World:
    return small_world()


def _all_items(world: World) -> list[dict]:
    return [i for c in COLLECTIONS for i in world.items(c)]


def test_output_layout(world):
    out = world.out_dir
    for coll in COLLECTIONS:
        assert (out / "stac" / "collections" / f"{coll}.json").is_file()
        lines = (out / "stac" / "items" / f"{coll}.ndjson").read_text().splitlines()
        ids = [json.loads(line)["id"] for line in lines]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for line in lines:
            item = json.loads(line)
            assert item["collection"] == coll
            for key, asset in item["assets"].items():
                path = Path(asset["href"].removeprefix("file://"))
                assert path == out / "assets" / coll / item["id"] / f"{key}.tif"
                assert path.is_file() and path.stat().st_size == asset["file:size"]
    m = world.manifest
    assert m.n_items == sum(m.item_counts.values()) == len(_all_items(world))
    assert m.n_assets == sum(m.asset_counts.values()) == len(list((out / "assets").rglob("*.tif")))
    assert m.bytes_assets == sum(p.stat().st_size for p in (out / "assets").rglob("*.tif"))
    assert m.main_area["name"] == "main" and m.main_area["epsg"] in m.epsg_codes
    assert set(m.main_area["cells"]) <= set(m.cells)


@pytest.mark.parametrize("collection, key", [
    ("sentinel-2-l2a", "B04"), ("sentinel-2-l2a", "SCL"), ("sentinel-2-l1c", "cloud_mask"),
    ("sentinel-1-rtc", "vv"), ("cop-dem-glo-30", "data"), ("io-lulc-annual-v02", "data"),
])
def test_assets_are_real_cogs(world, collection, key):
    item = next(i for i in world.synthetic(collection) if i["properties"]["copgen:scene"] == "main")
    with rasterio.open(item["assets"][key]["href"]) as src:
        structure = src.tags(ns="IMAGE_STRUCTURE")
        assert structure["LAYOUT"] == "COG"
        assert structure["COMPRESSION"] in ("ZSTD", "DEFLATE")
        assert src.profile["tiled"] and src.block_shapes[0] in ((256, 256), (512, 512))
        assert src.nodata is not None
        if max(src.shape) > 256:
            assert src.overviews(1), "rasters larger than a block carry internal overviews"
        assert src.descriptions[0] == key


def test_asset_projection_fields_match_the_files(world):
    for item in _all_items(world):
        for key, asset in item["assets"].items():
            with rasterio.open(asset["href"]) as src:
                assert asset["proj:epsg"] == src.crs.to_epsg(), (item["id"], key)
                assert asset["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
                assert asset["proj:shape"] == [src.height, src.width]
                assert asset["proj:transform"] == pytest.approx(list(src.transform)[:6])
                assert asset["proj:bbox"] == pytest.approx(list(src.bounds))
                band = asset["raster:bands"][0]
                assert band["data_type"] == src.dtypes[0]
                assert band["nodata"] == src.nodata or (np.isnan(band["nodata"]) and np.isnan(src.nodata))
                assert band["spatial_resolution"] > 0


def test_item_geometry_is_the_reprojected_footprint(world):
    for item in _all_items(world):
        geom = shape(item["geometry"])
        assert geom.is_valid and geom.geom_type == "Polygon"
        assert item["bbox"] == pytest.approx(list(geom.bounds), abs=1e-8)
        asset = next(iter(item["assets"].values()))
        left, bottom, right, top = asset["proj:bbox"]
        epsg = asset["proj:epsg"]
        if epsg == 4326:
            footprint = box(left, bottom, right, top)
        else:
            lon, lat = utm_to_lonlat(epsg, np.array([left, right, right, left]), np.array([bottom, bottom, top, top]))
            footprint = shapely.Polygon(zip(lon, lat, strict=True))
        overlap = geom.intersection(footprint).area / geom.area
        assert overlap > 0.99, item["id"]


def test_items_round_trip_through_pystac(world):
    for item_dict in _all_items(world):
        exact = pystac.Item.from_dict(item_dict, migrate=False)
        assert exact.to_dict(include_self_link=False) == item_dict
        item = pystac.Item.from_dict(item_dict)
        again = pystac.Item.from_dict(item.to_dict(include_self_link=False))
        assert again.to_dict(include_self_link=False) == item.to_dict(include_self_link=False)
        assert item.collection_id == item_dict["collection"]
        for key, asset in item.assets.items():
            proj = ProjectionExtension.ext(asset)
            assert proj.code == item_dict["assets"][key]["proj:code"]
            assert proj.shape == item_dict["assets"][key]["proj:shape"]
            assert RasterExtension.ext(asset).bands[0].data_type is not None


def test_raw_items_keep_proj_epsg_for_stackstac(world):
    for item in _all_items(world):
        assert item["properties"]["proj:epsg"] == int(item["properties"]["proj:code"].split(":")[1])
        for asset in item["assets"].values():
            assert asset["proj:epsg"] == int(asset["proj:code"].split(":")[1])
        assert EXT["proj"] in item["stac_extensions"]


def test_extension_fields_read_back_through_pystac(world):
    s2 = pystac.Item.from_dict(world.synthetic("sentinel-2-l2a")[0])
    eo_item = EOExtension.ext(s2)
    assert 0.0 <= eo_item.cloud_cover <= 100.0
    assert EOExtension.ext(s2.assets["B8A"]).bands[0].name == "B8A"
    assert SatExtension.ext(s2).orbit_state.value == "descending"
    assert s2.properties["s2:processing_baseline"] in ("03.01", "04.00")
    assert set(s2.assets) == {"B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "SCL"}
    l1c = pystac.Item.from_dict(world.synthetic("sentinel-2-l1c")[0])
    assert "B10" in l1c.assets and "cloud_mask" in l1c.assets and len(l1c.assets) == 14
    s1 = pystac.Item.from_dict(world.synthetic("sentinel-1-rtc")[0])
    assert SarExtension.ext(s1).polarizations[0].value == "VV"
    assert SatExtension.ext(s1).absolute_orbit > 0
    assert (SatExtension.ext(s1).absolute_orbit - 73) % 175 + 1 == SatExtension.ext(s1).relative_orbit
    dem = pystac.Item.from_dict(world.synthetic("cop-dem-glo-30")[0])
    assert ProjectionExtension.ext(dem.assets["data"]).code == "EPSG:4326"
    lulc = world.synthetic("io-lulc-annual-v02")[0]
    assert lulc["properties"]["datetime"] is None and lulc["properties"]["start_datetime"]


def test_collections_load_and_cover_their_items(world):
    for coll in COLLECTIONS:
        d = json.loads((world.out_dir / "stac" / "collections" / f"{coll}.json").read_text())
        c = pystac.Collection.from_dict(d)
        assert c.id == coll
        (bbox,) = c.extent.spatial.bboxes
        for item in world.items(coll):
            b = item["bbox"]
            assert bbox[0] <= b[0] and bbox[1] <= b[1] and bbox[2] >= b[2] and bbox[3] >= b[3]


def test_dem_is_float_metres_on_the_arcsecond_grid(world):
    for item in world.synthetic("cop-dem-glo-30"):
        asset = item["assets"]["data"]
        t = asset["proj:transform"]
        assert asset["raster:bands"][0]["data_type"] == "float32"
        assert -t[4] == pytest.approx(1 / 3600)
        lat = item["bbox"][1]
        assert t[0] == pytest.approx((2.0 if lat >= 60 else 1.0) / 3600)
        # pixel centres on whole multiples of the spacing, like Copernicus DEM tiles
        assert (t[2] / t[0] + 0.5) == pytest.approx(round(t[2] / t[0] + 0.5), abs=1e-6)


_PREFIXES = {"eo": "eo", "proj": "proj", "raster": "raster", "sat": "sat", "sar": "sar", "file": "file",
             "view": "view"}


def _used_prefixes(obj: object) -> set[str]:
    found: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if ":" in k and k.split(":")[0] in _PREFIXES:
                found.add(k.split(":")[0])
            found |= _used_prefixes(v)
    elif isinstance(obj, list):
        for v in obj:
            found |= _used_prefixes(v)
    return found


def test_items_are_structurally_valid_stac(world):
    for item in _all_items(world):
        assert item["type"] == "Feature" and item["stac_version"] == "1.1.0"
        assert isinstance(item["id"], str) and item["id"]
        ring = item["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        west, south, east, north = item["bbox"]
        assert -180 <= west < east <= 180 and -90 <= south < north <= 90
        props = item["properties"]
        if props["datetime"] is None:
            assert props["start_datetime"] < props["end_datetime"]
        else:
            assert props["datetime"].endswith("Z") and "T" in props["datetime"]
        assert all({"rel", "href"} <= set(link) for link in item["links"])
        assert item["assets"] and all(a["href"].startswith("file:///") for a in item["assets"].values())
        declared = {EXT[p] for p in _used_prefixes({"p": props, "a": item["assets"]})}
        assert declared <= set(item["stac_extensions"]), item["id"]
