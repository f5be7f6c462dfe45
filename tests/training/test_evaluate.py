"""``copgen evaluate`` and ``transforms.evaluation``: held-out windows, metric bookkeeping, the report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from copgen_core.modalities import BY_KEY
from tests.paths import REPO
from transforms.dataset import CubeDataset, split_of
from transforms.evaluation import (
    DEFAULT_EXPERIMENTS,
    UNCONDITIONAL,
    ClassMapScores,
    ExperimentRun,
    ImageScores,
    ScalarScores,
    complete_tiles,
    cube_seam_ratios,
    held_out_units,
    mae_ratios,
)
from transforms.tiles import Tile, WorkUnit
from transforms.windows import WindowKey, iter_grid

S2_60 = "S2L2A_B01_B09"
LULC = "LULC_LULC"
T0 = datetime(2022, 6, 21, tzinfo=UTC)


def copgen(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """A copgen subcommand's module in a fresh process, as ``copgen <command>`` runs it."""
    return subprocess.run([sys.executable, "-m", f"pipelines.{module}", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def units_of(windows: list[Any]) -> list[WorkUnit]:
    return [WorkUnit(w, 0, T0, ()) for w in windows]


def test_held_out_units_are_the_windows_training_never_saw(tiny_cube: str) -> None:
    windows = list(iter_grid(32632, range(2600, 2603), range(150, 153)))
    val = held_out_units(units_of(windows), split="val", val_fraction=0.3, split_seed=42)
    train = held_out_units(units_of(windows), split="train", val_fraction=0.3, split_seed=42)
    assert {u.key for u in val} == {w.key for w in windows if split_of(w.key, 0.3, 42) == "val"}
    assert {u.key for u in val}.isdisjoint({u.key for u in train})
    assert len(val) + len(train) == len(windows) == len(held_out_units(units_of(windows), split="all"))
    # the training dataset of the same cube and split holds exactly the complementary windows
    trained_on = {r.key for r in CubeDataset(tiny_cube, [S2_60], split="train", val_fraction=0.3).refs}
    assert trained_on and trained_on.isdisjoint({u.key for u in val})
    with pytest.raises(ValueError, match="unknown split"):
        held_out_units([], split="test")  # type: ignore[arg-type]


def test_complete_tiles_keeps_only_tiles_with_every_modality_whole() -> None:
    windows = list(iter_grid(32632, range(2600, 2601), range(150, 153)))
    whole, holed, lacking = (Tile(u) for u in units_of(windows))
    for tile in (whole, holed, lacking):
        tile.arrays[S2_60] = np.ones((2, 32, 32), np.float32)
        tile.valid[S2_60] = np.ones((32, 32), bool)
    holed.valid[S2_60][0, 0] = False
    for tile in (whole, holed):
        tile.arrays["DEM_DEM"] = np.ones((1, 64, 64), np.float32)
    kept, skipped = complete_tiles([whole, holed, lacking], ["DEM_DEM", S2_60, "mean_timestamps"])
    assert kept == [whole]
    assert skipped == {"incomplete S2L2A_B01_B09": 1, "missing DEM_DEM": 1}


def _s2(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(500, 4000, size=shape).astype(np.float32)


def test_image_scores_of_a_perfect_ensemble() -> None:
    truth = _s2(np.random.default_rng(0), (2, 2, 32, 32))
    scores = ImageScores(BY_KEY[S2_60], members=3)
    scores.update(np.repeat(truth[:, None], 3, axis=1), truth)
    out = scores.result()
    for band in ("B01", "B09", "all"):
        v = out["bands"][band] if band != "all" else out["all_bands"]
        zero = pytest.approx(0.0, abs=1e-12)
        assert v["member"]["mae"] == zero and v["ensemble_mean"]["rmse"] == zero and v["best_of_n"]["mae"] == zero
        assert v["member"]["ssim"] == pytest.approx(1.0) and math.isinf(v["member"]["psnr"])
        assert v["ensemble"]["crps"] == zero and v["ensemble"]["spread"] == zero
        assert v["ensemble"]["coverage_90"] == 1


def test_image_scores_are_consistent_and_do_not_depend_on_chunking() -> None:
    rng = np.random.default_rng(1)
    truth = _s2(rng, (4, 2, 32, 32))
    # truth and members exchangeable: members scatter by sigma around a centre the truth is one draw from
    centre = truth - rng.normal(0, 300, size=truth.shape)
    ensemble = (centre[:, None] + rng.normal(0, 300, size=(4, 5, 2, 32, 32))).astype(np.float32)
    lulc = rng.choice([1, 2, 5, 7], size=(4, 1, 192, 192)).astype(np.int64)
    whole, chunked = ImageScores(BY_KEY[S2_60], 5), ImageScores(BY_KEY[S2_60], 5)
    whole.update(ensemble, truth, lulc)
    chunked.update(ensemble[:1], truth[:1], lulc[:1])
    chunked.update(ensemble[1:], truth[1:], lulc[1:])
    a, b = whole.result(), chunked.result()
    spectra_a, spectra_b = a.pop("class_spectra"), b.pop("class_spectra")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert _finite_numbers(spectra_a) == pytest.approx(_finite_numbers(spectra_b), rel=1e-12)
    a["class_spectra"] = spectra_a
    assert a["samples"] == 4 and a["units"] == "reflectance"
    for v in [*a["bands"].values(), a["all_bands"]]:
        assert v["best_of_n"]["mae"] <= v["member"]["mae"]
        assert v["ensemble_mean"]["mae"] <= v["member"]["mae"]  # |mean - y| <= mean |x - y|
        assert v["best_of_n"]["ssim"] >= v["member"]["ssim"]
        assert 0 <= v["ensemble"]["coverage_90"] <= 1
        assert 0 < v["ensemble"]["crps_fair"] < v["ensemble"]["crps"] < v["member"]["mae"]
        assert 0.8 < v["ensemble"]["spread_skill"] < 1.2  # calibrated by construction
    spectra = a["class_spectra"]
    assert {c["code"] for c in spectra["classes"].values()} == {1, 2, 5, 7}
    assert 0 <= spectra["mean_relative_error"] < 0.05  # unbiased noise: class means agree


def test_class_and_scalar_scores() -> None:
    rng = np.random.default_rng(2)
    truth = rng.choice([1, 2, 5, 11], size=(2, 1, 192, 192)).astype(np.float32)
    perfect = ClassMapScores(BY_KEY[LULC], 2)
    perfect.update(np.repeat(truth[:, None].astype(np.int64), 2, axis=1), truth)
    p = perfect.result()
    assert p["member"]["accuracy"] == p["ensemble_mode"]["accuracy"] == p["best_of_n"]["accuracy"] == 1.0
    assert p["member"]["miou"] == 1.0
    noisy = ClassMapScores(BY_KEY[LULC], 3)
    guess = rng.choice([1, 2, 5, 11], size=(2, 3, 1, 192, 192))
    noisy.update(guess, truth)
    n = noisy.result()
    assert 0 < n["member"]["accuracy"] <= n["best_of_n"]["accuracy"] < 1

    where = ScalarScores(BY_KEY["3d_cartesian_lat_lon"], 2)
    where.update(np.array([[[46.0, 6.0], [47.0, 6.0]]]), np.array([[46.0, 6.0]]))
    w = where.result()
    assert w["best_of_n"]["mean_error"] == 0 and w["member"]["mean_error"] == pytest.approx(111.19 / 2, abs=0.05)
    when = ScalarScores(BY_KEY["mean_timestamps"], 2)
    when.update(np.array([[[21, 6, 2022], [1, 7, 2022]]]), np.array([[2022, 6, 21]]))  # dmy vs ymd
    assert when.result()["member"]["mean_error"] == 5.0 and when.result()["best_of_n"]["mean_error"] == 0


def test_mae_ratios_compare_each_experiment_with_the_unconditional_one() -> None:
    rng = np.random.default_rng(3)
    truth = _s2(rng, (2, 2, 32, 32))
    runs = {}
    for name, noise in (("close", 50.0), (UNCONDITIONAL, 500.0)):
        s = ImageScores(BY_KEY[S2_60], 2)
        s.update(truth[:, None] + rng.normal(0, noise, (2, 2, 2, 32, 32)), truth)
        runs[name] = ExperimentRun(DEFAULT_EXPERIMENTS[0], scores={S2_60: s.result()})
    ratios = mae_ratios(runs)
    assert set(ratios) == {"close"}
    r = ratios["close"][S2_60]
    assert 0.05 < r["all_bands"] < 0.2 and set(r["bands"]) == {"B01", "B09"}
    assert mae_ratios({"close": runs["close"]}) == {}


def test_cube_seam_ratio_sees_window_borders(tmp_path: Path) -> None:
    from transforms.cube import CubeSpec, create_cube, write_window

    windows = tuple(iter_grid(32632, range(2600, 2602), range(150, 152)))
    for name, jump in (("smooth", 0.0), ("seams", 400.0)):
        spec = CubeSpec(url=str(tmp_path / f"{name}.zarr"), modalities=(S2_60,), windows=windows, times=(T0,),
                        members=2, stats=True)
        create_cube(spec)
        for w in windows:
            x = (w.x0 + 60.0 * (np.arange(32) + 0.5))[None, :]
            y = (w.y_top - 60.0 * (np.arange(32) + 0.5))[:, None]
            field = 1000.0 + 0.05 * (x - 288000.0) + 0.03 * (y - 4990000.0)
            step = jump * ((w.key.row + w.key.col) % 2)
            member = np.broadcast_to(field + step, (2, 32, 32)).astype(np.float32)
            write_window(spec, w.key, 0, {S2_60: np.stack([member, member], axis=1)}, {"window": str(w.key)})
        ratios = cube_seam_ratios(spec.url)
        (key, value), = ratios.items()
        assert key.endswith(S2_60) and set(value["bands"]) == {"B01", "B09"}
        if jump == 0:
            assert value["seam_ratio"] == pytest.approx(1.0, abs=0.05)
        else:
            assert value["seam_ratio"] > 20


def _finite_numbers(node: Any) -> list[float]:
    if isinstance(node, dict):
        return [v for x in node.values() for v in _finite_numbers(x)]
    if isinstance(node, list):
        return [v for x in node for v in _finite_numbers(x)]
    return [node] if isinstance(node, float) else []


@pytest.mark.slow
def test_evaluate_scores_a_model_on_held_out_windows(stac_api_world: Any, small_world: Any, small_world_dir: Path,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    proc = copgen("cmd_evaluate", "--model", "random:tiny", "--stac-url", stac_api_world.url,
                  "--world", str(small_world_dir),  # every scene and S2 date of the world
                  "--experiments", f"s2l2a_from_static,{UNCONDITIONAL},lulc_latlon_date_from_s2l2a",
                  "--members", "3", "--steps", "1", "--max-samples", "2", "--guidance", "1.5", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ensemble-mean MAE, conditional / unconditional" in proc.stdout
    report = json.loads(out.read_text())
    assert report["settings"]["guidance"] == 1.5
    assert report["split"] == {"split": "val", "val_fraction": 0.1, "split_seed": 42}
    data = report["data"]
    assert len(data["bboxes"]) == len(small_world.scenes)
    assert (data["start"], data["end"]) == (small_world.dates["sentinel-2-l2a"][0][:10],
                                            small_world.dates["sentinel-2-l2a"][-1][:10])
    assert 1 <= data["evaluated"] <= 2 and data["held_out_samples"] < data["planned_samples"]
    assert all(split_of(WindowKey.parse(k), 0.1, 42) == "val" for k in data["held_out_windows"])
    exps = report["experiments"]
    assert set(exps) == {"s2l2a_from_static", UNCONDITIONAL, "lulc_latlon_date_from_s2l2a"}
    for entry in (exps["s2l2a_from_static"], exps[UNCONDITIONAL]):
        assert entry["samples"] == data["evaluated"]
        assert set(entry["scores"]) == {"S2L2A_B02_B03_B04_B08", "S2L2A_B05_B06_B07_B11_B12_B8A", S2_60}
        for target in entry["scores"].values():
            for v in [*target["bands"].values(), target["all_bands"]]:
                numbers = _finite_numbers(v)
                assert len(numbers) == 17 and all(math.isfinite(x) for x in numbers)  # 16 + calibrated coverage
                assert v["best_of_n"]["mae"] <= v["member"]["mae"] + 1e-12
                assert 0 <= v["ensemble"]["coverage_90"] <= 1
            assert target["class_spectra"]["classes"]
    classes = exps["lulc_latlon_date_from_s2l2a"]["scores"]
    assert 0 <= classes[LULC]["member"]["accuracy"] <= classes[LULC]["best_of_n"]["accuracy"] <= 1
    assert classes["3d_cartesian_lat_lon"]["units"] == "km" and classes["mean_timestamps"]["units"] == "days"
    ratio = report["mae_ratio_vs_unconditional"]["s2l2a_from_static"]["S2L2A_B02_B03_B04_B08"]
    assert ratio["all_bands"] > 0 and set(ratio["bands"]) == {"B04", "B03", "B02", "B08"}
    # every image modality the tiles hold gets a VAE encode-decode score
    vae = report["vae_reconstruction"]
    assert {"S2L2A_B02_B03_B04_B08", "DEM_DEM", LULC} <= set(vae)
    s2 = vae["S2L2A_B02_B03_B04_B08"]
    assert s2["samples"] == data["evaluated"] and math.isfinite(s2["all_bands"]["member"]["psnr"])
    assert math.isfinite(s2["psnr_normalised"]) and 0 <= vae[LULC]["member"]["accuracy"] <= 1
    assert "class_spectra" not in vae["DEM_DEM"]  # per-class spectra for S2 / S1 only
    assert s2["class_spectra"]["classes"] and math.isfinite(s2["class_spectra"]["mean_relative_error"])
    assert "reconstructed vs real" in proc.stdout
    cov = entry["scores"][S2_60]["all_bands"]["ensemble"]
    assert cov["coverage_90_calibrated"] == pytest.approx(0.9 * (3 - 1) / (3 + 1))  # --members 3
    assert "VAE reconstruction" in proc.stdout
    assert "information_ladder" not in report  # the +S1 / +L1C experiments did not run


@pytest.mark.slow
def test_evaluate_without_a_held_out_sample_exits_2(stac_api_world: Any) -> None:
    proc = copgen("cmd_evaluate", "--model", "random:tiny", "--stac-url", stac_api_world.url,
                  "--bbox", "20.0,40.0,20.02,40.02", "--start", "2022-06-21")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no 'val' sample" in proc.stderr
