"""The wave schedule, the canvas geometry and the feathered merge of seamless generation (no services)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.seamless import (
    CanvasError,
    CanvasSpec,
    check_seamless_stride,
    create_canvas,
    feather_weights,
    load_canvas,
    merge_window,
    read_canvas,
    restore_undo,
    save_undo,
    wave_of,
    wave_schedule,
    write_canvas,
)
from transforms.windows import PlanError, Window, WindowKey, iter_grid

S2_10 = "S2L2A_B02_B03_B04_B08"
DEM = "DEM_DEM"

grids = st.tuples(st.integers(2600, 2700), st.integers(150, 250), st.integers(1, 6), st.integers(1, 6),
                  st.sampled_from([60.0, 480.0, 900.0]))


def _windows(row0: int, col0: int, rows: int, cols: int, overlap: float) -> list[Window]:
    return list(iter_grid(32632, range(row0, row0 + rows), range(col0, col0 + cols), overlap_m=overlap))


def _overlap(a: Window, b: Window) -> bool:
    al, ab, ar, at = a.bounds
    bl, bb, br, bt = b.bounds
    return al < br and bl < ar and ab < bt and bb < at


@settings(max_examples=40, deadline=None)
@given(grids)
def test_every_window_is_in_exactly_one_wave(grid: tuple[int, int, int, int, float]) -> None:
    windows = _windows(*grid)
    waves = wave_schedule(windows)
    assert len(waves) == 4
    flat = [w.key for wave in waves for w in wave]
    assert sorted(flat) == sorted(w.key for w in windows)
    assert len(flat) == len(set(flat))
    for i, wave in enumerate(waves):
        assert all(wave_of(w.key) == i for w in wave)


@settings(max_examples=40, deadline=None)
@given(grids)
def test_no_two_windows_of_a_wave_overlap_or_share_a_chunk(grid: tuple[int, int, int, int, float]) -> None:
    windows = _windows(*grid)
    spec = CanvasSpec(url="memory://never-written.zarr", modalities=(S2_10, DEM), windows=tuple(windows), members=1,
                      time=datetime(2022, 6, 21))
    for wave in wave_schedule(windows):
        for i, a in enumerate(wave):
            for b in wave[i + 1:]:
                assert not _overlap(a, b), (a.key, b.key)
        for group in spec.groups:
            chunks = [(r // group.block_px, c // group.block_px)
                      for w in wave
                      for rows, cols in [group.chunk_span(w)]
                      for r in range(rows.start, rows.stop, group.block_px)
                      for c in range(cols.start, cols.stop, group.block_px)]
            assert len(chunks) == len(set(chunks)), f"a chunk of {group.path} is shared within a wave"


def test_neighbouring_windows_of_different_waves_overlap() -> None:
    a, b = _windows(2650, 200, 1, 2, 480.0)
    assert wave_of(a.key) != wave_of(b.key) and _overlap(a, b)


@pytest.mark.parametrize("overlap", [0.0, 960.0, 1200.0, 100.0])
def test_overlaps_without_a_gap_or_context_are_refused(overlap: float) -> None:
    with pytest.raises(PlanError, match="overlap"):
        check_seamless_stride(overlap)


def test_overlap_480_gives_stride_1440() -> None:
    assert check_seamless_stride(480.0) == 1440.0


def test_canvas_refuses_categorical_targets_and_wrong_lattices() -> None:
    wins = tuple(_windows(2650, 200, 2, 2, 480.0))
    with pytest.raises(CanvasError, match="cannot be blended"):
        CanvasSpec(url="memory://x.zarr", modalities=("LULC_LULC",), windows=wins, members=1, time=datetime(2022, 1, 1))
    with pytest.raises(CanvasError, match="stride"):
        CanvasSpec(url="memory://x.zarr", modalities=(S2_10,), windows=tuple(_windows(2650, 200, 2, 2, 0.0)),
                   members=1, time=datetime(2022, 1, 1))


def test_feather_weights_fall_from_one_to_zero_over_the_band() -> None:
    empty = np.zeros((20, 20), dtype=bool)
    empty[:, 10:] = True
    w = feather_weights(empty, 4)
    assert (w[:, 10:] == 1).all()
    np.testing.assert_allclose(w[0, 5:10], [0.0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)
    assert (w[:, :6] == 0).all()
    assert (feather_weights(np.zeros((5, 5), bool), 4) == 0).all()
    assert (feather_weights(empty, 0) == empty).all()


def test_merge_keeps_known_pixels_outside_the_band_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    known = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    known[:, :, :, 16:] = np.nan
    generated = rng.normal(size=known.shape).astype(np.float32)
    out = merge_window(known, generated, 3)
    assert np.array_equal(out[..., 16:], generated[..., 16:])
    assert np.array_equal(out[..., :12], known[..., :12])
    band = out[..., 12:16]
    assert not np.array_equal(band, known[..., 12:16]) and np.isfinite(band).all()
    w = np.float32(0.25)  # distance 3 from the empty column 16 with a 3 px band
    np.testing.assert_allclose(out[..., 13], w * generated[..., 13] + (1 - w) * known[..., 13], rtol=1e-6)


def test_canvas_write_read_and_undo_round_trip(tmp_path) -> None:  # noqa: ANN001
    wins = tuple(_windows(2650, 200, 2, 3, 480.0))
    spec = CanvasSpec(url=str(tmp_path / "c.zarr"), modalities=(S2_10,), windows=wins, members=2,
                      time=datetime(2022, 6, 21))
    create_canvas(spec)
    create_canvas(spec)  # idempotent
    assert load_canvas(spec.url).spec_hash == spec.spec_hash
    first, second = wins[0], wins[1]
    assert np.isnan(read_canvas(spec, first, S2_10)).all()
    values = np.arange(2 * 4 * 192 * 192, dtype=np.float32).reshape(2, 4, 192, 192)
    write_canvas(spec, first, S2_10, values)
    assert np.array_equal(read_canvas(spec, first, S2_10), values)
    before = read_canvas(spec, second, S2_10)
    save_undo(spec, second, [S2_10])
    write_canvas(spec, second, S2_10, np.zeros_like(values))
    assert restore_undo(spec, second)
    assert np.array_equal(read_canvas(spec, second, S2_10), before, equal_nan=True)
    assert np.array_equal(read_canvas(spec, first, S2_10), values)
    other = CanvasSpec(url=spec.url, modalities=(S2_10,), windows=wins, members=3, time=datetime(2022, 6, 21))
    with pytest.raises(CanvasError, match="members"):
        create_canvas(other)


def test_canvas_is_georeferenced_on_the_lattice(tmp_path) -> None:  # noqa: ANN001
    import odc.geo.xr  # noqa: F401
    import rioxarray  # noqa: F401
    import xarray as xr

    wins = tuple(_windows(2650, 200, 2, 2, 480.0))
    spec = CanvasSpec(url=str(tmp_path / "g.zarr"), modalities=(S2_10, DEM), windows=wins, members=1,
                      time=datetime(2022, 6, 21))
    create_canvas(spec)
    ds = xr.open_zarr(spec.url, group="32632/10m")
    assert ds[S2_10].rio.crs.to_epsg() == 32632
    left, _, _, top = Window(WindowKey(32632, 2651, 200), stride_m=1440.0).bounds
    assert tuple(ds[S2_10].rio.transform())[:6] == (10.0, 0.0, left, 0.0, -10.0, top)
    assert ds.sizes["x"] == ds.sizes["y"] == 144 + 192
    assert ds.odc.geobox.crs.epsg == 32632 and tuple(ds.odc.geobox.affine)[:6] == (10.0, 0.0, left, 0.0, -10.0, top)
    assert xr.open_zarr(spec.url, group="32632/30m")[DEM].shape == (1, 1, 48 + 64, 48 + 64)


def test_canvas_seam_ratios_report_borders_against_the_other_vae_cell_edges() -> None:
    from transforms.seamless import canvas_seam_ratios

    yy, xx = np.mgrid[0:384, 0:384].astype(float)
    rng = np.random.default_rng(0)
    cells = rng.normal(size=(48, 48)).repeat(8, 0).repeat(8, 1)  # a decoder's 8 px cells, no window seams
    canvas = (cells + 0.01 * (yy + xx))[None, None]
    r = canvas_seam_ratios(canvas, block_px=144, footprint_px=192)
    assert r["mean"] > 3.0  # borders lie on cell edges: against every inside pair they look like seams
    assert r["cell_edges"] == pytest.approx(1.0, abs=0.15)  # against the other cell edges they do not
    assert "cell_edges" not in canvas_seam_ratios(canvas, 144, 192, coarsen=12)
