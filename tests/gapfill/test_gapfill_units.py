"""Gap-fill roles, the fill itself, the filled-mask arrays and the run state, on hand-made tiles (no services)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transforms.cube import create_cube, read_window
from transforms.cube_spec import CubeSpec
from transforms.gapfill import (
    Acquisition,
    GapfillSpec,
    StateError,
    add_filled_arrays,
    fill_windows,
    item_hash,
    read_filled,
    read_state,
    record_acquisition,
    select_acquisitions,
    window_roles,
    write_filled,
    write_state,
)
from transforms.tiles import Tile, WorkUnit
from transforms.windows import Window, WindowKey

S2_10, S2_20, S2_60 = "S2L2A_B02_B03_B04_B08", "S2L2A_B05_B06_B07_B11_B12_B8A", "S2L2A_B01_B09"
CONDITIONS = ("3d_cartesian_lat_lon", "DEM_DEM", "LULC_LULC", "S1RTC_vh_vv", "mean_timestamps")
WHEN = datetime(2022, 6, 21, 10, 4, tzinfo=UTC)


def _tile(col: int = 168, seed: int = 0, with_60m: bool = False) -> Tile:
    rng = np.random.default_rng(seed)
    unit = WorkUnit(Window(WindowKey(32632, 2650, col)), 0, WHEN, ())
    tile = Tile(unit)
    tile.arrays = {
        S2_10: rng.uniform(500, 3000, (4, 192, 192)).astype(np.float32),
        S2_20: rng.uniform(500, 3000, (6, 96, 96)).astype(np.float32),
        "DEM_DEM": rng.uniform(400, 900, (1, 64, 64)).astype(np.float32),
        "LULC_LULC": np.full((1, 192, 192), 2.0, dtype=np.float32),
        "S1RTC_vh_vv": rng.uniform(0.01, 0.2, (2, 192, 192)).astype(np.float32),
        "3d_cartesian_lat_lon": np.array([46.07, 6.03]),
        "mean_timestamps": np.array([2022, 6, 21]),
    }
    if with_60m:
        tile.arrays[S2_60] = rng.uniform(500, 3000, (2, 32, 32)).astype(np.float32)
    tile.arrays["S1RTC_vh_vv"][0, 5, 5] = np.nan  # an S1 hole: not a condition
    tile.valid = {k: np.isfinite(v).all(axis=0) for k, v in tile.arrays.items() if v.ndim == 3}
    return tile


def _scl(cloud: bool = True) -> np.ndarray:
    scl = np.full((96, 96), 4.0, dtype=np.float32)  # vegetation
    if cloud:
        scl[10:30, 40:70] = 9  # cloud, high probability
        scl[50:52, 0:4] = 3  # shadow
    return scl


class NoModel:
    """A model that must not be used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the model was used ({name}) for a window with nothing missing")


@pytest.fixture(scope="module")
def model() -> Any:
    from copgen_core.bundle import load_model

    return load_model("random:tiny")


SPEC = GapfillSpec(model="random:tiny", conditions=CONDITIONS, members=2, steps=2, seed=3)


def test_roles_follow_the_missing_masks() -> None:
    tile = _tile()
    roles = window_roles(tile, CONDITIONS, scl=_scl())
    assert roles.partial == (S2_10, S2_20)
    assert roles.targets == (S2_60,)  # not read at all: band infilling
    assert roles.complete == ()
    assert roles.conditions == ("3d_cartesian_lat_lon", "DEM_DEM", "LULC_LULC", "mean_timestamps")
    assert roles.mode == "gapfilled"
    expect_20 = np.zeros((96, 96), dtype=bool)
    expect_20[10:30, 40:70] = True
    expect_20[50:52, 0:4] = True
    assert np.array_equal(roles.missing[S2_20], expect_20)
    assert np.array_equal(roles.missing[S2_10], np.repeat(np.repeat(expect_20, 2, 0), 2, 1))


def test_a_clear_window_is_copied_and_complete_groups_condition() -> None:
    roles = window_roles(_tile(with_60m=True), CONDITIONS, scl=_scl(cloud=False))
    assert roles.mode == "copied" and roles.complete == (S2_60, S2_10, S2_20)
    assert {S2_60, S2_10, S2_20} <= set(roles.conditions)


def test_nodata_and_zero_pixels_are_missing_without_an_scl() -> None:
    tile = _tile()
    tile.arrays[S2_10][:, 0, :7] = np.nan
    tile.arrays[S2_10][:, 1, :3] = 0.0
    tile.valid[S2_10] = np.isfinite(tile.arrays[S2_10]).all(axis=0)
    roles = window_roles(tile, CONDITIONS, scl=None)
    assert roles.partial == (S2_10,) and int(roles.missing[S2_10].sum()) == 10
    assert roles.sky_fraction is None


def test_observed_pixels_are_kept_bit_for_bit_and_the_mask_marks_the_filled_ones(model: Any) -> None:
    tiles = [_tile(seed=0), _tile(col=169, seed=1)]
    roles = [window_roles(t, CONDITIONS, scl=_scl()) for t in tiles]
    fills = fill_windows(tiles, roles, [("a", "x"), ("b", "x")], SPEC, model)
    for tile, r, fill in zip(tiles, roles, fills, strict=True):
        for key in (S2_10, S2_20):
            out, miss = fill.arrays[key], r.missing[key]
            assert out.shape == (2, *tile.arrays[key].shape) and out.dtype == np.float32
            assert np.array_equal(fill.filled[key], miss)
            for m in range(2):
                assert np.array_equal(out[m][:, ~miss].view(np.uint32), tile.arrays[key][:, ~miss].view(np.uint32))
                assert np.isfinite(out[m][:, miss]).all()
            assert not np.array_equal(out[0][:, miss], out[1][:, miss]), "members must differ in the gaps"
        assert fill.filled[S2_60].all() and fill.arrays[S2_60].shape == (2, 2, 32, 32)
        assert np.isfinite(fill.arrays[S2_60]).all()


def test_a_window_fills_the_same_whatever_batch_it_runs_in(model: Any) -> None:
    tiles = [_tile(seed=0), _tile(col=169, seed=1)]
    roles = [window_roles(t, CONDITIONS, scl=_scl()) for t in tiles]
    together = fill_windows(tiles, roles, [("a", "x"), ("b", "x")], SPEC, model)
    alone = fill_windows(tiles[1:], roles[1:], [("b", "x")], SPEC, model)
    for key in (S2_10, S2_20, S2_60):
        assert np.array_equal(together[1].arrays[key], alone[0].arrays[key])


def test_band_infilling_generates_an_absent_group_whole(model: Any) -> None:
    tile = _tile(with_60m=True)
    del tile.arrays[S2_10], tile.valid[S2_10]
    roles = window_roles(tile, CONDITIONS, scl=_scl(cloud=False))
    assert roles.targets == (S2_10,) and roles.complete == (S2_60, S2_20)
    fill = fill_windows([tile], [roles], [("a", "x")], SPEC, model)[0]
    assert fill.filled[S2_10].all() and np.isfinite(fill.arrays[S2_10]).all()
    for key in (S2_60, S2_20):
        assert not fill.filled[key].any()
        assert np.array_equal(fill.arrays[key][1], tile.arrays[key])


def test_windows_with_nothing_missing_never_call_the_model() -> None:
    tile = _tile(with_60m=True)
    roles = window_roles(tile, CONDITIONS, scl=_scl(cloud=False))
    fill = fill_windows([tile], [roles], [("a", "x")], SPEC, NoModel())[0]
    assert all(np.array_equal(fill.arrays[k][0], tile.arrays[k]) and not fill.filled[k].any() for k in roles.complete)


def test_filled_masks_live_beside_the_modality_in_the_cube(tmp_path: Path) -> None:
    win = Window(WindowKey(32632, 2650, 168))
    spec = CubeSpec(url=str(tmp_path / "acq.zarr"), modalities=(S2_10, S2_20), windows=(win,), times=(WHEN,),
                    members=2, stats=True)
    create_cube(spec)
    add_filled_arrays(spec)
    add_filled_arrays(spec)  # idempotent
    assert read_filled(spec.url, win.key, S2_10).tolist() == np.full((192, 192), 255).tolist()
    miss = np.zeros((192, 192), dtype=bool)
    miss[3:9, 100:150] = True
    write_filled(spec, win.key, 0, {S2_10: miss})
    assert np.array_equal(read_filled(spec.url, win.key, S2_10), miss.astype(np.uint8))
    assert read_window(spec.url, win.key, S2_10, 0).shape == (2, 4, 192, 192)

    import xarray as xr

    ds = xr.open_zarr(spec.url, group="32632/10m")
    assert ds[f"{S2_10}__filled"].dims == ("time", "y", "x") and ds[f"{S2_10}__filled"].dtype == np.uint8


def _item(item_id: str, cloud: float = 1.0, port: int = 8081) -> dict[str, Any]:
    return {"type": "Feature", "id": item_id, "properties": {"datetime": "2022-06-21T10:04:00Z", "eo:cloud_cover": cloud},
            "assets": {"B04": {"href": f"file:///data/{item_id}/B04.tif"}},
            "links": [{"rel": "root", "href": f"http://127.0.0.1:{port}"}]}


def test_item_hash_ignores_links_and_sees_content_changes() -> None:
    assert item_hash(_item("a")) == item_hash(_item("a", port=9999))
    assert item_hash(_item("a")) != item_hash(_item("a", cloud=2.0))
    assert item_hash(_item("a")) != item_hash(_item("b"))


def test_since_last_selects_new_and_updated_acquisitions(tmp_path: Path) -> None:
    a = Acquisition("A", WHEN, "sha256:1")
    b = Acquisition("B", WHEN, "sha256:2")
    state = read_state(str(tmp_path / "out"))
    assert state["acquisitions"] == {}
    record_acquisition(state, a, "out/A.zarr", 4)
    record_acquisition(state, b, "out/B.zarr", 4)
    write_state(str(tmp_path / "out"), state)
    state = read_state(str(tmp_path / "out"))
    c = Acquisition("C", WHEN, "sha256:3")
    b2 = Acquisition("B", WHEN, "sha256:changed")
    todo, unchanged = select_acquisitions([a, b2, c], state, "last")
    assert todo == [b2, c] and unchanged == [a]
    assert select_acquisitions([a, b2, c], state, None) == ([a, b2, c], [])
    assert [p.name for p in (tmp_path / "out" / "_runs").iterdir()] == ["state.json"]


def test_a_damaged_state_file_is_refused_with_a_way_out(tmp_path: Path) -> None:
    (tmp_path / "_runs").mkdir()
    (tmp_path / "_runs" / "state.json").write_text("{not json")
    with pytest.raises(StateError, match="delete it"):
        read_state(str(tmp_path))
    (tmp_path / "_runs" / "state.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(StateError, match="not a copgen gapfill state"):
        read_state(str(tmp_path))


def test_match_prior_fits_gain_and_offset_on_the_common_clear_pixels() -> None:
    from transforms.gapfill import match_prior

    rng = np.random.default_rng(0)
    prior = rng.uniform(500, 3000, size=(2, 32, 32)).astype(np.float32)
    observed = (1.3 * prior + np.array([200.0, -100.0])[:, None, None]).astype(np.float32)
    missing = np.zeros((32, 32), dtype=bool)
    missing[:10] = True  # the gap: its truth follows the same change
    observed_in = observed.copy()
    observed_in[:, missing] = np.nan
    matched = match_prior(prior, observed_in, missing)
    np.testing.assert_allclose(matched[:, missing], observed[:, missing], rtol=1e-4)
    # few common pixels: only the offset; none: unchanged; never below DN 1 (0 is no-data)
    few = np.ones((32, 32), dtype=bool)
    few[0, :10] = False
    shifted = match_prior(prior, prior + 50.0, few)
    np.testing.assert_allclose(shifted, prior + 50.0, rtol=1e-5)
    assert np.array_equal(match_prior(prior, observed_in, np.ones((32, 32), dtype=bool)), prior)
    dark = match_prior(prior, np.full_like(prior, 1.0), np.zeros((32, 32), dtype=bool))
    assert dark.min() >= 1.0


def test_complete_prior_keeps_the_temporal_guess_and_fills_the_rest_spatially() -> None:
    from types import SimpleNamespace

    from transforms.gapfill import S2L2A_GROUPS, WindowRoles, complete_prior

    key = S2L2A_GROUPS[0]
    obs = np.full((2, 32, 32), 1000.0, dtype=np.float32)
    obs[:, :, 16:] = 3000.0  # west half dark, east half bright
    missing = np.zeros((32, 32), dtype=bool)
    missing[10:20, 4:28] = True
    tile: Any = SimpleNamespace(arrays={key: obs})
    roles = WindowRoles((), (), (key,), (), {key: missing})
    guess = np.full((2, 32, 32), np.nan, dtype=np.float32)
    guess[:, 10:15, 4:28] = 2222.0  # another date shows the upper half of the gap
    out = complete_prior({key: guess}, tile, roles)
    assert set(out) == {key} and out[key].shape == (2, 32, 32)
    assert (out[key][:, 10:15, 4:28] == 2222.0).all()  # the temporal guess where there is one
    rest = out[key][:, 15:20, 4:28]
    assert np.isfinite(rest).all() and rest.min() >= 1000.0 and rest.max() <= 3000.0  # a mean of known values
    assert rest[:, :, 0].mean() < rest[:, :, -1].mean()  # and spatially local: darker on the dark side
    single_date = complete_prior({}, tile, roles)  # no other date: a spatial prior only
    assert np.isfinite(single_date[key]).all()
