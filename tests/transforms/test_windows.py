"""Window lattice: stable keys, nested native grids, bbox coverage, bad requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copgen_core.modalities import BY_KEY
from transforms.windows import PlanError, Window, WindowKey, check_stride, windows_for_bbox


def test_native_grids_nest_exactly() -> None:
    win = Window(WindowKey(32632, 2650, 168))
    boxes = {k: win.geobox(BY_KEY[k]) for k in ("S2L2A_B02_B03_B04_B08", "S2L2A_B05_B06_B07_B11_B12_B8A",
                                                 "S2L2A_B01_B09", "DEM_DEM")}
    assert [b.shape for b in boxes.values()] == [(192, 192), (96, 96), (32, 32), (64, 64)]
    origins = {(b.transform[2], b.transform[5]) for b in boxes.values()}
    assert origins == {(168 * 1920.0, 2650 * 1920.0)}
    assert {b.bounds for b in boxes.values()} == {win.bounds}


def test_key_round_trip_and_bad_key() -> None:
    key = WindowKey(32631, -5, 12)
    assert WindowKey.parse(str(key)) == key
    with pytest.raises(PlanError, match="bad window key"):
        WindowKey.parse("32631-5-12")


def test_stride_must_nest_60m_grid() -> None:
    assert check_stride(960) == 960
    with pytest.raises(PlanError, match="multiple of 60"):
        check_stride(100)
    with pytest.raises(PlanError, match="must be in"):
        check_stride(1920)


@pytest.mark.parametrize("bbox", [(7, 46, 6, 47), (6, 47, 7, 46), (-181, 0, 1, 1), (0, 86, 1, 87)])
def test_bad_bbox_is_refused(bbox: tuple[float, float, float, float]) -> None:
    with pytest.raises(PlanError, match="bbox"):
        windows_for_bbox(bbox)


def test_bbox_across_zone_boundary_gets_both_zones() -> None:
    wins = windows_for_bbox((5.98, 46.0, 6.02, 46.02))
    assert {w.epsg for w in wins} == {32631, 32632}


@settings(max_examples=40, deadline=None)
@given(lon=st.floats(-170, 170), lat=st.floats(-80, 80), overlap=st.sampled_from([0.0, 480.0, 960.0]))
def test_windows_cover_the_bbox_centre(lon: float, lat: float, overlap: float) -> None:
    bbox = (lon, lat, lon + 0.01, lat + 0.01)
    wins = windows_for_bbox(bbox, overlap_m=overlap)
    assert wins, "a non-empty bbox must get at least one window"
    c_lat, c_lon = lat + 0.005, lon + 0.005
    from pyproj import Transformer

    hits = 0
    for w in wins:
        x, y = Transformer.from_crs(4326, w.epsg, always_xy=True).transform(c_lon, c_lat)
        left, bottom, right, top = w.bounds
        hits += left <= x <= right and bottom <= y <= top
    assert hits >= 1
    assert len(set(wins)) == len(wins)
