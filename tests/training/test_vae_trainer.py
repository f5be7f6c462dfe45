"""VAE training: it learns, it evaluates, and it resumes bitwise from a saved state."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from copgen_core.presets import vae_preset
from copgen_core.training.loop import run_loop
from copgen_core.training.state import StateError, load_state
from copgen_core.training.vae_trainer import VAETrainConfig, VAETrainer, psnr
from copgen_core.vae import KLVAE
from tests.training.conftest import S2_60
from transforms.dataset import CubeDataset, ResumableSampler, loader

CONFIG = VAETrainConfig(lr=1e-3, ema_decay=0.9, ema_every=1, ema_start=1, grad_accum=2, learned_logvar=True, seed=7)


def _trainer(config: VAETrainConfig = CONFIG) -> VAETrainer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = KLVAE(vae_preset("tiny", S2_60), scale_factor=0.5)
    return VAETrainer(vae, config)


def _images(n: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    yy = torch.linspace(-1, 1, 32)
    base = torch.sin(3 * (yy[None, :] + yy[:, None]))
    return (0.6 * base[None, None] + 0.1 * torch.randn(n, 2, 32, 32, generator=g)).clamp(-1, 1)


def test_training_lowers_the_reconstruction_error() -> None:
    trainer = _trainer(VAETrainConfig(lr=1e-3, seed=0))
    x = _images(2)
    first = trainer.train_step([x])
    for _ in range(7):
        last = trainer.train_step([x])
    assert last["mse"] < 0.5 * first["mse"]
    assert trainer.step == 8 and len(trainer.history) == 8


def test_evaluate_reports_the_psnr_of_the_posterior_mean() -> None:
    trainer = _trainer()
    x = _images()
    result = trainer.evaluate([x[:2], x[2:]])
    model = trainer.ema.model
    with torch.no_grad():
        recon = model.decode_unscaled(torch.chunk(model.moments(x), 2, dim=1)[0])
    mse = (recon - x).square().mean().item()
    assert result["mse"] == pytest.approx(mse, rel=1e-5)
    assert result["psnr"] == pytest.approx(10 * math.log10(4 / mse), rel=1e-5)
    assert psnr(0.04) == pytest.approx(20.0) and result["samples"] == 4


def test_latent_scale_is_one_over_the_std_of_sampled_latents() -> None:
    trainer = _trainer()
    scale = trainer.latent_scale([_images()])
    assert 0.1 < scale < 100
    assert trainer.latent_scale([_images()]) == scale  # seeded draws


def _batches(ds: CubeDataset) -> Callable[[int], Iterator[torch.Tensor]]:
    def batches_from(position: int) -> Iterator[torch.Tensor]:
        return (b[S2_60] for b in loader(ds, ResumableSampler(len(ds), 2, seed=3, start=position)))
    return batches_from


def _assert_same_state(a: dict, b: dict) -> None:
    for part in ("model", "loss"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    for k in a["ema"]["model"]:
        assert torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]), f"ema.{k}"
    for pid, sa in a["opt"]["optimizer"]["state"].items():
        for k, v in sa.items():
            assert torch.equal(v, b["opt"]["optimizer"]["state"][pid][k]), f"optimizer {pid}.{k}"
    assert a["history"] == b["history"] and a["opt"]["step"] == b["opt"]["step"]


def test_resume_in_a_fresh_trainer_is_bitwise_identical(tiny_cube: str, tmp_path: Path) -> None:
    ds = CubeDataset(tiny_cube, [S2_60], split="train", val_fraction=0.3, flip=True, seed=3)
    whole = _trainer()
    run_loop(whole, _batches(ds), steps=4, grad_accum=2, state_path=tmp_path / "a.pt", checkpoint_every=4,
             log_every=1)
    part = _trainer()
    run_loop(part, _batches(ds), steps=2, grad_accum=2, state_path=tmp_path / "b.pt", checkpoint_every=1,
             log_every=1)
    saved = load_state(tmp_path / "b.pt")
    assert saved["data"]["micro_batches"] == 4
    torch.manual_seed(12345)  # disturb the global RNG: the restored state must not depend on it
    fresh = _trainer()
    fresh.load_state_dict(saved)
    assert run_loop(fresh, _batches(ds), steps=4, grad_accum=2, state_path=tmp_path / "b.pt", checkpoint_every=1,
                    log_every=1) == 2
    _assert_same_state(load_state(tmp_path / "a.pt"), load_state(tmp_path / "b.pt"))


def test_resume_refuses_another_config(tmp_path: Path) -> None:
    trainer = _trainer()
    trainer.train_step([_images(2), _images(2)])
    other = _trainer(VAETrainConfig(**{**CONFIG.to_dict(), "lr": 2e-3}))
    with pytest.raises(StateError, match="lr: saved 0.001, now 0.002"):
        other.load_state_dict(trainer.state_dict())
