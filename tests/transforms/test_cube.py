"""transforms.cube: template, region writes from several processes, georeferencing, statistics, ledger, gs://.

Everything runs against real Zarr stores: a temporary directory, ``memory://`` and a real
fake-gcs-server (the shared ``gcs_emulator`` session fixture of ``tests/conftest.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

from copgen_core.modalities import BY_KEY
from tests.paths import REPO
from transforms import ledger
from transforms.cube import (
    AlignmentError,
    CubeError,
    CubeSpec,
    SpecMismatchError,
    create_cube,
    create_or_resume,
    finalize_cube,
    load_spec,
    open_store,
    read_window,
    validate_region,
    verify_window,
    write_window,
)
from transforms.cube_spec import CLASS_CODES
from transforms.windows import Window, WindowKey, iter_grid

S2 = "S2L2A_B02_B03_B04_B08"
S2_60 = "S2L2A_B01_B09"
LULC = "LULC_LULC"
DEM = "DEM_DEM"
TIMES = (datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))
WINDOWS = tuple(iter_grid(32632, range(2600, 2602), range(150, 152)))  # 2 x 2 windows, no overlap


def make_spec(url: str, *, members: int | None = 3, stats: bool = True, windows: tuple[Window, ...] = WINDOWS,
              modalities: tuple[str, ...] = (S2, LULC, DEM, S2_60), **kw: Any) -> CubeSpec:
    return CubeSpec(url=url, modalities=modalities, windows=windows, times=TIMES, members=members, stats=stats,
                    attrs={"model_hash": "sha256:feed", "sampler": {"steps": 50}}, **kw)


def window_arrays(spec: CubeSpec, key: WindowKey, t: int) -> dict[str, np.ndarray]:
    """Deterministic inputs of one (window, time), on the window's native grids."""
    rng = np.random.default_rng([key.row, key.col, t])
    lead = () if spec.members is None else (spec.members,)
    out: dict[str, np.ndarray] = {}
    for k in spec.modalities:
        mod = BY_KEY[k]
        shape = (*lead, len(mod.channels), mod.pixel_size, mod.pixel_size)
        if mod.key == LULC:
            out[k] = rng.choice([1, 2, 5, 7], size=shape).astype(np.uint8)
        elif mod.key == DEM:
            out[k] = rng.normal(300.0, 25.0, shape)  # float64 in, float32 stored
        else:
            out[k] = rng.uniform(0, 4000, shape).astype(np.float32)
    return out


def provenance(key: WindowKey, t: int) -> dict[str, Any]:
    return {"source_items": {"S2L2A": [f"S2B_{key}_{t}"]}, "cloud_fraction": 0.25, "seed": key.row * 1000 + t,
            "conditioning": [DEM], "targets": [S2, LULC], "model_hash": "sha256:feed",
            "sampler": {"name": "dpm++", "steps": 50}, "software_version": "copgen 0.1.0"}


def child_write(url: str, key: str, t: str, storage_options: str = "{}") -> None:
    """Entry point of the writer subprocesses: rebuild the spec from the cube and write one window."""
    so = json.loads(storage_options)
    spec = load_spec(url, so)
    k = WindowKey.parse(key)
    write_window(spec, k, int(t), window_arrays(spec, k, int(t)), provenance(k, int(t)))


def spawn_writers(jobs: list[tuple[str, ...]], env_extra: dict[str, str] | None = None) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    code = "import sys; from tests.transforms.test_cube import child_write; child_write(*sys.argv[1:])"
    procs = [subprocess.Popen([sys.executable, "-c", code, *job], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for job in jobs]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()


def tree_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def data_chunk_files(root: Path) -> list[Path]:
    """Chunk files of the image variables (4-D and 5-D arrays), not of coordinates or the provenance table."""
    group = zarr.open_group(open_store(str(root)), mode="r")
    return [f for path, node in group.members(max_depth=None) if isinstance(node, zarr.Array) and node.ndim >= 4
            for f in (root / path).rglob("*") if f.is_file() and f.name != "zarr.json"]


@pytest.fixture
def cube(tmp_path: Path) -> CubeSpec:
    spec = make_spec(str(tmp_path / "cube.zarr"))
    create_cube(spec)
    return spec


# -- template ---------------------------------------------------------------------------------------


def test_template_layout_dims_coords_dtypes_and_chunking(cube: CubeSpec) -> None:
    assert not data_chunk_files(Path(cube.url)), "the template holds metadata and coordinates only"
    assert load_spec(cube.url) == cube
    ds = xr.open_zarr(cube.url, group="32632/10m")
    assert ds[S2].dims == ("time", "member", f"{S2}__band", "y", "x")
    assert ds[S2].dtype == np.float32 and ds[LULC].dtype == np.uint8
    assert list(ds[f"{S2}__band"].values) == ["B04", "B03", "B02", "B08"]
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    assert list(ds["time"].values) == [np.datetime64("2024-06-01", "ns"), np.datetime64("2024-07-01", "ns")]
    assert ds["member"].values.tolist() == [0, 1, 2]
    assert ds["x"].dtype == np.float64 and ds["y"].dtype == np.float64
    np.testing.assert_array_equal(ds["x"].values, cube.groups[0].geobox.x_coords)
    np.testing.assert_array_equal(ds["y"].values, cube.groups[0].geobox.y_coords)
    assert ds[f"{S2}__mean"].dims == ("time", f"{S2}__band", "y", "x")
    assert ds[f"{LULC}__freq"].dims == ("time", f"{LULC}__class", "y", "x")
    assert ds[f"{LULC}__class"].values.tolist() == list(CLASS_CODES[BY_KEY[LULC].kind])
    assert ds[f"{LULC}__mode"].dtype == np.uint8
    assert ds[LULC].attrs["flag_values"] == [0, 1, 2, 4, 5, 7, 8, 9, 10, 11]
    assert ds["provenance"].dims == ("window", "time")
    assert set(xr.open_zarr(cube.url, group="32632/30m").data_vars) >= {DEM, f"{DEM}__p95"}
    assert set(xr.open_zarr(cube.url, group="32632/60m").data_vars) >= {S2_60}
    z = zarr.open_group(open_store(cube.url), mode="r")
    s2 = z[f"32632/10m/{S2}"]
    assert s2.chunks == (1, 1, 4, 192, 192) and s2.shards == (1, 3, 4, 192, 192)
    assert z["32632/30m/DEM_DEM"].chunks == (1, 1, 1, 64, 64) and z["32632/30m/DEM_DEM"].shards == (1, 3, 1, 64, 64)
    assert z[f"32632/10m/{S2}__p50"].chunks == (1, 4, 192, 192)
    # unwritten reads as the fill: NaN for floats, 255 for codes
    assert np.isnan(ds[S2].isel(time=0, member=0).values).all()
    assert (ds[LULC].isel(time=1).values == 255).all()


def test_real_data_cube_has_no_member_dimension(tmp_path: Path) -> None:
    spec = make_spec(str(tmp_path / "real.zarr"), members=None, stats=False, modalities=(S2, LULC))
    create_cube(spec)
    key = WINDOWS[0].key
    arrays = window_arrays(spec, key, 1)
    write_window(spec, key, 1, arrays, {"source_items": {"S2L2A": ["x"]}})
    ds = xr.open_zarr(spec.url, group="32632/10m")
    assert "member" not in ds.dims and ds[S2].dims == ("time", f"{S2}__band", "y", "x")
    assert not [v for v in ds.data_vars if "__" in v]
    np.testing.assert_array_equal(read_window(spec.url, key, S2, 1), arrays[S2])
    np.testing.assert_array_equal(read_window(spec.url, key, "lulc", 1), arrays[LULC])


# -- region writes ----------------------------------------------------------------------------------


def test_two_processes_write_windows_and_read_back_equal(cube: CubeSpec) -> None:
    a, b, c = (w.key for w in WINDOWS[:3])
    spawn_writers([(cube.url, str(a), "0"), (cube.url, str(b), "1")])
    assert data_chunk_files(Path(cube.url))
    assert ledger.done_set(cube.url) == {(a, 0), (b, 1)}
    for key, t in ((a, 0), (b, 1)):
        want = window_arrays(cube, key, t)
        for k in cube.modalities:
            got = read_window(cube.url, key, k, t)
            np.testing.assert_array_equal(got, want[k].astype(got.dtype))
        assert verify_window(cube, key, t)
    assert np.isnan(read_window(cube.url, a, S2, 1)).all()
    assert np.isnan(read_window(cube.url, c, f"{DEM}__mean", 0)).all()
    assert (read_window(cube.url, c, LULC, 0) == 255).all()
    done, missing = ledger.completeness(cube.url, cube.planned())
    assert done == sorted([(a, 0), (b, 1)]) and len(missing) == 2 * 4 - 2


def test_rewrite_gives_identical_bytes(cube: CubeSpec) -> None:
    key = WINDOWS[1].key
    digest = write_window(cube, key, 0, window_arrays(cube, key, 0), provenance(key, 0))
    before = tree_digests(Path(cube.url))
    assert any(f"/{S2}/c/" in "/" + p for p in before), "chunk files were written"
    again = write_window(cube, key, 0, window_arrays(cube, key, 0), provenance(key, 0))
    assert again == digest
    assert tree_digests(Path(cube.url)) == before


def test_georeferenced_for_rioxarray_and_odc_geo(cube: CubeSpec) -> None:
    import odc.geo.xr  # noqa: F401 - registers .odc
    import rioxarray  # noqa: F401 - registers .rio
    from affine import Affine

    key = WINDOWS[2].key
    arrays = window_arrays(cube, key, 1)
    write_window(cube, key, 1, arrays, provenance(key, 1))
    window = cube.window(key)
    for group, modality in (("32632/10m", S2), ("32632/30m", DEM), ("32632/60m", S2_60)):
        ds = xr.open_zarr(cube.url, group=group)
        assert "spatial_ref" in ds.coords and ds[modality].attrs["grid_mapping"] == "spatial_ref"
        raw = zarr.open_group(open_store(cube.url), mode="r", path=group)
        spatial = [n for n, arr in raw.arrays() if tuple(arr.metadata.dimension_names or ())[-2:] == ("y", "x")]
        assert modality in spatial and all(raw[n].attrs["grid_mapping"] == "spatial_ref" for n in spatial)
        assert {"crs_wkt", "spatial_ref", "GeoTransform", "grid_mapping_name"} <= set(ds["spatial_ref"].attrs)
        gb = cube.group(32632, modality).geobox
        assert ds[modality].rio.crs.to_epsg() == 32632
        assert ds[modality].rio.transform() == Affine(*gb.transform)
        assert ds.odc.geobox.crs.epsg == 32632 and ds.odc.geobox.affine == Affine(*gb.transform)
        # select the window by its ground coordinates: it carries the window's own GeoBox and its data
        left, bottom, right, top = window.bounds
        sub = ds[modality].sel(x=slice(left, right), y=slice(top, bottom)).isel(time=1)
        wb = window.geobox(BY_KEY[modality])
        assert sub.shape[-2:] == wb.shape
        assert sub.rio.transform(recalc=True) == Affine(*wb.transform)
        assert sub.odc.geobox.affine == Affine(*wb.transform) and sub.odc.geobox.crs.epsg == wb.epsg
        np.testing.assert_array_equal(sub.values, arrays[modality].astype(np.float32))


def test_misaligned_template_is_refused_before_anything_is_written(cube: CubeSpec) -> None:
    store = open_store(cube.url)
    g = zarr.open_group(store, mode="r+", path="32632/10m")
    old = g[S2]
    attrs, dims, shape = dict(old.attrs), old.metadata.dimension_names, old.shape
    del g[S2]  # a template written by other code: 128 px chunks straddle the 192 px window blocks
    new = g.create_array(S2, shape=shape, dtype="float32", chunks=(1, 1, 4, 128, 128), fill_value=np.nan,
                         dimension_names=dims)
    new.attrs.update(attrs)
    with pytest.warns(UserWarning, match="Consolidated metadata"):
        zarr.consolidate_metadata(store, path="32632/10m")
        zarr.consolidate_metadata(store)
    key = WINDOWS[3].key
    with pytest.raises(AlignmentError) as err:
        write_window(cube, key, 0, window_arrays(cube, key, 0), provenance(key, 0))
    msg = str(err.value)
    assert str(key) in msg and f"32632/10m/{S2}" in msg
    assert "y: [192, 384) vs write unit 128" in msg and "x: [192, 384) vs write unit 128" in msg
    assert "load_spec" in msg and "--overwrite" in msg
    assert not ledger.is_done(cube.url, key, 0)
    assert not data_chunk_files(Path(cube.url)), "nothing was written, not even the other groups"


def test_validate_region_names_offsets_and_accepts_whole_shards() -> None:
    shape, chunks, shards = (2, 3, 4, 384, 384), (1, 1, 4, 192, 192), (1, 3, 4, 192, 192)
    dims = ("time", "member", "band", "y", "x")
    ok = (slice(1, 2), slice(None), slice(None), slice(192, 384), slice(0, 192))
    validate_region("32632_1_1", "g/S2", ok, shape, chunks, shards, dims)
    bad = (slice(1, 2), slice(None), slice(None), slice(100, 292), slice(0, 192))
    with pytest.raises(AlignmentError, match=r"window 32632_1_1 variable 'g/S2'.*y: \[100, 292\) vs write unit 192"):
        validate_region("32632_1_1", "g/S2", bad, shape, chunks, shards, dims)
    part = (slice(0, 1), slice(1, 2), slice(None), slice(0, 192), slice(0, 192))  # one member of a shard
    with pytest.raises(AlignmentError, match=r"member: \[1, 2\) vs write unit 3"):
        validate_region("32632_1_1", "g/S2", part, shape, chunks, shards, dims)
    validate_region("k", "v", part, shape, chunks, None, dims)  # fine without shards: one whole chunk
    validate_region("k", "v", (slice(0, 2), *ok[1:]), shape, chunks, shards, dims)  # several whole shards
    with pytest.raises(AlignmentError, match=r"x: \[0, 100\)"):
        validate_region("k", "v", (*ok[:4], slice(0, 100)), shape, chunks, shards, dims)
    with pytest.raises(AlignmentError, match="region has 4 dimensions, the array 5"):
        validate_region("k", "v", ok[:4], shape, chunks, shards, dims)


def test_bad_inputs_are_refused_before_writing(cube: CubeSpec) -> None:
    key = WINDOWS[0].key
    good = window_arrays(cube, key, 0)
    cases = [
        ({**good, S2: good[S2][:, :, :96, :96]}, r"expected shape \(3, 4, 192, 192\)"),
        ({**good, "S1RTC_vh_vv": good[S2][:, :2]}, "not in the cube"),
        ({**good, LULC: good[LULC].astype(np.float32) + 0.5}, "integer class codes"),
        ({**good, LULC: good[LULC].astype(np.int16) + 300}, "integer class codes"),
    ]
    for arrays, match in cases:
        with pytest.raises(CubeError, match=match):
            write_window(cube, key, 0, arrays, provenance(key, 0))
    with pytest.raises(CubeError, match="32632_1_1 is not planned"):
        write_window(cube, WindowKey(32632, 1, 1), 0, good, provenance(key, 0))
    with pytest.raises(CubeError, match="time_index=2"):
        write_window(cube, key, 2, good, provenance(key, 0))
    with pytest.raises(CubeError, match="contradict"):
        write_window(cube, key, 0, good, {"window": "32632_0_0"})
    with pytest.raises(CubeError, match="JSON-serialisable"):
        write_window(cube, key, 0, good, {"seed": np.arange(2)})
    assert ledger.done_set(cube.url) == set()
    assert np.isnan(read_window(cube.url, key, S2, 0)).all()


def test_unwritten_cube_and_unknown_variables_are_reported(tmp_path: Path, cube: CubeSpec) -> None:
    with pytest.raises(CubeError, match="create it first"):
        load_spec(str(tmp_path / "nothing.zarr"))
    with pytest.raises(CubeError, match="S1RTC_vh_vv' is not in the cube"):
        read_window(cube.url, WINDOWS[0].key, "s1", 0)
    with pytest.raises(CubeError, match="__max' is not in the cube"):
        read_window(cube.url, WINDOWS[0].key, f"{S2}__max", 0)


def test_a_crash_mid_window_leaves_it_not_done_and_the_rerun_completes(cube: CubeSpec) -> None:
    key = WINDOWS[0].key
    arrays = window_arrays(cube, key, 0)
    blocker = Path(cube.url) / "32632/10m" / f"{S2}__p95" / "c"
    blocker.write_text("not a directory")  # the last variable's chunk write fails, after the others succeeded
    with pytest.raises(OSError):
        write_window(cube, key, 0, arrays, provenance(key, 0))
    np.testing.assert_array_equal(read_window(cube.url, key, S2, 0), arrays[S2])  # written before the crash
    assert np.isnan(read_window(cube.url, key, f"{S2}__p95", 0)).all()
    assert not ledger.is_done(cube.url, key, 0) and not verify_window(cube, key, 0)
    blocker.unlink()
    write_window(cube, key, 0, arrays, provenance(key, 0))
    assert ledger.is_done(cube.url, key, 0) and verify_window(cube, key, 0)
    np.testing.assert_allclose(read_window(cube.url, key, f"{S2}__p95", 0),
                               np.percentile(arrays[S2].astype(np.float64), 95, axis=0), rtol=2e-6)


# -- create_cube identity ---------------------------------------------------------------------------


def test_create_or_resume_adopts_a_cube_started_through_another_stac_url(tmp_path: Path) -> None:
    def job_spec(stac_url: str, **kw: Any) -> CubeSpec:
        spec = make_spec(str(tmp_path / "job.zarr"), **kw)
        config = {"stac_url": stac_url, "output": spec.url, "steps": 20}
        return dataclasses.replace(spec, attrs={**spec.attrs, "config": config})

    first = job_spec("http://127.0.0.1:40001")
    assert create_or_resume(first) is first
    key = WINDOWS[0].key
    write_window(first, key, 0, window_arrays(first, key, 0), provenance(key, 0))
    before = tree_digests(Path(first.url))
    again = job_spec("http://127.0.0.1:40002")  # the local API restarted on another port
    with pytest.raises(SpecMismatchError):
        create_cube(again)
    adopted = create_or_resume(again)
    assert adopted.spec_hash == first.spec_hash and adopted.attrs["config"]["stac_url"] == "http://127.0.0.1:40001"
    assert tree_digests(Path(first.url)) == before  # nothing rewritten
    key2 = WINDOWS[1].key
    write_window(adopted, key2, 0, window_arrays(adopted, key2, 0), provenance(key2, 0))
    assert len(ledger.done_set(first.url)) == 2
    with pytest.raises(SpecMismatchError, match="members"):  # other content is still refused
        create_or_resume(job_spec("http://127.0.0.1:40002", members=5))


def test_create_is_idempotent_and_refuses_another_spec(cube: CubeSpec, tmp_path: Path) -> None:
    key = WINDOWS[0].key
    write_window(cube, key, 0, window_arrays(cube, key, 0), provenance(key, 0))
    before = tree_digests(Path(cube.url))
    create_cube(make_spec(cube.url))  # same spec: nothing happens
    assert tree_digests(Path(cube.url)) == before
    other = make_spec(cube.url, members=5)
    with pytest.raises(SpecMismatchError, match=r"fields differ: \['members'\].*new URL.*--overwrite"):
        create_cube(other)
    with pytest.raises(SpecMismatchError, match="members"):
        write_window(other, key, 0, window_arrays(other, key, 0), provenance(key, 0))
    assert tree_digests(Path(cube.url)) == before
    create_cube(other, overwrite=True)
    assert ledger.done_set(cube.url) == set(), "overwrite deletes the old ledger too"
    assert load_spec(cube.url).members == 5
    assert np.isnan(read_window(cube.url, key, S2, 0)).all()
    stray = tmp_path / "not-a-cube"
    stray.mkdir()
    (stray / "notes.txt").write_text("keep me")
    with pytest.raises(SpecMismatchError, match="not empty and holds no Zarr cube"):
        create_cube(make_spec(str(stray)))
    assert (stray / "notes.txt").read_text() == "keep me"


def test_interrupted_creation_is_redone(tmp_path: Path) -> None:
    spec = make_spec(str(tmp_path / "c.zarr"))
    create_cube(spec)
    root = zarr.open_group(open_store(spec.url), mode="r+")
    root.attrs["copgen_cube"] = {**root.attrs["copgen_cube"], "state": "creating"}
    with pytest.raises(CubeError, match="incomplete"):
        load_spec(spec.url)
    create_cube(spec)
    assert load_spec(spec.url) == spec


# -- statistics, overlap, provenance ----------------------------------------------------------------


def test_statistics_are_written_from_the_members(cube: CubeSpec) -> None:
    key = WINDOWS[0].key
    arrays = window_arrays(cube, key, 1)
    arrays[LULC][:, :, 0, :3] = np.array([[2], [2], [5]], dtype=np.uint8)[:, :, None]  # 2 wins
    arrays[LULC][:2, :, 1, 0], arrays[LULC][2, :, 1, 0] = 7, 255  # 7 twice, one member without a class
    write_window(cube, key, 1, arrays, provenance(key, 1))
    m = arrays[S2].astype(np.float64)
    for stat, want in (("mean", m.mean(0)), ("std", m.std(0, ddof=1)), ("p05", np.percentile(m, 5, axis=0)),
                       ("p50", np.percentile(m, 50, axis=0)), ("p95", np.percentile(m, 95, axis=0))):
        got = read_window(cube.url, key, f"{S2}__{stat}", 1)
        assert got.shape == (4, 192, 192) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=2e-6)
    dem = arrays[DEM].astype(np.float32).astype(np.float64)  # stats come from the stored float32 values
    np.testing.assert_allclose(read_window(cube.url, key, f"{DEM}__p50", 1), np.median(dem, axis=0), rtol=1e-6)
    freq = read_window(cube.url, key, f"{LULC}__freq", 1)
    codes = CLASS_CODES[BY_KEY[LULC].kind]
    assert freq.shape == (len(codes), 192, 192)
    for k, code in enumerate(codes):
        np.testing.assert_allclose(freq[k], (arrays[LULC][:, 0] == code).mean(0), rtol=1e-6)
    mode = read_window(cube.url, key, f"{LULC}__mode", 1)
    assert mode.shape == (1, 192, 192) and mode.dtype == np.uint8
    assert mode[0, 0, :3].tolist() == [2, 2, 2] and mode[0, 1, 0] == 7
    np.testing.assert_allclose(freq[codes.index(7), 1, 0], 2 / 3, rtol=1e-6)


def test_overlapping_windows_store_their_centre_blocks(tmp_path: Path) -> None:
    wins = tuple(iter_grid(32632, range(3466, 3468), range(200, 202), overlap_m=480))  # stride 1440 m
    spec = make_spec(str(tmp_path / "ov.zarr"), windows=wins, stats=False, modalities=(S2, DEM))
    create_cube(spec)
    g10 = spec.group(32632, S2)
    assert g10.block_px == 144 and g10.geobox.shape == (288, 288)
    for w in wins:
        arrays = window_arrays(spec, w.key, 0)
        write_window(spec, w.key, 0, arrays, {})
        got = read_window(spec.url, w.key, S2, 0)
        assert got.shape == (3, 4, 144, 144)
        np.testing.assert_array_equal(got, arrays[S2][..., 24:168, 24:168])  # 240 m = 24 px in from each side
        np.testing.assert_array_equal(read_window(spec.url, w.key, DEM, 0), arrays[DEM][..., 8:56, 8:56]
                                      .astype(np.float32))
    ds = xr.open_zarr(spec.url, group="32632/10m")
    assert not np.isnan(ds[S2].isel(time=0).values).any(), "centre blocks tile the group without gaps"


def test_finalize_publishes_the_provenance_table(cube: CubeSpec) -> None:
    a, b = WINDOWS[0].key, WINDOWS[3].key
    da = write_window(cube, a, 0, window_arrays(cube, a, 0), provenance(a, 0))
    write_window(cube, b, 1, {DEM: window_arrays(cube, b, 1)[DEM]}, provenance(b, 1))  # only the DEM
    ledger.mark_failed(cube.url, a, 1, "S1 item missing")
    done, missing = finalize_cube(cube)
    assert done == sorted([(a, 0), (b, 1)]) and (a, 1) in missing and len(missing) == 6
    assert ledger.failures(cube.url) == {(a, 1): "S1 item missing"}
    for group in ("32632/10m", "32632/30m"):
        table = xr.open_zarr(cube.url, group=group)["provenance"]
        row = json.loads(str(table.sel(window=str(a)).isel(time=0).values))
        assert row["digest"] == da and row["seed"] == provenance(a, 0)["seed"]
        assert row["window"] == str(a) and row["time"] == "2024-06-01T00:00:00+00:00" and row["time_index"] == 0
        assert row["source_items"] == {"S2L2A": [f"S2B_{a}_0"]} and row["model_hash"] == "sha256:feed"
        assert str(table.sel(window=str(a)).isel(time=1).values) == ""
        assert json.loads(str(table.sel(window=str(b)).isel(time=1).values))["variables"] == [
            DEM, *(f"{DEM}__{s}" for s in ("mean", "p05", "p50", "p95", "std"))]
    assert np.isnan(read_window(cube.url, b, S2, 1)).all(), "modalities left out stay unwritten"


def test_verify_window_detects_changed_bytes(cube: CubeSpec) -> None:
    key = WINDOWS[0].key
    write_window(cube, key, 0, window_arrays(cube, key, 0), provenance(key, 0))
    assert verify_window(cube, key, 0) and not verify_window(cube, key, 1)
    arr = zarr.open_group(open_store(cube.url), mode="r+")[f"32632/30m/{DEM}__std"]
    arr[0, 0, :64, :64] = np.zeros((64, 64), np.float32)
    assert not verify_window(cube, key, 0)


def test_memory_url_round_trip() -> None:
    import rioxarray  # noqa: F401 - registers .rio

    spec = make_spec(f"memory://{uuid.uuid4().hex}/cube.zarr", stats=False, modalities=(S2_60, LULC))
    create_cube(spec)
    key = WINDOWS[1].key
    arrays = window_arrays(spec, key, 0)
    write_window(spec, key, 0, arrays, provenance(key, 0))
    np.testing.assert_array_equal(read_window(spec.url, key, S2_60, 0), arrays[S2_60])
    assert ledger.done_set(spec.url) == {(key, 0)}
    assert xr.open_zarr(spec.url, group="32632/60m")[S2_60].rio.crs.to_epsg() == 32632


# -- gs:// on the real emulator ---------------------------------------------------------------------


def test_gcs_round_trip_with_ledger_listing_across_instances(gcs_emulator: Any) -> None:
    so = dict(gcs_emulator.storage_options)
    bucket = gcs_emulator.new_bucket("cube")
    url = f"gs://{bucket}/runs/cube.zarr"
    spec = make_spec(url, stats=False, modalities=(S2, DEM), storage_options=so)
    create_cube(spec)
    create_cube(make_spec(url, stats=False, modalities=(S2, DEM), storage_options=so))  # idempotent
    a, b = WINDOWS[0].key, WINDOWS[3].key
    write_window(spec, a, 0, window_arrays(spec, a, 0), provenance(a, 0))
    fs, path = ledger.filesystem(url, so)
    fs.ls(f"{path}/_ledger/done")  # warm this instance's listing cache with one record
    spawn_writers([(url, str(b), "1", json.dumps(so))], gcs_emulator.subprocess_env)  # another gcsfs instance
    assert ledger.done_set(url, so) == {(a, 0), (b, 1)}
    assert ledger.is_done(url, b, 1, so)
    for key, t in ((a, 0), (b, 1)):
        want = window_arrays(spec, key, t)
        np.testing.assert_array_equal(read_window(url, key, S2, t, so), want[S2])
        np.testing.assert_array_equal(read_window(url, key, DEM, t, so), want[DEM].astype(np.float32))
        assert verify_window(spec, key, t)
    ds = xr.open_zarr(url, group="32632/30m", storage_options=so)
    assert ds[DEM].rio.crs.to_epsg() == 32632
    assert int(np.isfinite(ds[DEM].values).sum()) == 2 * 3 * 64 * 64
    done, missing = finalize_cube(spec)
    assert done == sorted([(a, 0), (b, 1)]) and len(missing) == 6
    table = xr.open_zarr(url, group="32632/10m", storage_options=so)["provenance"]
    assert json.loads(str(table.sel(window=str(b)).isel(time=1).values))["seed"] == provenance(b, 1)["seed"]
    with pytest.raises(CubeError, match="whole bucket"):
        create_cube(make_spec(f"gs://{bucket}", storage_options=so), overwrite=True)
    assert ledger.done_set(url, so) == {(a, 0), (b, 1)}, "nothing was deleted"
