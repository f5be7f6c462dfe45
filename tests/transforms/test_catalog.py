"""transforms.catalog: items of Planetary Computer, Earth Search and CDSE become one description.

The real items under ``../shared/data/real/stac`` must all normalise; the expected values below are
read off their JSON. Hand-made items cover the Copernicus Data Space (STAC 1.1) spelling and the
ways an item can be broken.
"""

from __future__ import annotations

import copy
import json
import warnings
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from tests.paths import REAL
from transforms.catalog import CatalogItem, ProductKind, S1Units, ValueMap, describe_item

STAC = REAL / "stac"
pytestmark = pytest.mark.skipif(not STAC.is_dir(), reason=f"real STAC items not found at {STAC} (../shared absent)")


def _items(name: str) -> list[dict[str, Any]]:
    data = json.loads((STAC / name).read_text())
    return data if isinstance(data, list) else data["features"]


def _all_real() -> list[tuple[str, int]]:
    if not STAC.is_dir():
        return []
    return [(p.name, i) for p in sorted(STAC.glob("*.json")) for i in range(len(_items(p.name)))]


def _pystac_item(d: dict[str, Any]) -> Any:
    import pystac

    with warnings.catch_warnings():  # pystac's storage-extension migration warns about S3 hrefs
        warnings.simplefilter("ignore")
        return pystac.Item.from_dict(copy.deepcopy(d))


PC_S2 = "sentinel-2-l2a-pc.json"
ES_S2 = "earth-search-sentinel-2-c1-l2a-item-collection.json"
PC_S1 = "sentinel-1-rtc-pc.json"
PC_DEM = "cop-dem-glo-30-pc.json"
PC_LULC = "io-lulc-annual-v02-pc.json"
PC_LULC_V1 = "io-lulc-pc.json"


# ---------------------------------------------------------------- every real item


@pytest.mark.parametrize(("name", "index"), _all_real())
def test_every_real_item_normalises_the_same_from_dict_and_pystac(name: str, index: int) -> None:
    raw = _items(name)[index]
    from_dict = describe_item(raw)
    assert describe_item(_pystac_item(raw)) == from_dict
    assert from_dict.id == raw["id"] and from_dict.collection == raw["collection"]
    assert from_dict.datetime.tzinfo is not None and from_dict.datetime.utcoffset().total_seconds() == 0
    assert from_dict.epsg == raw["properties"]["proj:epsg"]
    assert from_dict.bands
    for band in from_dict.bands:
        assert band.href == raw["assets"][band.asset_key]["href"]
    hash(from_dict)  # frozen and hashable: usable as a key


# ---------------------------------------------------------------- Planetary Computer


def test_planetary_computer_s2_baseline_05_10_carries_the_offset() -> None:
    raw = _items(PC_S2)[0]
    item = describe_item(raw)
    assert item.id == "S2B_MSIL2A_20240419T095549_R122_T47XML_20240419T123458"
    assert item.kind is ProductKind.S2_L2A
    assert item.epsg == 32647
    assert item.datetime == datetime(2024, 4, 19, 9, 55, 49, 24000, tzinfo=UTC)
    assert item.cloud_cover == pytest.approx(0.219774)
    assert item.s2_processing_baseline == "05.10"
    assert item.s2_dn_offset_applies is True
    assert item.band_names == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11",
                               "B12", "SCL")
    b04 = item.band("B04")
    assert b04.href == raw["assets"]["B04"]["href"]
    assert b04.href.endswith("IMG_DATA/R10m/T47XML_20240419T095549_B04_10m.tif")
    assert b04.shape == (10980, 10980)
    assert b04.transform == (10.0, 0.0, 399960.0, 0.0, -10.0, 9100020.0)
    assert b04.value_map == ValueMap(scale=1e-4, offset=-0.1)  # no raster:bands: the baseline decides
    assert b04.dtype == "uint16" and b04.nodata is None
    assert item.band("B01").gsd_m == 60.0
    scl = item.band("SCL")
    assert scl.value_map.is_identity and scl.dtype == "uint8"
    assert item.bbox == tuple(raw["bbox"])
    assert item.s1_units is None


def test_planetary_computer_s1_rtc_is_linear_power() -> None:
    raw = _items(PC_S1)[0]
    item = describe_item(raw)
    assert item.kind is ProductKind.S1_RTC
    assert item.s1_units is S1Units.LINEAR
    assert item.epsg == 32633
    assert item.band_names == ("vv", "vh")
    vv = item.band("vv")
    assert vv.href == raw["assets"]["vv"]["href"] and vv.href.endswith("iw-vv.rtc.tiff")
    assert vv.nodata == -32768.0 and vv.dtype == "float32"
    assert vv.shape == (12949, 27526)
    assert vv.transform == (10.0, 0.0, 373180.0, 0.0, -10.0, 3424680.0)  # item-level 3x3 cut to 6 terms
    assert vv.value_map.is_identity
    assert item.s2_dn_offset_applies is None and item.cloud_cover is None


def test_planetary_computer_dem_uses_item_level_grid() -> None:
    raw = _items(PC_DEM)[0]
    item = describe_item(raw)
    assert item.kind is ProductKind.DEM
    assert item.epsg == 4326
    dem = item.band("DEM")
    assert dem.asset_key == "data"
    assert dem.href.endswith("Copernicus_DSM_COG_10_S90_00_W180_00_DEM.tif")
    assert dem.shape == (3600, 360)
    assert dem.transform == tuple(raw["properties"]["proj:transform"])
    assert dem.value_map.is_identity and dem.nodata is None


def test_planetary_computer_lulc_dates_from_start_datetime_when_datetime_is_null() -> None:
    annual = describe_item(_items(PC_LULC)[0])
    assert annual.kind is ProductKind.LULC
    assert annual.datetime == datetime(2023, 1, 1, tzinfo=UTC)
    assert annual.epsg == 32660
    assert annual.band("LULC").nodata == 0.0 and annual.band("LULC").dtype == "uint8"
    assert describe_item(_items(PC_LULC_V1)[0]).datetime == datetime(2020, 6, 1, tzinfo=UTC)


# ---------------------------------------------------------------- Earth Search


def test_earth_search_common_names_map_to_band_ids() -> None:
    raw = _items(ES_S2)[0]
    item = describe_item(raw)
    assert item.id == "S2A_T13TDE_20240422T174753_L2A"
    assert item.kind is ProductKind.S2_L2A and item.collection == "sentinel-2-c1-l2a"
    assert item.epsg == 32613
    assert item.cloud_cover == pytest.approx(81.344962)
    keys = {b.band: b.asset_key for b in item.bands}
    assert keys["B04"] == "red" and keys["B8A"] == "nir08" and keys["B05"] == "rededge1"
    assert keys["B01"] == "coastal" and keys["B12"] == "swir22" and keys["SCL"] == "scl"
    assert item.band("B04").href == raw["assets"]["red"]["href"]
    assert item.band("B04").href.endswith("/S2A_T13TDE_20240422T174753_L2A/B04.tif")
    assert item.band("SCL").value_map.is_identity and item.band("SCL").dtype == "uint8"


def test_earth_search_declared_offset_decides_and_matches_planetary_computer() -> None:
    es = describe_item(_items(ES_S2)[0])
    pc = describe_item(_items(PC_S2)[0])
    assert es.band("B04").value_map == ValueMap(scale=0.0001, offset=-0.1)  # from raster:bands
    assert es.band("B04").nodata == 0.0
    assert es.s2_processing_baseline == "05.10" and es.s2_dn_offset_applies is True
    dn = np.array([0, 1000, 1234, 11000], dtype=np.uint16)
    np.testing.assert_allclose(es.band("B04").value_map.apply(dn), pc.band("B04").value_map.apply(dn))
    np.testing.assert_allclose(pc.band("B04").value_map.apply(dn), [-0.1, 0.0, 0.0234, 1.0], atol=1e-12)


def test_declared_zero_offset_means_no_offset_whatever_the_baseline() -> None:
    raw = copy.deepcopy(_items(ES_S2)[0])  # Earth Search v1 removed the offset and declared offset 0
    for asset in raw["assets"].values():
        for band in asset.get("raster:bands", []):
            if "offset" in band:
                band["offset"] = 0
    item = describe_item(raw)
    assert item.s2_dn_offset_applies is False
    assert item.band("B04").value_map == ValueMap(scale=0.0001, offset=0.0)


# ---------------------------------------------------------------- convention variants


def test_baseline_before_04_00_has_no_offset() -> None:
    raw = copy.deepcopy(_items(PC_S2)[0])
    raw["properties"]["s2:processing_baseline"] = "02.14"
    item = describe_item(raw)
    assert item.s2_dn_offset_applies is False
    assert item.band("B04").value_map == ValueMap(scale=1e-4, offset=0.0)


def test_baseline_is_read_from_the_product_name_when_no_field_states_it() -> None:
    raw = copy.deepcopy(_items(PC_S2)[0])
    del raw["properties"]["s2:processing_baseline"]
    raw["properties"]["s2:product_uri"] = "S2B_MSIL2A_20210419T095549_N0300_R122_T47XML_20210419T123458.SAFE"
    item = describe_item(raw)
    assert item.s2_processing_baseline == "03.00" and item.s2_dn_offset_applies is False


def test_proj_code_and_proj_epsg_and_item_or_asset_level_agree() -> None:
    raw = _items(PC_S2)[0]
    reference = describe_item(raw)
    stac11 = copy.deepcopy(raw)
    stac11["properties"]["proj:code"] = f"EPSG:{stac11['properties'].pop('proj:epsg')}"
    assert describe_item(stac11) == reference
    asset_level = copy.deepcopy(stac11)
    code = asset_level["properties"].pop("proj:code")
    for asset in asset_level["assets"].values():
        asset["proj:code"] = code
    assert describe_item(asset_level) == reference
    dem = copy.deepcopy(_items(PC_DEM)[0])  # item-level shape/transform moved onto the asset
    props = dem["properties"]
    dem["assets"]["data"].update({k: props.pop(k) for k in ("proj:epsg", "proj:shape", "proj:transform")})
    assert describe_item(dem) == describe_item(_items(PC_DEM)[0])


def _cdse_asset(band: str, gsd: int, *, scaled: bool = True) -> dict[str, Any]:
    size = 109800 // gsd
    asset: dict[str, Any] = {
        "href": f"s3://eodata/Sentinel-2/MSI/L2A/2024/04/19/S2B_MSIL2A.SAFE/GRANULE/IMG_DATA/R{gsd}m/"
                f"T32VNH_20240419T103629_{band}_{gsd}m.jp2",
        "type": "image/jp2", "roles": ["data", "reflectance"], "gsd": gsd,
        "proj:code": "EPSG:32632", "proj:shape": [size, size],
        "proj:transform": [gsd, 0, 499980, 0, -gsd, 6400020],
        "bands": [{"name": band}], "nodata": 0, "data_type": "uint16",
    }
    if scaled:
        asset.update({"raster:scale": 0.0001, "raster:offset": -0.1})
    return asset


def _cdse_item(*, scaled: bool = True) -> dict[str, Any]:
    assets = {f"{b}_{g}m": _cdse_asset(b, g, scaled=scaled)
              for b, gsds in {"B04": (10, 20, 60), "B05": (20, 60), "B01": (60,), "B8A": (20, 60)}.items()
              for g in gsds}
    scl = _cdse_asset("SCL", 20, scaled=False)
    scl.update({"data_type": "uint8", "bands": [{"name": "SCL"}]})
    assets["SCL_20m"] = scl
    assets["TCI_10m"] = {**_cdse_asset("TCI", 10, scaled=False), "roles": ["visual"]}
    return {
        "type": "Feature", "stac_version": "1.1.0", "id": "S2B_MSIL2A_20240419T103629_N0510_R008_T32VNH_20240419T123456",
        "collection": "sentinel-2-l2a", "bbox": [9.0, 56.8, 10.9, 57.8],
        "geometry": {"type": "Polygon", "coordinates": [[[9.0, 56.8], [10.9, 56.8], [10.9, 57.8], [9.0, 57.8],
                                                         [9.0, 56.8]]]},
        "properties": {"datetime": "2024-04-19T10:36:29.024000Z", "eo:cloud_cover": 12.5,
                       "processing:version": "05.10", "product:type": "S2MSI2A"},
        "assets": assets, "links": [],
    }


def test_copernicus_data_space_keys_pick_the_native_resolution() -> None:
    raw = _cdse_item()
    item = describe_item(raw)
    assert item.kind is ProductKind.S2_L2A
    assert item.epsg == 32632  # proj:code on the assets only
    assert item.band_names == ("B01", "B04", "B05", "B8A", "SCL")
    assert {b.band: b.asset_key for b in item.bands} == {
        "B01": "B01_60m", "B04": "B04_10m", "B05": "B05_20m", "B8A": "B8A_20m", "SCL": "SCL_20m"}
    b04 = item.band("B04")
    assert b04.href == raw["assets"]["B04_10m"]["href"]
    assert b04.shape == (10980, 10980) and b04.gsd_m == 10.0
    assert b04.value_map == ValueMap(scale=0.0001, offset=-0.1)  # raster:scale / raster:offset (STAC 1.1)
    assert b04.nodata == 0.0 and b04.dtype == "uint16"
    assert item.band("SCL").dtype == "uint8" and item.band("SCL").value_map.is_identity
    assert item.s2_processing_baseline == "05.10" and item.s2_dn_offset_applies is True
    assert item.cloud_cover == 12.5


def test_copernicus_data_space_without_scale_falls_back_to_processing_version() -> None:
    item = describe_item(_cdse_item(scaled=False))
    assert item.band("B04").value_map == ValueMap(scale=1e-4, offset=-0.1)
    assert item.s2_dn_offset_applies is True


def test_s1_declared_db_unit_wins() -> None:
    raw = copy.deepcopy(_items(PC_S1)[0])
    raw["collection"] = "my-s1-rtc"
    for key in ("vv", "vh"):
        raw["assets"][key]["raster:bands"][0]["unit"] = "dB"
    assert describe_item(raw, kind=ProductKind.S1_RTC).s1_units is S1Units.DB


def test_pystac_item_hrefs_are_made_absolute() -> None:
    raw = copy.deepcopy(_items(PC_DEM)[0])
    raw["assets"]["data"]["href"] = "./tiles/dem.tif"
    raw["links"] = []
    item = _pystac_item(raw)
    item.set_self_href("/data/world/items/dem.json")
    assert describe_item(item).band("DEM").href == "/data/world/items/tiles/dem.tif"


def test_band_lookup_names_what_exists() -> None:
    item: CatalogItem = describe_item(_items(PC_DEM)[0])
    with pytest.raises(KeyError, match=r"has no band 'B04'.*\['DEM'\]"):
        item.band("B04")


# ---------------------------------------------------------------- broken items fail with the fix


def _broken(name: str, change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(_items(name)[0])
    change(raw)
    return raw


@pytest.mark.parametrize(("name", "change", "fragments"), [
    (PC_S2, lambda d: d.update(collection="my-collection") or d["properties"].pop("s2:product_type"),
     ["my-collection", "kind=ProductKind"]),
    (PC_S2, lambda d: d["properties"].pop("proj:epsg"), ["proj:epsg", "proj:code"]),
    (PC_S2, lambda d: d["properties"].update({"proj:epsg": None, "proj:code": "OGC:CRS84"}), ["OGC:CRS84"]),
    (PC_S2, lambda d: d["properties"].pop("datetime"), ["datetime", "start_datetime"]),
    (PC_S2, lambda d: [d["properties"].pop(k) for k in ("s2:processing_baseline", "s2:product_uri",
                                                         "s2:datatake_id")],
     ["s2:processing_baseline", "raster:bands"]),
    (PC_S2, lambda d: d.update(assets={"visual": d["assets"]["visual"]}), ["visual", "B04"]),
    (PC_S2, lambda d: d["assets"]["B04"].update({"proj:epsg": 32632}), ["32632", "32647"]),
    (PC_S1, lambda d: d.update(collection="sentinel-1-grd-db"), ["linear", "dB", "unit"]),
    (PC_DEM, lambda d: d.pop("bbox"), ["bbox"]),
])
def test_broken_items_name_the_item_the_field_and_the_fix(name: str, change: Any, fragments: list[str]) -> None:
    raw = _broken(name, change)
    kind = ProductKind.S1_RTC if name == PC_S1 else None
    with pytest.raises(ValueError) as err:
        describe_item(raw, kind=kind)
    message = str(err.value)
    assert raw["id"] in message
    for fragment in fragments:
        assert fragment in message


def test_an_explicit_kind_resolves_an_unknown_collection() -> None:
    raw = copy.deepcopy(_items(PC_DEM)[0])
    raw["collection"] = "my-dem"
    assert describe_item(raw, kind=ProductKind.DEM).band("DEM").asset_key == "data"
