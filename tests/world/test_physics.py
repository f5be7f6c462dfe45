"""Physical coherence of the small world: spectra, clouds, offsets, radar, grids."""

from __future__ import annotations

import numpy as np
import pytest

from sampleworld.geometry import utm_to_lonlat
from sampleworld.landcover import BARE, BUILT, CROPS, TREES, WATER
from tests.world.world_fixtures import World, read_asset, small_world


@pytest.fixture(scope="module")
def world() -> World:
    return small_world()


def _lulc(world: World, scene: str) -> np.ndarray:
    (item,) = world.synthetic("io-lulc-annual-v02", scene)
    return read_asset(item["assets"]["data"])


def _l2a(world: World, scene: str, day: str) -> dict:
    (item,) = [i for i in world.synthetic("sentinel-2-l2a", scene) if i["properties"]["datetime"].startswith(day)]
    return item


def _l1c_of(world: World, l2a: dict) -> dict:
    (item,) = [i for i in world.items("sentinel-2-l1c") if i["properties"]["datetime"] == l2a["properties"]["datetime"]
               and i["properties"].get("copgen:scene") == l2a["properties"]["copgen:scene"]]
    return item


def _reflectance(item: dict, band: str) -> np.ndarray:
    dn = read_asset(item["assets"][band]).astype(np.float64)
    valid = dn > 0
    return np.where(valid, (dn - item["properties"]["copgen:dn_offset"]) / 10000.0, np.nan)


def _clear(world: World, l2a: dict) -> np.ndarray:
    mask = read_asset(_l1c_of(world, l2a)["assets"]["cloud_mask"])
    return mask == 0


@pytest.mark.parametrize("scene", ["main", "523U_40R"])
def test_ndvi_of_trees_and_growing_crops_beats_built_bare_and_water(world, scene):
    item = _l2a(world, scene, "2022-06-21")
    red, nir = _reflectance(item, "B04"), _reflectance(item, "B08")
    ndvi = (nir - red) / (nir + red)
    lulc = _lulc(world, scene)
    ok = _clear(world, item) & np.isfinite(ndvi)
    mean = {c: float(np.mean(ndvi[ok & (lulc == c)])) for c in (TREES, CROPS, BUILT, BARE, WATER)
            if np.count_nonzero(ok & (lulc == c)) >= 30}
    assert {TREES, CROPS, BUILT, WATER} <= set(mean), f"classes present: {mean}"
    vegetation = min(mean[TREES], mean[CROPS])
    for other in (BUILT, BARE, WATER):
        if other in mean:
            assert vegetation > mean[other] + 0.15, mean
    assert mean[TREES] > 0.5 and mean[WATER] < 0.1


def test_water_is_dark_in_nir_and_swir_and_low_in_vv(world):
    lulc = _lulc(world, "main")
    item = _l2a(world, "main", "2022-06-21")
    ok = _clear(world, item)
    water, land = ok & (lulc == WATER), ok & (lulc != WATER)
    for band in ("B08", "B11", "B12"):
        refl = _reflectance(item, band)
        if refl.shape != lulc.shape:
            refl = np.repeat(np.repeat(refl, lulc.shape[0] // refl.shape[0], 0), lulc.shape[1] // refl.shape[1], 1)
        assert np.nanmean(refl[water]) < 0.05 < np.nanmean(refl[land]), band
    for s1 in world.synthetic("sentinel-1-rtc", "main"):
        vv_db = 10 * np.log10(read_asset(s1["assets"]["vv"]))
        assert np.mean(vv_db[lulc == WATER]) < -15.0
        assert np.mean(vv_db[lulc == WATER]) < np.mean(vv_db[lulc != WATER]) - 5.0


def test_radar_sees_towns_bright_in_vv_and_forest_bright_in_vh(world):
    lulc = _lulc(world, "main")
    for s1 in world.synthetic("sentinel-1-rtc", "main"):
        vv = read_asset(s1["assets"]["vv"])
        vh = read_asset(s1["assets"]["vh"])
        assert vv.dtype == np.float32 and np.all(vv > 0)
        assert np.mean(vv[lulc == BUILT]) > 2 * np.mean(vv[lulc == CROPS])
        assert np.mean(vh[lulc == TREES]) > 1.5 * np.mean(vh[lulc == CROPS])


def test_speckle_is_multiplicative(world):
    lulc = _lulc(world, "523U_40R")
    (s1, *_) = world.synthetic("sentinel-1-rtc", "523U_40R")
    vv = read_asset(s1["assets"]["vv"]).astype(np.float64)
    for cls in (TREES, CROPS):
        v = vv[lulc == cls]
        cv = v.std() / v.mean()
        assert 0.35 < cv < 0.9, (cls, cv)  # gamma speckle with ENL 4.4 alone gives 0.48


def test_clouds_are_bright_in_blue_and_flagged_in_scl_and_mask(world):
    cloudy = [i for i in world.synthetic("sentinel-2-l2a") if i["properties"]["eo:cloud_cover"] > 5.0]
    assert cloudy, "the small preset has a cloudy date"
    for item in cloudy:
        l1c = _l1c_of(world, item)
        mask = read_asset(l1c["assets"]["cloud_mask"])
        blue = _reflectance(l1c, "B02")
        thick = mask == 1
        clear = mask == 0
        assert thick.sum() > 100
        assert np.nanmean(blue[thick]) > 0.35 > np.nanmean(blue[clear])
        scl = read_asset(item["assets"]["SCL"])
        thick20 = thick.reshape(scl.shape[0], 2, scl.shape[1], 2).all(axis=(1, 3))
        assert np.mean(np.isin(scl[thick20], (8, 9))) > 0.95
        shadow20 = (mask == 3).reshape(scl.shape[0], 2, scl.shape[1], 2).all(axis=(1, 3))
        if shadow20.sum() > 20:
            assert np.mean(scl[shadow20] == 3) > 0.9
            nir = _reflectance(item, "B08")
            lulc = _lulc(world, item["properties"]["copgen:scene"])
            for cls in (TREES, CROPS, BARE):
                shade, lit = (mask == 3) & (lulc == cls), clear & (lulc == cls)
                if shade.sum() > 30 and lit.sum() > 30:
                    assert np.nanmean(nir[shade]) < 0.6 * np.nanmean(nir[lit]), cls


def test_cloud_cover_property_matches_the_rasters(world):
    for item in world.synthetic("sentinel-2-l2a"):
        scl = read_asset(item["assets"]["SCL"])
        valid = scl != 0
        expected = 100.0 * np.isin(scl[valid], (8, 9, 10)).mean()
        assert item["properties"]["eo:cloud_cover"] == pytest.approx(expected, abs=1e-3)
        mask = read_asset(_l1c_of(world, item)["assets"]["cloud_mask"])
        valid = mask != 255
        l1c_cover = _l1c_of(world, item)["properties"]["eo:cloud_cover"]
        assert l1c_cover == pytest.approx(100.0 * np.isin(mask[valid], (1, 2)).mean(), abs=1e-3)
        assert abs(l1c_cover - item["properties"]["eo:cloud_cover"]) < 5.0


def test_baseline_04_adds_1000_dn_to_every_valid_pixel(world):
    seen = set()
    for coll in ("sentinel-2-l2a", "sentinel-2-l1c"):
        for item in world.synthetic(coll):
            props = item["properties"]
            new = props["s2:processing_baseline"] >= "04.00"
            assert props["copgen:dn_offset"] == (1000 if new else 0)
            seen.add(new)
            for key, asset in item["assets"].items():
                if key in ("SCL", "cloud_mask"):
                    continue
                dn = read_asset(asset)
                valid = dn != 0
                if new:
                    assert dn[valid].min() >= 1000, (item["id"], key)
                elif coll == "sentinel-2-l2a" and key == "B04":
                    assert np.percentile(dn[valid], 5) < 1000, "dark red surfaces stay below 1000 without offset"
    assert seen == {True, False}


def test_swath_edge_leaves_nodata_in_every_band_and_shrinks_the_geometry(world):
    edged = [i for i in world.synthetic("sentinel-2-l2a") if i["properties"]["s2:nodata_pixel_percentage"] > 0]
    assert edged
    for item in edged:
        b04 = read_asset(item["assets"]["B04"]) == 0
        b01 = read_asset(item["assets"]["B01"]) == 0
        scl = read_asset(item["assets"]["SCL"]) == 0
        assert 0.02 < b04.mean() < 0.98
        assert np.array_equal(np.repeat(np.repeat(b01, 6, 0), 6, 1), b04)
        assert np.array_equal(np.repeat(np.repeat(scl, 2, 0), 2, 1), b04)
        full = next(i for i in world.synthetic("io-lulc-annual-v02", item["properties"]["copgen:scene"]))
        assert item["bbox"][0] > full["bbox"][0], "the western part is outside the swath"


def test_snow_is_bright_in_visible_and_dark_in_swir(world):
    for item in world.synthetic("sentinel-2-l2a"):
        scl = read_asset(item["assets"]["SCL"])
        snow = scl == 11
        if snow.sum() < 50:
            continue
        green = _reflectance(item, "B03")[::2, ::2]
        swir = _reflectance(item, "B11")
        assert np.nanmean(green[snow]) > 0.4 > np.nanmean(swir[snow])
        return
    pytest.fail("no date with snow in the small world (the October alpine date should have some)")


def test_20m_and_60m_grids_are_exactly_aligned_with_10m(world):
    for item in world.synthetic("sentinel-2-l2a") + world.synthetic("sentinel-2-l1c"):
        t10 = item["assets"]["B04"]["proj:transform"]
        s10 = item["assets"]["B04"]["proj:shape"]
        for key, asset in item["assets"].items():
            t, s = asset["proj:transform"], asset["proj:shape"]
            factor = round(t[0] / t10[0])
            assert (t[2], t[5]) == (t10[2], t10[5]), key
            assert t[0] == -t[4] == 10.0 * factor and factor in (1, 2, 6), key
            assert s[0] * factor == s10[0] and s[1] * factor == s10[1], key
            assert t[2] % 60 == 0 and t[5] % 60 == 0


def test_20m_bands_are_block_means_of_the_10m_scene(world):
    item = _l2a(world, "main", "2022-06-21")
    b08 = _reflectance(item, "B08")
    b8a = _reflectance(item, "B8A")
    coarse = b08.reshape(b8a.shape[0], 2, b8a.shape[1], 2).mean(axis=(1, 3))
    assert np.corrcoef(coarse.ravel(), b8a.ravel())[0, 1] > 0.95


def test_dem_and_land_cover_agree_across_grids(world):
    """The EPSG:4326 DEM sampled at the UTM land-cover pixels: water lowest, fields low, rock high."""
    (dem_item,) = world.synthetic("cop-dem-glo-30", "main")
    (lulc_item,) = world.synthetic("io-lulc-annual-v02", "main")
    dem = read_asset(dem_item["assets"]["data"])
    lulc = read_asset(lulc_item["assets"]["data"])
    t = lulc_item["assets"]["data"]["proj:transform"]
    rows, cols = np.indices(lulc.shape)
    lon, lat = utm_to_lonlat(lulc_item["assets"]["data"]["proj:epsg"], t[2] + (cols + 0.5) * t[0],
                             t[5] + (rows + 0.5) * t[4])
    d = dem_item["assets"]["data"]["proj:transform"]
    r = np.floor((lat - d[5]) / d[4]).astype(int)
    c = np.floor((lon - d[2]) / d[0]).astype(int)
    assert r.min() >= 0 and c.min() >= 0 and r.max() < dem.shape[0] and c.max() < dem.shape[1]
    h = dem[r, c]
    mean = {cls: float(h[lulc == cls].mean()) for cls in (WATER, CROPS, BUILT, TREES, BARE)}
    assert mean[WATER] < mean[CROPS] < mean[TREES] < mean[BARE], mean
    assert mean[BUILT] < mean[TREES]
