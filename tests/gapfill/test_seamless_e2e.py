"""`copgen seamless` end to end on the small world: same bytes whatever the engine and worker count, a
restart after a failed window gives the bytes of a clean run, the seam ratio of both modes is computed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.config import SeamlessConfig
from pipelines.seamless_job import run_seamless
from tests.pipelines.helpers import data_digests, run_cli
from transforms import seamless
from transforms.seamless import canvas_seam_ratios, load_canvas, read_canvas_group, wave_of
from transforms.windows import WindowKey

pytestmark = pytest.mark.slow

BBOX = "6.005,46.065,6.04,46.09"  # 3 x 3 windows at a 1440 m stride over the small world's main area
DATE = "2022-06-21"
COMMON = ["--bbox", BBOX, "--start", DATE, "--model", "random:tiny", "--members", "2", "--steps", "2", "--quiet"]
S2_10 = "S2L2A_B02_B03_B04_B08"


@pytest.fixture(scope="module")
def local_canvas(stac_api_world: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seamless") / "local.zarr"
    proc = run_cli("seamless", "--stac-url", stac_api_world.url, "--output", str(out), *COMMON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_every_window_is_written_wave_by_wave(local_canvas: Path) -> None:
    report = json.loads(Path(f"{local_canvas}.report.json").read_text())
    assert report["ok"] and report["planned"] == report["done"] == 9
    assert [report["counters"][f"wave{i}_windows"] for i in range(4)] == [4, 2, 2, 1]
    values, _ = read_canvas_group(str(local_canvas), S2_10)
    assert values.shape == (2, 4, 3 * 144 + 48, 3 * 144 + 48) and np.isfinite(values).all()
    for record in (local_canvas / "_ledger" / "done").glob("*.json"):
        prov = json.loads(record.read_text())["provenance"]
        known = prov["known_fraction"][S2_10]
        assert (known == 0.0) == (prov["wave"] == 0), "only first-wave windows start from an empty canvas"
        assert prov["wave"] == wave_of(WindowKey.parse(prov["window"]))
    assert not (local_canvas / "_undo").exists() or not list((local_canvas / "_undo").iterdir())


def test_dask_with_two_workers_writes_the_same_bytes(stac_api_world: Any, local_canvas: Path, tmp_path: Path) -> None:
    out = tmp_path / "dask.zarr"
    proc = run_cli("seamless", "--stac-url", stac_api_world.url, "--output", str(out), "--engine", "dask",
                      "--workers", "2", "--batch-size", "1", *COMMON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert data_digests(out) == data_digests(local_canvas)


def _cfg(url: str, out: Path, **kw: Any) -> SeamlessConfig:
    west, south, east, north = (float(v) for v in BBOX.split(","))
    return SeamlessConfig(stac_url=url, bbox=(west, south, east, north), start=DATE, output=str(out),
                          model="random:tiny", members=2, steps=2, **kw)


def test_a_failed_window_stops_the_waves_and_a_rerun_gives_the_clean_bytes(
        stac_api_world: Any, local_canvas: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "restart.zarr"
    real = seamless.ledger.mark_done
    victim: list[str] = []

    def flaky(url: str, key: Any, *args: Any, **kw: Any) -> None:
        if wave_of(key) == 1 and not victim:  # the window's canvas writes are in, its record is not
            victim.append(str(key))
            raise OSError("simulated crash before the ledger record")
        real(url, key, *args, **kw)

    monkeypatch.setattr(seamless.ledger, "mark_done", flaky)
    first = run_seamless(_cfg(stac_api_world.url, out, batch_size=1), progress=False)
    assert not first.ok and [f["window"] for f in first.failed] == victim
    assert first.counters["stopped_after_wave"] == 1 and first.done == 4 + 1
    assert (out / "_undo" / f"{victim[0]}.npz").is_file()
    monkeypatch.setattr(seamless.ledger, "mark_done", real)
    second = run_seamless(_cfg(stac_api_world.url, out), progress=False)
    assert second.ok and second.skipped == 5 and second.done == 4
    rerun = {k: v for k, v in data_digests(out).items() if not k.startswith("_ledger/failed/")}
    assert rerun == data_digests(local_canvas)


def test_seam_ratio_is_computed_for_both_modes(stac_api_world: Any, local_canvas: Path, tmp_path: Path) -> None:
    out = tmp_path / "independent.zarr"
    report = run_seamless(_cfg(stac_api_world.url, out, mode="independent"), progress=False)
    assert report.ok
    ratios = {}
    for name, url in (("waves", local_canvas), ("independent", out)):
        values, group = read_canvas_group(str(url), S2_10)
        ratios[name] = canvas_seam_ratios(values, group.block_px, group.footprint_px, coarsen=12)
        assert set(ratios[name]) == {"at_stride", "at_overlap", "mean"}
        assert all(np.isfinite(v) and v > 0 for v in ratios[name].values())
    independent, _ = read_canvas_group(str(out), S2_10)
    waves, _ = read_canvas_group(str(local_canvas), S2_10)
    first = load_canvas(str(out)).windows[0]
    assert wave_of(first.key) == 0
    assert not np.array_equal(independent, waves), "later waves see their neighbours only in waves mode"


def test_an_overlap_without_a_gap_exits_2(stac_api_world: Any, tmp_path: Path) -> None:
    out = tmp_path / "bad.zarr"
    proc = run_cli("seamless", "--stac-url", stac_api_world.url, "--output", str(out), "--overlap-m", "960",
                      *COMMON)
    assert proc.returncode == 2 and "overlap_m" in proc.stderr
    assert not out.exists()
    proc = run_cli("seamless", "--stac-url", stac_api_world.url, "--output", str(out), "--targets", "lulc",
                      *COMMON)
    assert proc.returncode == 2 and "cannot be blended" in proc.stderr
    assert not out.exists()
