"""The presets' layout, checked from the plan alone (no rasters rendered)."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from copgen_core import grid
from sampleworld import plan_world
from sampleworld.config import SceneConfig, preset_config
from sampleworld.geometry import dem_grid, dem_lon_spacing_arcsec

OPTICAL = ("sentinel-2-l2a", "sentinel-2-l1c")


@pytest.fixture(scope="module")
def default_plan():
    return plan_world("default")


def test_default_preset_meets_the_issue_numbers(default_plan):
    assert len(default_plan.cells) >= 12
    assert len(default_plan.zones) >= 2
    assert any(grid.cell_bottom_left(c)[0] > 60.0 for c in default_plan.cells)
    for coll in OPTICAL:
        assert len(default_plan.dates(coll)) >= 6, coll
    # a year of acquisitions
    days = default_plan.dates("sentinel-2-l2a")
    assert (date.fromisoformat(days[-1]) - date.fromisoformat(days[0])).days >= 300


def test_default_radar_has_missing_passes(default_plan):
    slots = len(default_plan.config.radar_passes)
    per_scene = [len(v) for v in default_plan.radar.values()]
    assert min(per_scene) < slots
    assert max(per_scene) >= 6


def test_some_cell_straddles_a_zone_boundary(default_plan):
    straddling = []
    for c in default_plan.cells:
        lat, lon = grid.cell_bottom_left(c)
        _, dlon = grid.cell_size_deg(c)
        if int(grid.utm_epsg(lat, lon)) != int(grid.utm_epsg(lat, lon + dlon * 0.999)):
            straddling.append(c)
    assert straddling


def test_main_area_is_big_enough_and_on_the_60m_lattice(default_plan):
    main = default_plan.main
    assert main.size_m >= 7680
    windows = (main.size_m - 1920) // 1440 + 1  # 1920 m windows overlapping by 480 m
    assert windows >= 5
    assert main.left % 60 == 0 and main.top % 60 == 0
    assert len(main.cells) >= 2
    west, _, east, _ = main.bbox_lonlat()
    assert west < 6.0 < east, "the main area straddles the zone 31/32 boundary at 6 deg E"


def test_every_scene_nests_10_20_60m_grids(default_plan):
    for g in default_plan.scenes:
        assert g.size_m % 60 == 0
        for res in (20, 60):
            assert g.transform(res).c == g.transform(10).c and g.transform(res).f == g.transform(10).f
            assert g.shape(10)[0] == g.shape(res)[0] * (res // 10)


def test_cell_scenes_take_their_cells_utm_zone(default_plan):
    for g in default_plan.scenes:
        if g.kind == "cell":
            assert g.cells == (g.name,)
            assert g.epsg == grid.cell_epsg(g.name)
    # Norway exception: 5.3 deg E at 60.4 deg N is zone 32, not 31
    bergen = [g for g in default_plan.scenes if g.name == grid.cell_of(60.40, 5.30)]
    assert bergen and bergen[0].epsg == 32632


def test_dem_grid_follows_copernicus_spacing(default_plan):
    assert dem_lon_spacing_arcsec(46.0) == 1.0
    assert dem_lon_spacing_arcsec(60.4) == 2.0
    for g in default_plan.scenes:
        d = dem_grid(g)
        west, south, east, north = d.bounds()
        bw, bs, be, bn = g.bbox_lonlat()
        assert west < bw and south < bs and east > be and north > bn
        # pixel centres on whole multiples of the spacing
        assert abs((d.transform.c / (d.dlon_arcsec / 3600.0) + 0.5) % 1.0) < 1e-6


def test_small_preset_is_small_but_covers_the_same_physics():
    plan = plan_world("small")
    assert len(plan.scenes) <= 4
    assert 2 <= len(plan.dates("sentinel-2-l2a")) <= 3
    assert len(plan.zones) >= 2
    assert any(a.offset_dn == 1000 for acqs in plan.optical.values() for a in acqs)
    assert any(a.offset_dn == 0 for acqs in plan.optical.values() for a in acqs)
    assert any(a.edge is not None for acqs in plan.optical.values() for a in acqs)


def test_item_ids_are_unique(default_plan):
    ids = [i.item_id for i in default_plan.items]
    assert len(ids) == len(set(ids))


def test_bad_configs_are_refused_with_a_reason():
    with pytest.raises(ValidationError, match="multiple of 60"):
        SceneConfig(name="", kind="cell", region="alps", lat=46.0, lon=6.0, size_m=1000)
    with pytest.raises(ValueError, match="unknown sample-world preset"):
        preset_config("huge")
