"""`copgen generate` end to end on the small world served by a real STAC API.

Engines agree to the byte; a SIGKILLed run resumes to the same bytes (also through another URL of the
catalog); a killed Dask worker does not
change the result; bad requests exit 2 and write nothing; an unreachable catalog exits 3.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.paths import REPO
from tests.pipelines.helpers import chunk_digests, data_digests, run_cli

pytestmark = pytest.mark.slow

BBOX = "6.02,46.07,6.045,46.09"  # 4 windows of the small world's main area (UTM 32N side)
DATE = "2022-06-21"
COMMON = ["--bbox", BBOX, "--start", DATE, "--model", "random:tiny", "--members", "2", "--steps", "2",
          "--quiet"]


@pytest.fixture(scope="module")
def api_url(stac_api_world: Any) -> str:
    return stac_api_world.url


@pytest.fixture(scope="module")
def local_cube(api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "local.zarr"
    proc = run_cli("generate", "--stac-url", api_url, "--output", str(out), "--engine", "local", *COMMON)
    assert proc.returncode == 0, proc.stderr
    return out


def test_local_run_writes_every_window_and_a_report(local_cube: Path) -> None:
    report = json.loads(Path(f"{local_cube}.report.json").read_text())
    assert report["ok"] and report["planned"] == report["done"] == 4 and report["failed"] == []
    assert len(list((local_cube / "_ledger" / "done").glob("*.json"))) == 4
    record = json.loads(next((local_cube / "_ledger" / "done").glob("*.json")).read_text())
    prov = record["provenance"]
    assert prov["targets"] == ["S2L2A_B02_B03_B04_B08"] and prov["seed"] == 0
    assert set(prov["conditioning"]) <= {"DEM_DEM", "LULC_LULC", "3d_cartesian_lat_lon", "mean_timestamps"}
    assert "3d_cartesian_lat_lon" in prov["conditioning"]
    assert prov["sampler"]["guidance"] == 1.0


def test_guidance_is_applied_and_recorded(api_url: str, local_cube: Path, tmp_path: Path) -> None:
    out = tmp_path / "guided.zarr"
    proc = run_cli("generate", "--stac-url", api_url, "--output", str(out), "--engine", "local",
                   "--guidance", "2.5", *COMMON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(next((out / "_ledger" / "done").glob("*.json")).read_text())
    assert record["provenance"]["sampler"]["guidance"] == 2.5
    ours, plain = chunk_digests(out), chunk_digests(local_cube)
    assert ours.keys() == plain.keys()
    data = [k for k in ours if "/S2L2A_B02_B03_B04_B08/c/" in k]
    assert data and all(ours[k] != plain[k] for k in data)  # every generated chunk changed


@pytest.mark.parametrize("engine", ["dask", "beam"])
def test_engines_write_the_same_bytes(engine: str, api_url: str, local_cube: Path, tmp_path: Path) -> None:
    out = tmp_path / f"{engine}.zarr"
    proc = run_cli("generate", "--stac-url", api_url, "--output", str(out), "--engine", engine,
                   "--workers", "2", *COMMON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours, ref = data_digests(out), data_digests(local_cube)
    assert ours.keys() == ref.keys()
    assert ours == ref


def test_sigkill_then_rerun_computes_only_missing_windows(api_url: str, local_cube: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "pipelines.cli", "generate", "--stac-url", api_url, "--output", str(out),
           "--batch-size", "1", *COMMON]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_dir = out / "_ledger" / "done"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if done_dir.is_dir() and len(list(done_dir.glob("*.json"))) >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list(done_dir.glob("*.json")))
    assert 1 <= n_before < 4, "the run must be killed halfway for this test to mean anything"
    # the rerun reaches the same catalog at another URL, as after a restart of the local API (new port)
    other_url = api_url.replace("127.0.0.1", "localhost")
    assert other_url != api_url
    rerun = run_cli("generate", "--stac-url", other_url, "--output", str(out), *COMMON)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stderr
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["skipped"] == n_before and report["done"] == 4 - n_before
    assert chunk_digests(out) == chunk_digests(local_cube)
    from transforms.cube import load_spec

    assert load_spec(str(out)).attrs["config"]["stac_url"] == api_url  # the cube keeps what it was started with


def test_a_second_identical_run_does_nothing(api_url: str, local_cube: Path) -> None:
    before = data_digests(local_cube)
    proc = run_cli("generate", "--stac-url", api_url, "--output", str(local_cube), *COMMON)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(Path(f"{local_cube}.report.json").read_text())
    assert report["skipped"] == 4 and report["done"] == 0
    assert data_digests(local_cube) == before


def test_dask_worker_killed_mid_run_still_finishes_with_same_bytes(api_url: str, local_cube: Path,
                                                                   tmp_path: Path) -> None:
    import os

    from dask.distributed import Client, LocalCluster

    from pipelines.config import GenerateConfig
    from pipelines.jobs import run_generate

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    out = tmp_path / "dask-killed.zarr"
    killed: list[int] = []

    def kill_one_worker() -> None:
        done_dir = out / "_ledger" / "done"
        deadline = time.monotonic() + 300
        with Client(cluster, set_as_default=False) as client:
            while time.monotonic() < deadline:
                if done_dir.is_dir() and list(done_dir.glob("*.json")):
                    break
                time.sleep(0.02)
            pids = client.run(os.getpid)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    cfg = GenerateConfig(stac_url=api_url, bbox=tuple(float(v) for v in BBOX.split(",")), start=DATE,
                         output=str(out), model="random:tiny", members=2, steps=2, engine="dask",
                         scheduler=cluster.scheduler_address, batch_size=1)
    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    try:
        report = run_generate(cfg, progress=False)
    finally:
        killer.join()
        cluster.close()
    assert killed, "a worker must have been killed"
    assert report.ok and report.done + report.skipped == 4
    assert chunk_digests(out) == chunk_digests(local_cube)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bbox", "7,46,6,47"], "bbox"),
        (["--bbox", "6,46,7"], "west,south,east,north"),
        (["--start", "2022-13-40"], "start"),
        (["--targets", "S9_B99"], "unknown modality"),
        (["--members", "0"], "members"),
        (["--overlap-m", "100"], "multiple of 60"),
        (["--guidance", "-1"], "guidance"),
    ],
)
def test_bad_requests_exit_2_and_write_nothing(args: list[str], message: str, api_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bad.zarr"
    base = {"--bbox": BBOX, "--start": DATE}
    for flag in ("--bbox", "--start"):
        if flag not in args:
            args = [*args, flag, base[flag]]
    proc = run_cli("generate", "--stac-url", api_url, "--output", str(out), "--model", "random:tiny", *args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert message in proc.stderr
    assert not out.exists()


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "job.yaml"
    cfg.write_text("stac_url: http://127.0.0.1:1\nbbox: [6, 46, 7, 47]\nstart: 2022-06-21\nmembrs: 3\n")
    proc = run_cli("generate", "--config", str(cfg), "--output", str(tmp_path / "x.zarr"))
    assert proc.returncode == 2
    assert "membrs" in proc.stderr and "Extra inputs are not permitted" in proc.stderr
    assert not (tmp_path / "x.zarr").exists()


def test_unreachable_catalog_exits_3_after_retries(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    cfg = tmp_path / "job.yaml"
    cfg.write_text(f"stac_url: http://127.0.0.1:{port}\nbbox: [{BBOX}]\nstart: {DATE}\nretries: 1\n"
                   "model: random:tiny\n")
    proc = run_cli("generate", "--config", str(cfg), "--output", str(tmp_path / "x.zarr"))
    assert proc.returncode == 3, proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr and "2 attempt(s)" in proc.stderr
