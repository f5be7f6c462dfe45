"""`copgen gapfill` end to end through the STAC API on the small world.

Observed pixels come out bit-identical to the source COGs and the filled mask marks exactly the
pixels the SCL, no-data and zero DN say are missing; an absent band group is generated whole; engines
agree to the byte; `--since last` processes exactly the new or updated acquisitions and a second
identical run processes nothing; bad requests exit 2 and write nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds

from pipelines.config import GapfillConfig
from pipelines.gapfill_job import run_gapfill
from tests.pipelines.helpers import chunk_digests, copy_world, data_digests, items, run_cli
from transforms.catalog import describe_item
from transforms.cube import load_spec, read_window
from transforms.gapfill import read_filled, read_state
from transforms.masks import SCL_MISSING

pytestmark = pytest.mark.slow

BBOX = "5.996,46.065,5.9995,46.09"  # the zone-31 part of the main area: 2 windows, exact reads of the COGs
PERIOD = ["--start", "2021-10-01", "--end", "2022-07-31"]
COMMON = ["--bbox", BBOX, *PERIOD, "--model", "random:tiny", "--members", "2", "--steps", "2", "--quiet"]
S2_10, S2_20, S2_60 = "S2L2A_B02_B03_B04_B08", "S2L2A_B05_B06_B07_B11_B12_B8A", "S2L2A_B01_B09"
CLEAR = "S2B_MSIL2A_20220621T100400_R108_main"
CLOUDY = "S2B_MSIL2A_20211014T100400_R108_main"


@pytest.fixture(scope="module")
def local_out(stac_api_world: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gapfill") / "local"
    proc = run_cli("gapfill", "--stac-url", stac_api_world.url, "--output", str(out), *COMMON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _raw(href: str, bounds: tuple[float, float, float, float]) -> np.ndarray:
    path = href.removeprefix("file://")
    with rasterio.open(path) as src:
        return src.read(1, window=from_bounds(*bounds, transform=src.transform)).astype(np.float64)


def test_observed_pixels_are_the_cog_values_and_the_mask_marks_exactly_the_filled_ones(
        local_out: Path, small_world_dir: Path) -> None:
    raw_items = {d["id"]: d for d in items(small_world_dir, "sentinel-2-l2a")}
    checked = filled_seen = 0
    for cube in sorted(local_out.glob("*.zarr")):
        item = describe_item(raw_items[cube.name.removesuffix(".zarr")])
        spec = load_spec(str(cube))
        for win in spec.windows:
            assert win.epsg == item.epsg, "the test needs exact (same-CRS) reads"
            scl = _raw(item.band("SCL").href, win.bounds)
            sky20 = np.isin(scl, sorted(SCL_MISSING))
            for key, gsd, bands in ((S2_10, 10, ("B04", "B03", "B02", "B08")),
                                    (S2_20, 20, ("B05", "B06", "B07", "B8A", "B11", "B12"))):
                dn = np.stack([_raw(item.band(b).href, win.bounds) for b in bands])
                vm = [item.band(b).value_map for b in bands]
                expect = np.stack([dn[c] * (vm[c].scale * 1e4) + vm[c].offset * 1e4 for c in range(len(bands))])
                expect = np.where(dn == 0, np.nan, expect).astype(np.float32)
                sky = np.repeat(np.repeat(sky20, 2, 0), 2, 1) if gsd == 10 else sky20
                missing = sky | (dn == 0).any(axis=0) | (expect >= 64535).any(axis=0)
                filled = read_filled(str(cube), win.key, key)
                assert np.array_equal(filled, missing.astype(np.uint8)), (cube.name, win.key, key)
                values = read_window(str(cube), win.key, key, 0)
                for m in range(values.shape[0]):
                    assert np.array_equal(values[m][:, ~missing].view(np.uint32),
                                          expect[:, ~missing].view(np.uint32))
                    assert np.isfinite(values[m][:, missing]).all()
                checked += int((~missing).sum())
                filled_seen += int(missing.sum())
    assert checked > 100_000 and filled_seen > 100, "the scenes must hold both observed and cloudy pixels"


def test_report_state_and_provenance_say_what_was_done(local_out: Path) -> None:
    report = json.loads(Path(f"{local_out}.report.json").read_text())
    assert report["ok"] and report["planned"] == report["done"] == 4
    assert report["counters"]["acquisitions_processed"] == 2
    assert report["counters"]["windows_copied"] == 2 and report["counters"]["windows_gapfilled"] == 2
    state = read_state(str(local_out))
    assert sorted(state["acquisitions"]) == [CLOUDY, CLEAR]
    assert all(a["item_hash"].startswith("sha256:") for a in state["acquisitions"].values())
    records = [json.loads(p.read_text()) for p in (local_out / f"{CLOUDY}.zarr" / "_ledger" / "done").glob("*.json")]
    for rec in records:
        prov = rec["provenance"]
        assert prov["mode"] == "gapfilled" and prov["acquisition"] == CLOUDY
        assert prov["inpainted"] == [S2_60, S2_10, S2_20]
        assert {"DEM_DEM", "LULC_LULC", "S1RTC_vh_vv", "3d_cartesian_lat_lon"} <= set(prov["conditioning"])
        assert prov["source_items"][S2_10] == [CLOUDY] and 0 < prov["filled_fraction"][S2_10] < 0.2
        # the temporal prior: the period's other acquisition, read and used from prior_start 0.1
        assert prov["prior_acquisitions"] == [CLEAR] and prov["sampler"]["prior_start"] == 0.1
    clear = json.loads(next((local_out / f"{CLEAR}.zarr" / "_ledger" / "done").glob("*.json")).read_text())
    assert clear["provenance"]["mode"] == "copied" and clear["provenance"]["model_hash"] is None
    stats = read_window(str(local_out / f"{CLEAR}.zarr"), load_spec(str(local_out / f"{CLEAR}.zarr")).windows[0].key,
                        f"{S2_10}__std", 0)
    assert (stats == 0).all(), "a copied window has no spread"


@pytest.mark.parametrize("engine", ["dask", "beam"])
def test_engines_write_the_same_bytes(engine: str, stac_api_world: Any, local_out: Path, tmp_path: Path) -> None:
    out = tmp_path / engine
    proc = run_cli("gapfill", "--stac-url", stac_api_world.url, "--output", str(out), "--engine", engine,
                      "--workers", "2", "--batch-size", "1", *COMMON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for cube in local_out.glob("*.zarr"):
        assert data_digests(out / cube.name) == data_digests(cube)


def _cfg(url: str, out: Path, **kw: Any) -> GapfillConfig:
    west, south, east, north = (float(v) for v in BBOX.split(","))
    return GapfillConfig(stac_url=url, bbox=(west, south, east, north), start="2021-10-01", end="2022-07-31",
                         output=str(out), model="random:tiny", members=2, steps=2, since="last", **kw)


def _write_items(world: Path, collection: str, docs: list[dict[str, Any]]) -> None:
    (world / "stac" / "items" / f"{collection}.ndjson").write_text("".join(json.dumps(d) + "\n" for d in docs))


def test_since_last_processes_exactly_the_new_and_updated_acquisitions(
        services: Any, small_world_dir: Path, tmp_path: Path) -> None:
    world = copy_world(small_world_dir, tmp_path / "world")
    l2a = items(world, "sentinel-2-l2a")
    cloudy = next(d for d in l2a if d["id"] == CLOUDY)
    for band in ("B01", "B09"):  # the 60 m group is absent from this item: band infilling
        del cloudy["assets"][band]
    _write_items(world, "sentinel-2-l2a", l2a)
    api = services.stac_api(load=world)
    out = tmp_path / "out"

    first = run_gapfill(_cfg(api.url, out), progress=False)
    assert first.ok and first.counters["acquisitions_processed"] == 2 and first.done == 4
    hashes = {k: v["item_hash"] for k, v in read_state(str(out))["acquisitions"].items()}
    for win in load_spec(str(out / f"{CLOUDY}.zarr")).windows:
        assert (read_filled(str(out / f"{CLOUDY}.zarr"), win.key, S2_60) == 1).all()
        assert np.isfinite(read_window(str(out / f"{CLOUDY}.zarr"), win.key, S2_60, 0)).all()
        rec = json.loads((out / f"{CLOUDY}.zarr" / "_ledger" / "done" / f"{win.key}__t0.json").read_text())
        assert rec["provenance"]["generated"] == [S2_60]

    before = {c.name: data_digests(c) for c in out.glob("*.zarr")}
    again = run_gapfill(_cfg(api.url, out), progress=False)
    assert again.ok and again.counters["acquisitions_processed"] == 0 and again.planned == again.done == 0
    assert again.counters["acquisitions_unchanged"] == 2
    assert {c.name: data_digests(c) for c in out.glob("*.zarr")} == before

    clear = next(d for d in l2a if d["id"] == CLEAR)
    new = json.loads(json.dumps(clear))  # a new acquisition (same rasters, new id and date)
    new["id"] = CLEAR.replace("20220621", "20220701")
    new["properties"]["datetime"] = "2022-07-01T10:04:00Z"
    updated = json.loads(json.dumps(cloudy))
    updated["properties"]["eo:cloud_cover"] = 0.5  # a reprocessed item: same id, new content
    _write_items(world, "sentinel-2-l2a", [updated if d["id"] == CLOUDY else d for d in l2a] + [new])
    api.load(world)

    third = run_gapfill(_cfg(api.url, out), progress=False)
    assert third.ok, third.failed
    state = read_state(str(out))
    assert sorted(state["last_run"]["processed"]) == sorted([new["id"], CLOUDY])
    assert third.counters["acquisitions_processed"] == 2 and third.counters["acquisitions_unchanged"] == 1
    assert third.done == 4 and third.skipped == 0, "the updated item's cube is redone, the new one written"
    assert data_digests(out / f"{CLEAR}.zarr") == before[f"{CLEAR}.zarr"]
    data = {k: v for k, v in chunk_digests(out / f"{CLOUDY}.zarr").items() if "/provenance/" not in k}
    assert data == {k: v for k, v in before[f"{CLOUDY}.zarr"].items() if "/c/" in k and "/provenance/" not in k}
    assert state["acquisitions"][CLOUDY]["item_hash"] != hashes[CLOUDY]
    assert state["acquisitions"][CLEAR]["item_hash"] == hashes[CLEAR]
    assert (out / f"{new['id']}.zarr").is_dir()

    fourth = run_gapfill(_cfg(api.url, out), progress=False)
    assert fourth.ok and fourth.counters["acquisitions_processed"] == 0 and fourth.planned == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--conditions", "s2l2a_10m"], "gap-filled modalities"),
    (["--since", "yesterday"], "since"),
    (["--bbox", "7,46,6,47"], "bbox"),
    (["--resample", "3"], "do not combine"),  # RePaint resampling with the (default) temporal prior
    (["--prior-start", "0"], "prior_start"),
])
def test_bad_requests_exit_2_and_write_nothing(args: list[str], message: str, stac_api_world: Any,
                                               tmp_path: Path) -> None:
    out = tmp_path / "bad"
    base = {"--bbox": BBOX, "--start": "2021-10-01"}
    extra = [v for flag, value in base.items() if flag not in args for v in (flag, value)]
    proc = run_cli("gapfill", "--stac-url", stac_api_world.url, "--output", str(out), "--model", "random:tiny",
                      *args, *extra)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert message in proc.stderr
    assert not out.exists()


def test_a_damaged_state_exits_2_before_any_write(stac_api_world: Any, tmp_path: Path) -> None:
    out = tmp_path / "damaged"
    (out / "_runs").mkdir(parents=True)
    (out / "_runs" / "state.json").write_text("{")
    proc = run_cli("gapfill", "--stac-url", stac_api_world.url, "--output", str(out), *COMMON)
    assert proc.returncode == 2 and "delete it" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["_runs"]


def test_changed_settings_on_an_existing_output_exit_2(stac_api_world: Any, local_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(local_out, out)
    (out / "_runs" / "state.json").unlink()
    proc = run_cli("gapfill", "--stac-url", stac_api_world.url, "--output", str(out), "--bbox", BBOX, *PERIOD,
                      "--model", "random:tiny", "--members", "3", "--steps", "2", "--quiet")
    assert proc.returncode == 2 and "new --output" in proc.stderr, proc.stderr[-2000:]


def test_unreachable_catalog_exits_3(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    cfg = tmp_path / "job.yaml"
    cfg.write_text(f"stac_url: http://127.0.0.1:{port}\nbbox: [{BBOX}]\nstart: 2021-10-01\nretries: 0\n"
                   "model: random:tiny\n")
    proc = run_cli("gapfill", "--config", str(cfg), "--output", str(tmp_path / "out"))
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert f"127.0.0.1:{port}" in proc.stderr
    assert not (tmp_path / "out").exists()
