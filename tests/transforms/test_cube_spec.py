"""transforms.cube_spec: spec normalisation, identity and the group/block geometry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copgen_core.modalities import BY_KEY, Kind
from transforms.cube_spec import (
    CLASS_CODES,
    CLASS_NAMES,
    AlignmentError,
    CubeError,
    CubeSpec,
    block_offset_m,
    group_path,
    variable_names,
)
from transforms.windows import Window, WindowKey, check_stride, iter_grid

T0 = datetime(2024, 6, 1, tzinfo=UTC)


def spec(windows: list[Window] | None = None, **kw: object) -> CubeSpec:
    base: dict[str, object] = {"url": "memory://x.zarr", "modalities": ("s2l2a_10m", "dem"), "windows": windows,
                               "times": (T0,), "members": 2}
    base.update(kw)
    return CubeSpec(**base)  # type: ignore[arg-type]


def test_spec_normalises_modalities_windows_and_times() -> None:
    wins = list(iter_grid(32632, range(10, 12), range(3, 5)))
    s = spec(wins, modalities=("dem", "lulc", "S2L2A_B02_B03_B04_B08"),
             times=(datetime(2024, 1, 1), "2024-02-01T01:00:00+01:00"))
    assert s.modalities == ("DEM_DEM", "LULC_LULC", "S2L2A_B02_B03_B04_B08")
    assert [w.key for w in s.windows] == sorted(w.key for w in wins)
    assert s.times == (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
    assert s.times[1].tzinfo is not None and s.times[1].utcoffset() == timedelta(0)
    assert s.planned()[:2] == [(s.windows[0].key, 0), (s.windows[0].key, 1)]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"modalities": ("latlon", "dem")}, "scalar modalities"),
        ({"modalities": ("nope",)}, "unknown modality"),
        ({"windows": []}, "windows is empty"),
        ({"times": (T0, T0)}, "strictly increasing"),
        ({"times": ()}, "strictly increasing"),
        ({"members": 0}, "members=0"),
        ({"members": None, "stats": True}, "stats=True needs members"),
        ({"attrs": {"x": object()}}, "JSON-serialisable"),
    ],
)
def test_invalid_specs_are_refused_with_the_field_named(kw: dict[str, object], match: str) -> None:
    kw = {"windows": list(iter_grid(32632, range(1), range(1)))} | kw
    with pytest.raises(CubeError, match=match):
        spec(**kw)  # type: ignore[arg-type]


def test_duplicate_and_mixed_lattice_windows_are_refused() -> None:
    w = Window(WindowKey(32632, 5, 5))
    with pytest.raises(CubeError, match="duplicate keys"):
        spec([w, w])
    with pytest.raises(CubeError, match="mix lattices"):
        spec([w, Window(WindowKey(32632, 5, 6), stride_m=1440.0)])


def test_spec_hash_ignores_url_and_credentials_but_not_content() -> None:
    wins = list(iter_grid(32632, range(2), range(2)))
    a = spec(wins)
    b = spec(wins, url="gs://bkt/other.zarr", storage_options={"token": "secret"})
    assert a.spec_hash == b.spec_hash and a != b  # same content, another place
    assert spec(wins, storage_options={"token": "other"}) == a
    assert "secret" not in str(a.to_json()) and "secret" not in str(b.to_json())
    assert spec(wins, members=3).spec_hash != a.spec_hash
    assert spec(wins, attrs={"model_hash": "abc"}).spec_hash != a.spec_hash
    assert spec(wins, times=(T0, T0 + timedelta(days=1))).spec_hash != a.spec_hash


def test_content_hash_ignores_where_the_job_read_and_wrote_but_not_its_settings() -> None:
    wins = list(iter_grid(32632, range(2), range(2)))
    job = {"job": "preprocess", "config": {"stac_url": "http://127.0.0.1:60011", "output": "/a/train.zarr",
                                           "start": "2022-01-01"}}
    a = spec(wins, attrs=job)
    moved = spec(wins, attrs={**job, "config": {**job["config"], "stac_url": "http://127.0.0.1:41234",
                                                 "output": "/b/train.zarr"}})
    assert moved.content_hash == a.content_hash and moved.spec_hash != a.spec_hash
    other = spec(wins, attrs={**job, "config": {**job["config"], "start": "2022-02-01"}})
    assert other.content_hash != a.content_hash
    assert spec(wins, members=3, attrs=job).content_hash != a.content_hash


def test_from_json_round_trips() -> None:
    wins = list(iter_grid(32633, range(7, 9), range(1, 4), overlap_m=480))
    a = spec(wins, times=(T0, T0 + timedelta(days=5)), stats=True, attrs={"run": {"seed": 7}})
    b = CubeSpec.from_json(a.to_json(), a.url)
    assert b == a and b.spec_hash == a.spec_hash and b.windows[0].stride_m == 1440.0


def test_from_json_refuses_another_format_version() -> None:
    doc = spec([Window(WindowKey(32632, 1, 1))]).to_json() | {"format_version": 99}
    with pytest.raises(CubeError, match="format version 99"):
        CubeSpec.from_json(doc, "x")


def test_groups_per_zone_and_resolution_cover_the_union_of_windows() -> None:
    wins = [Window(WindowKey(32632, 2650, 168)), Window(WindowKey(32632, 2648, 170)),
            Window(WindowKey(32633, 2650, 10))]
    s = spec(wins, modalities=("s2l2a_10m", "s2l2a_20m", "s2l2a_60m", "dem", "lulc"))
    assert [g.path for g in s.groups] == [
        "32632/10m", "32632/20m", "32632/30m", "32632/60m", "32633/10m", "32633/20m", "32633/30m", "32633/60m"]
    g10 = s.groups[0]
    assert g10.modalities == ("LULC_LULC", "S2L2A_B02_B03_B04_B08")
    assert g10.block_px == 192 and g10.geobox.shape == (3 * 192, 3 * 192)
    assert g10.geobox.bounds == (168 * 1920.0, 2647 * 1920.0, 171 * 1920.0, 2650 * 1920.0)
    assert g10.windows == (WindowKey(32632, 2648, 170), WindowKey(32632, 2650, 168))
    assert s.groups[2].block_px == 64 and s.groups[3].block_px == 32
    assert g10.block_origin_px(s.window(WindowKey(32632, 2650, 168))) == (0, 0)
    assert g10.block_origin_px(s.window(WindowKey(32632, 2648, 170))) == (384, 384)
    np.testing.assert_array_equal(g10.geobox.x_coords[:2], [168 * 1920 + 5.0, 168 * 1920 + 15.0])


@pytest.mark.parametrize(("overlap", "offset"), [(0, 0), (60, 0), (480, 240), (960, 480), (900, 420)])
def test_block_offset_is_half_the_overlap_on_the_60m_quantum(overlap: float, offset: float) -> None:
    w = Window(WindowKey(32632, 1, 1), stride_m=check_stride(overlap))
    assert block_offset_m(w) == offset


@settings(max_examples=30, deadline=None)
@given(
    overlap=st.sampled_from([0, 120, 480, 960]),
    cells=st.sets(st.tuples(st.integers(2600, 2606), st.integers(150, 156)), min_size=1, max_size=8),
    gsd=st.sampled_from([10.0, 20.0, 30.0, 60.0]),
)
def test_window_blocks_tile_their_group_without_overlap(overlap: int, cells: set[tuple[int, int]], gsd: float) -> None:
    stride = check_stride(overlap)
    wins = [Window(WindowKey(32632, r, c), stride_m=stride) for r, c in cells]
    mod = {10.0: "s2l2a_10m", 20.0: "s2l2a_20m", 30.0: "dem", 60.0: "s2l2a_60m"}[gsd]
    s = spec(wins, modalities=(mod,))
    (g,) = s.groups
    seen = np.zeros(g.geobox.shape, dtype=int)
    for w in wins:
        r0, c0 = g.block_origin_px(w)
        seen[r0:r0 + g.block_px, c0:c0 + g.block_px] += 1
        # the block lies inside the window footprint, on the window's native grid
        wb = w.geobox(gsd)
        block_left = g.geobox.transform[2] + c0 * gsd
        block_top = g.geobox.transform[5] - r0 * gsd
        assert w.x0 <= block_left and block_left + stride <= w.x0 + w.footprint_m
        assert w.y_top >= block_top and block_top - stride >= w.y_top - w.footprint_m
        assert (block_left - wb.transform[2]) % gsd == 0 and (wb.transform[5] - block_top) % gsd == 0
    assert seen.max() == 1 and seen.sum() == len(wins) * g.block_px**2


def test_block_origin_refuses_a_window_of_another_lattice() -> None:
    s = spec([Window(WindowKey(32632, 10, 10))])
    foreign = Window(WindowKey(32632, 10, 13), stride_m=1440.0)  # x0 = 18720 m: 9.75 blocks of 1920 m
    with pytest.raises(AlignmentError, match="32632_10_13"):
        s.groups[0].block_origin_px(foreign)


def test_lookups_name_what_is_missing() -> None:
    s = spec([Window(WindowKey(32632, 1, 1))])
    with pytest.raises(CubeError, match="32632_9_9 is not planned"):
        s.window(WindowKey(32632, 9, 9))
    with pytest.raises(CubeError, match="time_index=3"):
        s.time_value(3)
    with pytest.raises(CubeError, match="LULC_LULC"):
        s.group(32632, "LULC_LULC")
    assert variable_names(s, "DEM_DEM") == ("DEM_DEM",)
    st_spec = spec([Window(WindowKey(32632, 1, 1))], modalities=("lulc", "dem"), stats=True)
    assert variable_names(st_spec, "LULC_LULC") == ("LULC_LULC", "LULC_LULC__freq", "LULC_LULC__mode")
    assert variable_names(st_spec, "DEM_DEM")[1:] == tuple(f"DEM_DEM__{x}" for x in ("mean", "std", "p05", "p50", "p95"))


def test_group_path_and_tz_conversion() -> None:
    assert group_path(32632, BY_KEY["DEM_DEM"].gsd_m) == "32632/30m"
    s = spec([Window(WindowKey(32632, 1, 1))], times=(datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))),))
    assert s.times[0] == datetime(2024, 1, 1, tzinfo=UTC)


def test_class_tables_match_the_model_normalisation() -> None:
    pytest.importorskip("torch")
    from copgen_core import normalize_classes as nc

    assert CLASS_CODES[Kind.LULC] == nc.LULC_CODES and CLASS_CODES[Kind.CLOUD] == nc.CLOUD_CODES
    assert len(CLASS_NAMES[Kind.LULC]) == len(nc.LULC_CLASS_NAMES)
    assert len(CLASS_NAMES[Kind.CLOUD]) == len(nc.CLOUD_CLASS_NAMES)
