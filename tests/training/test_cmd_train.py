"""``copgen train-vae`` and ``copgen train`` end to end on the tiny cube, incl. resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from copgen_core.bundle import load_model
from copgen_core.checkpoints import load_vae
from copgen_core.training.state import load_state
from pipelines.cmd_train import command as train
from pipelines.cmd_train_vae import command as train_vae
from tests.paths import REPO
from tests.training.conftest import DEM, S2_60

STEPS = 5


def invoke(cmd: object, args: list[str]) -> Result:
    return CliRunner().invoke(cmd, args, catch_exceptions=False)  # type: ignore[arg-type]


def backbone_args(cube: str, vaes: Path, out: Path, steps: int = STEPS) -> list[str]:
    return ["--cube", cube, "--vae-dir", str(vaes), "--steps", str(steps), "--batch-size", "2", "--out", str(out),
            "--seed", "3", "--warmup-steps", "2", "--ema-rate", "0.9", "--checkpoint-every", "1", "--log-every", "2",
            "--val-fraction", "0.3", "--val-batches", "1", "--modality-dropout", "0.1", "--condition-dropout", "0.1"]


@pytest.fixture(scope="module")
def vae_dir(tiny_cube: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vaes")
    for modality in ("s2l2a_60m", "dem"):
        result = invoke(train_vae, ["--cube", tiny_cube, "--modality", modality, "--steps", "2", "--batch-size", "2",
                                    "--out", str(out), "--val-fraction", "0.3", "--val-batches", "1",
                                    "--checkpoint-every", "2"])
        assert result.exit_code == 0, result.output
        assert "validation PSNR" in result.output
    return out


@pytest.fixture(scope="module")
def reference_run(tiny_cube: str, vae_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "reference"
    result = invoke(train, backbone_args(tiny_cube, vae_dir, out))
    assert result.exit_code == 0, result.output
    return out


def test_train_vae_writes_a_loadable_vae_with_provenance(vae_dir: Path) -> None:
    info = json.loads((vae_dir / S2_60 / "training.json").read_text())
    assert info["kind"] == "vae" and info["steps"] == 2 and info["config"]["kl_weight"] == 1e-6
    assert info["evaluation"]["psnr"] > 0 and info["data"]["split"] == "train"
    assert info["command"].startswith("copgen train-vae --cube")
    vae = load_vae(vae_dir / S2_60, S2_60)
    assert vae.scale_factor == pytest.approx(info["scale_factor"])
    state = load_state(vae_dir / S2_60 / "train_state.pt")
    assert state["opt"]["step"] == 2
    assert (state["data"]["micro_batches"], state["data"]["epoch"], state["data"]["epoch_offset"]) == (2, 0, 4)


def test_latent_std_scales_the_auto_scale_factor(tiny_cube: str, vae_dir: Path, tmp_path: Path) -> None:
    # the fixture's s2l2a_60m run again with --latent-std 0.5: same weights, half the scale factor
    result = invoke(train_vae, ["--cube", tiny_cube, "--modality", "s2l2a_60m", "--steps", "2", "--batch-size", "2",
                                "--out", str(tmp_path), "--val-fraction", "0.3", "--val-batches", "1",
                                "--checkpoint-every", "2", "--latent-std", "0.5"])
    assert result.exit_code == 0, result.output
    full, half = load_vae(vae_dir / S2_60, S2_60), load_vae(tmp_path / S2_60, S2_60)
    assert half.scale_factor == pytest.approx(0.5 * full.scale_factor, rel=1e-9)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), half.state_dict().values(), strict=True))
    info = json.loads((tmp_path / S2_60 / "training.json").read_text())
    assert info["latent_std"] == 0.5
    assert invoke(train_vae, ["--cube", tiny_cube, "--modality", "dem", "--steps", "1", "--out", str(tmp_path / "x"),
                              "--latent-std", "0"]).exit_code == 2


def test_train_vae_refuses_bad_input(tiny_cube: str, vae_dir: Path, tmp_path: Path) -> None:
    base = ["--cube", tiny_cube, "--steps", "1", "--out"]
    assert invoke(train_vae, [*base, str(tmp_path), "--modality", "latlon"]).exit_code == 2
    assert invoke(train_vae, [*base, str(tmp_path), "--modality", "dem", "--resume"]).exit_code == 2
    again = invoke(train_vae, [*base, str(vae_dir), "--modality", "dem"])
    assert again.exit_code == 2 and "--resume" in again.output


def test_train_vae_on_crops_then_fine_tune_from_its_weights(tiny_cube: str, vae_dir: Path, tmp_path: Path) -> None:
    base = ["--cube", tiny_cube, "--modality", "dem", "--batch-size", "2", "--val-fraction", "0.3",
            "--val-batches", "1", "--checkpoint-every", "5"]
    crops = invoke(train_vae, [*base, "--steps", "2", "--crop", "16", "--out", str(tmp_path / "crop")])
    assert crops.exit_code == 0, crops.output
    assert json.loads((tmp_path / "crop" / DEM / "training.json").read_text())["data"]["crop"] == 16
    # a fine-tune with a vanishing learning rate keeps the starting weights, not a fresh initialisation
    start = load_vae(tmp_path / "crop" / DEM, DEM)
    tuned = invoke(train_vae, [*base, "--steps", "1", "--lr", "1e-12", "--init-from", str(tmp_path / "crop" / DEM),
                               "--out", str(tmp_path / "tuned")])
    assert tuned.exit_code == 0, tuned.output
    info = json.loads((tmp_path / "tuned" / DEM / "training.json").read_text())
    assert info["data"]["init_from"] == str(tmp_path / "crop" / DEM) and info["data"]["crop"] is None
    after = load_vae(tmp_path / "tuned" / DEM, DEM).state_dict()
    assert all(torch.allclose(v, after[k], atol=1e-6) for k, v in start.state_dict().items())
    fresh = load_vae(vae_dir / DEM, DEM).state_dict()
    assert not all(torch.allclose(v, fresh[k], atol=1e-6) for k, v in start.state_dict().items())


def test_train_vae_refuses_bad_crops_and_foreign_starting_weights(tiny_cube: str, vae_dir: Path,
                                                                  tmp_path: Path) -> None:
    base = ["--cube", tiny_cube, "--modality", "dem", "--steps", "1", "--val-fraction", "0.3", "--out", str(tmp_path / "x")]
    bad_crop = invoke(train_vae, [*base, "--crop", "12"])
    assert bad_crop.exit_code == 2 and "multiple of 8" in bad_crop.output
    foreign = invoke(train_vae, [*base, "--init-from", str(vae_dir / S2_60)])
    assert foreign.exit_code == 2 and "--init-from" in foreign.output
    assert not (tmp_path / "x" / DEM / "model.safetensors").exists()


def test_train_with_ground_position_init_records_it(tiny_cube: str, vae_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ground"
    result = invoke(train, [*backbone_args(tiny_cube, vae_dir, out, steps=1), "--position-init", "ground"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "bundle.json").read_text())
    assert info["data"]["position_init"] == ["ground", 0.5]
    assert "--position-init ground" in info["command"]


def test_train_with_ground_heads_tasks_and_betas_records_and_reloads_them(tiny_cube: str, vae_dir: Path,
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "tasks"
    result = invoke(train, [*backbone_args(tiny_cube, vae_dir, out, steps=2), "--ground-heads", "2",
                            "--ground-sigma", "0.05", "--adam-betas", "0.9,0.99", "--task-fraction", "0.5",
                            "--task-targets", "s2l2a_60m", "--task-conditions", "dem,mean_timestamps",
                            "--task-conditions", ""])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "bundle.json").read_text())
    assert info["data"]["architecture"]["ground_heads"] == 2 and info["config"]["betas"] == [0.9, 0.99]
    assert info["config"]["task_targets"] == [S2_60]
    assert info["config"]["task_conditions"] == [[DEM, "mean_timestamps"], []]
    model = load_model(str(out))
    assert model.backbone.config.ground_heads == 2 and model.backbone.ground_bias is not None
    out_gen = model.generate({"dem": np.full((1, 1, 64, 64), 300.0)}, ["s2l2a_60m"], steps=2)
    assert np.isfinite(out_gen.outputs[S2_60]).all()
    args = backbone_args(tiny_cube, vae_dir, tmp_path / "bad", steps=1)
    bad_betas = invoke(train, [*args, "--adam-betas", "0.9"])
    assert bad_betas.exit_code == 2 and "--adam-betas" in bad_betas.output
    no_targets = invoke(train, [*args, "--task-fraction", "0.5", "--task-conditions", "dem"])
    assert no_targets.exit_code == 2 and "task_targets" in no_targets.output
    too_many = invoke(train, [*args, "--ground-heads", "9"])
    assert too_many.exit_code == 2 and "ground_heads" in too_many.output


def test_train_writes_a_bundle_that_generates(reference_run: Path, tiny_cube: str) -> None:
    info = json.loads((reference_run / "bundle.json").read_text())
    assert info["kind"] == "backbone" and info["steps"] == STEPS and info["seed"] == 3
    assert info["modalities"] == ["3d_cartesian_lat_lon", DEM, S2_60, "mean_timestamps"]
    assert info["config"]["modality_dropout"] == 0.1 and info["config"]["betas"] == [0.99, 0.99]
    assert len(info["data"]["cube_spec_hash"]) == 64 and info["data"]["skipped"] == {f"missing {DEM}": 1}
    assert [h["step"] for h in info["losses"]] == [2, 4, 5] and info["evaluation"]["loss"] > 0
    model = load_model(str(reference_run))
    out = model.generate({"dem": np.full((1, 1, 64, 64), 300.0)}, ["s2l2a_60m"], steps=2)
    assert out.outputs[S2_60].shape == (1, 1, 2, 32, 32)


def _same_weights(a: Path, b: Path) -> None:
    assert (a / "backbone" / "model.safetensors").read_bytes() == (b / "backbone" / "model.safetensors").read_bytes()
    sa, sb = load_state(a / "train_state.pt"), load_state(b / "train_state.pt")
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert sa["history"] == sb["history"]


def test_resume_gives_the_weights_of_the_uninterrupted_run(reference_run: Path, tiny_cube: str,
                                                           vae_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    assert invoke(train, backbone_args(tiny_cube, vae_dir, out, steps=2)).exit_code == 0
    result = invoke(train, [*backbone_args(tiny_cube, vae_dir, out), "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming at step 2" in result.output
    _same_weights(reference_run, out)


def test_resume_after_sigkill_gives_the_weights_of_the_uninterrupted_run(reference_run: Path, tiny_cube: str,
                                                                         vae_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cmd_train", *backbone_args(tiny_cube, vae_dir, out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("checkpoint step 1"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, "".join(lines)
    assert load_state(out / "train_state.pt")["opt"]["step"] < STEPS  # killed mid-run
    assert not (out / "bundle.json").exists()
    result = invoke(train, [*backbone_args(tiny_cube, vae_dir, out), "--resume"])
    assert result.exit_code == 0, result.output
    _same_weights(reference_run, out)


def test_poly_lr_decay_is_recorded_decays_and_ties_resume_to_the_run_length(reference_run: Path, tiny_cube: str,
                                                                             vae_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "decayed"
    args = [*backbone_args(tiny_cube, vae_dir, out, steps=4), "--lr", "0.01", "--lr-decay", "poly"]
    result = invoke(train, args)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "bundle.json").read_text())
    assert info["config"]["lr_decay"] == "poly" and info["config"]["lr_decay_steps"] == 2  # 4 steps - 2 warm-up
    rates = [h["lr"] for h in info["losses"]]  # logged at steps 2 and 4: optimiser steps 1 and 3
    assert rates[0] == 0.005  # half-way through the warm-up
    assert rates[1] == pytest.approx(0.01 * 0.5**0.95)  # half-way through the decay (constant: 0.01)
    longer = invoke(train, [*backbone_args(tiny_cube, vae_dir, out, steps=6), "--lr", "0.01", "--lr-decay", "poly",
                            "--resume"])
    assert longer.exit_code == 2 and "lr_decay_steps" in longer.output
    # constant-rate states keep their old config (no decay fields), so runs saved before the option resume
    assert "lr_decay" not in load_state(reference_run / "train_state.pt")["config"]
    short = invoke(train, [*backbone_args(tiny_cube, vae_dir, tmp_path / "short", steps=2), "--lr-decay", "poly"])
    assert short.exit_code == 2 and "--warmup-steps" in short.output


def test_train_with_a_latent_cache(tiny_cube: str, vae_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "latents.safetensors"
    args = [*backbone_args(tiny_cube, vae_dir, tmp_path / "cached", steps=2), "--latent-cache", str(cache)]
    result = invoke(train, args)
    assert result.exit_code == 0, result.output
    assert cache.is_file() and "encoding VAE latents" in result.output
    info = json.loads((tmp_path / "cached" / "bundle.json").read_text())
    assert info["data"]["content"] == "moments" and info["latent_cache"] == str(cache)


def test_train_refuses_bad_input(tiny_cube: str, vae_dir: Path, tmp_path: Path) -> None:
    args = backbone_args(tiny_cube, vae_dir, tmp_path / "x", steps=1)
    both = invoke(train, [*args, "--bundle", str(vae_dir)])
    assert both.exit_code == 2 and "exactly one" in both.output
    assert invoke(train, [*args, "--modalities", "s1"]).exit_code == 2
    assert invoke(train, [*args, "--modality-dropout", "0.8", "--condition-dropout", "0.5"]).exit_code == 2
    assert invoke(train, [*args, "--preset", "enormous"]).exit_code == 2
    lone = invoke(train, [*args, "--final-conv-kernel", "5"])
    assert lone.exit_code == 2 and "--final-conv" in lone.output


def test_two_ranks_under_torchrun_train_one_bundle(tiny_cube: str, vae_dir: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "pipelines.cmd_train",
                           *backbone_args(tiny_cube, vae_dir, out, steps=2)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("wrote bundle") == 1  # rank 0 alone writes
    info = json.loads((out / "bundle.json").read_text())
    assert info["world_size"] == 2 and info["data"]["world_size"] == 2
    load_model(str(out))


def test_train_never_overwrites_a_model_that_is_not_its_run(tiny_cube: str, vae_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "someone-elses-bundle"
    (bundle / "backbone").mkdir(parents=True)
    (bundle / "bundle.json").write_text("{}")
    result = invoke(train, backbone_args(tiny_cube, vae_dir, bundle, steps=1))
    assert result.exit_code == 2 and "not a training run" in result.output
    assert (bundle / "bundle.json").read_text() == "{}"


def test_train_with_a_local_path(tiny_cube: str, vae_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "local"
    result = invoke(train, [*backbone_args(tiny_cube, vae_dir, out, steps=2), "--local-path", "s2l2a_60m",
                            "--local-width", "8"])
    assert result.exit_code == 0, result.output
    from copgen_core.bundle import load_model

    backbone = load_model(str(out)).backbone
    assert backbone.config.local_path == ("S2L2A_B01_B09",) and backbone.config.local_width == 8
    path = backbone.local_paths["S2L2A_B01_B09"]  # type: ignore[index]
    assert float(path.out.weight.abs().sum()) > 0  # trained away from its zero start
    args = backbone_args(tiny_cube, vae_dir, tmp_path / "bad", steps=1)
    scalar = invoke(train, [*args, "--local-path", "mean_timestamps"])
    assert scalar.exit_code == 2 and "image modalities only" in scalar.output
    lone = invoke(train, [*args, "--local-self"])
    assert lone.exit_code == 2 and "--local-path" in lone.output
