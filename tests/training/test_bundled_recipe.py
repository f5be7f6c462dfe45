"""``copgen train-bundled``: the one-command recipe of the bundled model (plan, guards, smoke run, resume)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from pipelines.cmd_train_bundled import (
    IMAGE_KEYS,
    MAX_BUNDLE_BYTES,
    STAGES,
    command,
    preprocess_config,
    recipe_plan,
    vae_jobs,
)
from tests.paths import REPO
from tests.pipelines.helpers import main_area_bbox, run_cli


def copgen(module: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """A copgen subcommand's module in a fresh process, as ``copgen <command>`` runs it."""
    return subprocess.run([sys.executable, "-m", f"pipelines.{module}", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def default_world_manifest() -> Any:
    """What the recipe reads from the default world's manifest, from its plan alone (nothing generated)."""
    from sampleworld import plan_world

    plan = plan_world(preset="default")
    return SimpleNamespace(preset="default", scenes=[{"bbox": list(s.bbox_lonlat())} for s in plan.scenes],
                           dates={"sentinel-2-l2a": list(plan.dates("sentinel-2-l2a"))})


def test_training_cube_covers_every_scene_date_and_image_modality() -> None:
    manifest = default_world_manifest()
    cfg = preprocess_config(manifest, "http://127.0.0.1:1", Path("/tmp/train.zarr"))
    assert len(cfg.bboxes) == len(manifest.scenes) == 9
    assert [v for b in cfg.bboxes for v in b] == pytest.approx([v for s in manifest.scenes for v in s["bbox"]])
    dates = manifest.dates["sentinel-2-l2a"]
    assert (str(cfg.start), str(cfg.end)) == (min(dates), max(dates))
    assert tuple(cfg.modalities) == IMAGE_KEYS and len(IMAGE_KEYS) == 10
    assert cfg.overlap_m == 0  # training needs whole windows


def test_default_recipe_is_planned_to_fit_an_hour_on_the_development_cpu() -> None:
    manifest = default_world_manifest()
    cfg = preprocess_config(manifest, "http://127.0.0.1:1", Path("/tmp/train.zarr"))
    units, plan = recipe_plan(manifest, cfg, vae_jobs(IMAGE_KEYS, None, None), world_cached=False)
    assert units > 500
    assert set(plan) == set(STAGES)
    assert sum(plan.values()) <= 60 * 60
    assert set(sorted(plan, key=lambda k: plan[k])[-2:]) == {"vaes", "backbone"}  # training dominates


def test_a_backbone_run_is_continued_only_when_it_differs_in_step_count() -> None:
    from pipelines.cmd_train_bundled import _same_but_steps, backbone_arguments

    def identity(steps: int, **extra: Any) -> dict[str, Any]:
        return {"cache": {"vaes": "x"}, "steps": steps, "batch_size": 8, "seed": 0,
                "settings": [a for a in backbone_arguments(steps) if a not in ("--lr-decay", "poly")], **extra}

    def decayed(steps: int) -> dict[str, Any]:
        return {**identity(steps), "settings": backbone_arguments(steps)}

    assert "--lr-decay" in backbone_arguments(2000)  # the recipe decays its rate ...
    assert not _same_but_steps(decayed(2000), decayed(1000))  # ... so its runs are tied to their length
    assert not _same_but_steps(identity(2000), decayed(2000 + 1))
    assert _same_but_steps(identity(2000), identity(1000))
    assert _same_but_steps(identity(1000), identity(4000))
    assert not _same_but_steps(identity(2000), identity(1000, seed=1))
    assert not _same_but_steps(identity(2000), identity(50))  # inside the warm-up: another schedule
    assert not _same_but_steps(None, identity(1000))


def test_vae_budget_follows_pixel_size_and_flags_override_it() -> None:
    jobs = vae_jobs(IMAGE_KEYS, None, None)
    assert len(jobs) == 10
    by_key = {j.key: j for j in jobs}
    # 192 px VAEs: crops first, then whole windows at a smaller batch; the L2A 10 m VAE gets the most
    s2 = by_key["S2L2A_B02_B03_B04_B08"]
    assert [p.crop for p in s2.phases] == [64, None] and s2.phases[1].batch_size < s2.phases[0].batch_size
    assert all(p.crop is None for p in by_key["S2L2A_B01_B09"].phases + by_key["DEM_DEM"].phases)
    assert jobs[0].key == "S2L2A_B02_B03_B04_B08"
    assert [j.estimate_s for j in jobs] == sorted((j.estimate_s for j in jobs), reverse=True)  # longest first
    assert {(p.steps, p.batch_size) for j in vae_jobs(IMAGE_KEYS, 3, 2) for p in j.phases} == {(3, 2)}


@pytest.mark.parametrize("flags, message", [
    (["--modalities", "latlon"], "image modalities"),
    (["--modalities", "s2l2a_5m"], "unknown modality"),
])
def test_bad_modalities_exit_2_before_anything_runs(tmp_path: Path, flags: list[str], message: str) -> None:
    result = CliRunner().invoke(command, ["--out", str(tmp_path / "b"), "--work", str(tmp_path / "w"), *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "w").exists()


def test_an_out_that_is_not_a_recipe_bundle_is_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(command, ["--out", str(out), "--work", str(tmp_path / "w")])
    assert result.exit_code == 2, result.output
    assert "not a bundle written by train-bundled" in result.output
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_smoke_run_writes_a_small_fp16_bundle_that_loads_generates_and_resumes(
        stac_api_world: Any, small_world: Any, small_world_dir: Path, tmp_path: Path) -> None:
    from copgen_core.bundle import load_model
    from transforms.cube import load_spec

    out, work = tmp_path / "bundle", tmp_path / "work"
    args = ["--out", str(out), "--world", str(small_world_dir), "--preset", "small", "--work", str(work),
            "--modalities", "dem,s2l2a_60m", "--vae-steps", "2", "--vae-batch-size", "2", "--backbone-steps", "2",
            "--batch-size", "2", "--stac-url", stac_api_world.url]
    proc = copgen("cmd_train_bundled", *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "time plan" in proc.stdout and "MB (limit 30 MB)" in proc.stdout

    meta = json.loads((out / "bundle.json").read_text())
    assert meta["command"].startswith("copgen train-bundled") and "--backbone-steps 2" in meta["command"]
    assert meta["seed"] == 0 and meta["steps"] == 2 and meta["weights_dtype"] == "float16"
    assert meta["data"]["cube_spec_hash"] == load_spec(str(work / "train.zarr")).spec_hash
    assert meta["data"]["world"]["preset"] == "small" and meta["data"]["samples"] >= 1
    assert set(meta["recipe"]["stage_seconds"]) == set(STAGES) - {"bundle"}
    assert {k: v["steps"] for k, v in meta["recipe"]["vaes"].items()} == {"DEM_DEM": 2, "S2L2A_B01_B09": 2}
    assert meta["recipe"]["backbone_training"]["config"]["modality_dropout"] > 0
    assert meta["recipe"]["backbone_training"]["config"]["condition_dropout"] > 0
    assert 0 < meta["size_bytes"] <= MAX_BUNDLE_BYTES
    assert json.loads((out / "backbone" / "config.json").read_text())["dtype"] == "float16"
    assert load_model(str(out)).modalities == ("3d_cartesian_lat_lon", "DEM_DEM", "S2L2A_B01_B09", "mean_timestamps")

    day = small_world.dates["sentinel-2-l2a"][-1][:10]
    gen = run_cli("generate", "--model", str(out), "--stac-url", stac_api_world.url,
                  "--bbox", main_area_bbox(small_world, 0.3), "--start", day, "--conditions", "dem,latlon,date",
                  "--targets", "s2l2a_60m", "--members", "1", "--steps", "2", "--output", str(tmp_path / "gen.zarr"),
                  "--quiet")
    assert gen.returncode == 0, gen.stderr[-3000:]

    before = (out / "bundle.json").read_bytes()
    again = copgen("cmd_train_bundled", *args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    skipped = [line.split("]")[0] for line in again.stdout.splitlines() if line.startswith("[") and "skipped" in line]
    assert skipped == ["[preprocess", "[vaes", "[cache", "[backbone", "[bundle"]
    assert "[vaes]\n" not in again.stdout and (out / "bundle.json").read_bytes() == before

    # only the decoders' synthesis is refitted: the backbone and every encoder weight stay the same bytes
    from safetensors.torch import load_file

    def weights(key: str) -> dict[str, Any]:
        return load_file(str(out / "vae" / key / "model.safetensors"))

    old = {k: weights(k) for k in ("DEM_DEM", "S2L2A_B01_B09")}
    backbone_before = (out / "backbone" / "model.safetensors").read_bytes()
    same = copgen("cmd_train_bundled", *args, "--decoders-only")  # the bundle has the current settings
    assert same.returncode == 0 and "0 VAE decoder(s) changed" in same.stdout, same.stdout[-3000:]
    assert (out / "bundle.json").read_bytes() == before
    meta = json.loads((out / "bundle.json").read_text())
    meta["recipe"]["synthesis_refit"]["smooth"] = 0.05  # a bundle refitted with an older setting
    (out / "bundle.json").write_text(json.dumps(meta))
    refit = copgen("cmd_train_bundled", *args, "--decoders-only")
    assert refit.returncode == 0, refit.stdout[-3000:] + refit.stderr[-3000:]
    assert "2 VAE decoder(s) changed" in refit.stdout
    assert (out / "backbone" / "model.safetensors").read_bytes() == backbone_before
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["data"]["cube_content_hash"] == load_spec(str(work / "train.zarr")).content_hash
    for key, before_w in old.items():
        after_w = weights(key)
        changed = {n for n in before_w if not torch.equal(before_w[n], after_w[n])}
        assert changed <= {"shortcut_out.weight", "shortcut_out.bias"}, changed
        assert meta["recipe"]["vaes"][key]["edge_weight"] >= 1.0
        assert 0 < meta["recipe"]["vaes"][key]["noise_edge_ratio"]

    missing = copgen("cmd_train_bundled", *args[:6], "--work", str(tmp_path / "nowhere"), "--decoders-only")
    assert missing.returncode == 2 and "--until preprocess" in missing.stderr

    # --backbone-only: a new backbone from the same VAE weights, whose scale factors move to LATENT_STD
    from pipelines.cmd_train_bundled import LATENT_STD

    meta = json.loads((out / "bundle.json").read_text())
    meta["config"]["latent_std"] = 1.0  # a bundle of the recipe before LATENT_STD
    (out / "bundle.json").write_text(json.dumps(meta))
    scales = {k: json.loads((out / "vae" / k / "config.json").read_text())["scale_factor"] for k in old}
    vae_weights = {k: weights(k) for k in old}
    redo = copgen("cmd_train_bundled", *args, "--backbone-steps", "3", "--backbone-only")
    assert redo.returncode == 0, redo.stdout[-3000:] + redo.stderr[-3000:]
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["steps"] == 3 and meta["config"]["latent_std"] == LATENT_STD
    assert meta["recipe"]["backbone_only"]["identity"]["steps"] == 3
    assert meta["recipe"]["backbone_training"]["steps"] == 3
    assert (out / "backbone" / "model.safetensors").read_bytes() != backbone_before
    for key, before_w in vae_weights.items():
        assert all(torch.equal(before_w[n], w) for n, w in weights(key).items())
        scale = json.loads((out / "vae" / key / "config.json").read_text())["scale_factor"]
        assert scale == pytest.approx(scales[key] * LATENT_STD)
    model = load_model(str(out))
    assert model.vae("DEM_DEM").scale_factor == pytest.approx(scales["DEM_DEM"] * LATENT_STD)
    after = (out / "bundle.json").read_bytes()
    again = copgen("cmd_train_bundled", *args, "--backbone-steps", "3", "--backbone-only")
    assert again.returncode == 0 and "already has the current backbone settings" in again.stdout
    assert (out / "bundle.json").read_bytes() == after
    both = copgen("cmd_train_bundled", *args, "--backbone-only", "--decoders-only")
    assert both.returncode == 2 and "not both" in both.stderr
