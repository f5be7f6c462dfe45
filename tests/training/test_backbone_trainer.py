"""Backbone training: the official objective, dropout options, latents, and bitwise resume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from copgen_core.backbone import CopgenBackbone
from copgen_core.modalities import resolve
from copgen_core.presets import backbone_preset, vae_preset
from copgen_core.schedule import copgen_schedule
from copgen_core.training.backbone_trainer import (
    BackboneTrainConfig,
    BackboneTrainer,
    sample_posterior,
    shifted_steps,
)
from copgen_core.training.loop import run_loop
from copgen_core.training.losses import diffusion_loss
from copgen_core.training.state import load_state
from copgen_core.vae import KLVAE
from tests.training.conftest import DATE, DEM, LATLON, S2_60
from transforms.dataset import CubeDataset, ResumableSampler, loader

KEYS = (LATLON, DEM, S2_60, DATE)
CONFIG = BackboneTrainConfig(lr=1e-3, warmup_steps=2, ema_rate=0.9, seed=11)


def _trainer(config: BackboneTrainConfig = CONFIG) -> BackboneTrainer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = CopgenBackbone(backbone_preset("tiny", KEYS))
        vaes = {k: KLVAE(vae_preset("tiny", k), scale_factor=resolve(k).scale_factor) for k in (DEM, S2_60)}
    return BackboneTrainer(backbone, vaes, config)


def _batch(b: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return {k: torch.rand((b, *resolve(k).pixel_shape), generator=g) * 2 - 1 for k in KEYS}


def test_each_modality_gets_its_own_noise_level_per_sample() -> None:
    trainer = _trainer()
    z = [torch.randn(64, 1, 1, 3) for _ in range(3)]
    x, t, eps, weights = trainer.noised_inputs(z, torch.Generator().manual_seed(0))
    steps = torch.stack(t)
    assert steps.min() >= 1 and steps.max() <= 1000 and bool((steps == steps.round()).all())
    assert not torch.equal(t[0], t[1]) and len(set(t[0].tolist())) > 32
    schedule = copgen_schedule()
    assert torch.allclose(x[1], schedule.add_noise(z[1], eps[1], t[1].long()))
    assert torch.equal(weights, torch.ones(64, 3))


def test_modality_dropout_is_pure_noise_at_t1000_and_condition_dropout_clean_at_t0() -> None:
    z = [torch.randn(8, 1, 1, 3)]
    dropped = _trainer(BackboneTrainConfig(modality_dropout=1.0))
    x, t, eps, w = dropped.noised_inputs(z, torch.Generator().manual_seed(0))
    assert torch.equal(x[0], eps[0]) and bool((t[0] == 1000).all()) and w.sum() == 0
    given = _trainer(BackboneTrainConfig(condition_dropout=1.0))
    x, t, eps, w = given.noised_inputs(z, torch.Generator().manual_seed(0))
    assert torch.equal(x[0], z[0]) and bool((t[0] == 0).all()) and w.sum() == 0
    mixed = _trainer(BackboneTrainConfig(modality_dropout=0.3, condition_dropout=0.2))
    _, t, _, w = mixed.noised_inputs([torch.randn(4000, 1, 1, 3)], torch.Generator().manual_seed(0))
    assert 0.27 < (t[0] == 1000).float().mean() < 0.33 and 0.17 < (t[0] == 0).float().mean() < 0.23
    assert 0.47 < w.mean() < 0.53
    with pytest.raises(ValueError, match="sum <= 1"):
        BackboneTrainConfig(modality_dropout=0.6, condition_dropout=0.6)


def test_min_snr_weighting_down_weights_only_the_nearly_clean_steps() -> None:
    z = [torch.randn(4000, 1, 1, 3)]
    weighted = _trainer(BackboneTrainConfig(min_snr_gamma=5.0))
    _, t, _, w = weighted.noised_inputs(z, torch.Generator().manual_seed(0))
    n = t[0].long()
    abar = copgen_schedule().alphas_cumprod[n.clamp(min=1)]
    snr = abar / (1 - abar)
    assert torch.allclose(w[:, 0], (torch.clamp(snr, max=5.0) / snr).float())
    noisy = snr <= 5.0
    assert bool((w[noisy, 0] == 1).all()) and bool((w[snr > 5.0, 0] < 1).all()) and noisy.any()
    # same draws as without weighting: only the weights change
    _, t_plain, _, _ = _trainer(BackboneTrainConfig()).noised_inputs(
        z, torch.Generator().manual_seed(0))
    assert torch.equal(t[0], t_plain[0])
    with pytest.raises(ValueError, match="min_snr_gamma"):
        BackboneTrainConfig(min_snr_gamma=0.0)


def test_timestep_shift_moves_the_training_steps_toward_noise() -> None:
    u = torch.linspace(0.0, 0.999, 1000)
    assert torch.equal(shifted_steps(u, 1.0, 1000), torch.ceil(u * 1000).long().clamp(1, 1000))
    assert int(shifted_steps(torch.tensor([0.5]), 3.0, 1000)) == 750
    z = [torch.randn(4000, 1, 1, 3)]
    _, t_plain, _, _ = _trainer().noised_inputs(z, torch.Generator().manual_seed(0))
    _, t_shift, _, w = _trainer(BackboneTrainConfig(timestep_shift=3.0)).noised_inputs(z, torch.Generator().manual_seed(0))
    assert 0.45 < (t_plain[0] > 750).float().mean() * 2 < 0.55  # uniform: a quarter above 750
    assert 0.46 < (t_shift[0] > 750).float().mean() < 0.54     # shift 3: half above 750
    assert t_shift[0].min() >= 1 and t_shift[0].max() <= 1000 and bool((w == 1).all())
    with pytest.raises(ValueError, match="timestep_shift"):
        BackboneTrainConfig(timestep_shift=0.0)


def test_terminal_noise_draws_are_pure_noise_whose_target_makes_the_x0_estimate_the_latent() -> None:
    b = 4000
    z = [torch.randn(b, 1, 1, 3) + 10.0]
    trainer = _trainer(BackboneTrainConfig(terminal_noise=0.2, condition_dropout=0.1))
    x, t, target, w = trainer.noised_inputs(z, torch.Generator().manual_seed(0))
    schedule = copgen_schedule()
    top = (t[0] == 1000) & (w[:, 0] > 0)
    assert 0.15 < top.float().mean() < 0.22  # 20 % of the 90 % noised draws (+ the rare uniform draw of 1000)
    abar = float(schedule.alphas_cumprod[1000])
    # the sampler's x0 estimate from the input and the target is the clean latent
    x0 = (x[0][top] - (1 - abar) ** 0.5 * target[0][top]) / abar ** 0.5
    assert torch.allclose(x0, z[0][top], atol=1e-3)
    # the input is pure noise, nothing of the latent (a normal draw's mean would be sqrt(abar) * 10 = 0.68);
    # the target carries it instead
    assert abs(float(x[0][top].mean())) < 0.1
    assert abs(float(target[0][top].mean()) + 10 * abar ** 0.5 / (1 - abar) ** 0.5) < 0.1
    # the usual weight of step 1000 (1 for this ε-prediction backbone; 1 / abar, the v-loss, for a v one)
    assert bool((w[top, 0] == 1).all())
    clean = t[0] == 0
    assert bool((w[clean, 0] == 0).all()) and torch.equal(x[0][clean], z[0][clean])
    # no dropout (evaluation): never a terminal draw
    _, _, target_eval, _ = trainer.noised_inputs(z, torch.Generator().manual_seed(0), dropout=False)
    x_eval, t_eval, _, _ = trainer.noised_inputs(z, torch.Generator().manual_seed(0), dropout=False)
    assert torch.allclose(x_eval[0], schedule.add_noise(z[0], target_eval[0], t_eval[0].long()))
    with pytest.raises(ValueError, match="terminal_noise"):
        BackboneTrainConfig(terminal_noise=1.5)


def test_task_sampling_generates_targets_from_one_condition_set_and_marginalises_the_rest() -> None:
    config = BackboneTrainConfig(task_fraction=0.5, task_targets=(S2_60,), task_conditions=((DEM, DATE), ()))
    trainer = _trainer(config)
    b = 4000
    z = [torch.randn(b, *resolve(k).latent_shape) if resolve(k).is_image else torch.randn(b, 1, 1, 3) for k in KEYS]
    x, t, eps, w = trainer.noised_inputs(z, torch.Generator().manual_seed(0))
    i_latlon, i_dem, i_s2, i_date = range(4)
    task = (t[i_latlon] == 1000) & ((t[i_dem] == 0) | (t[i_dem] == 1000)) & (t[i_s2] >= 1)
    task &= (t[i_dem] == 0) == (t[i_date] == 0)  # the set {DEM, date} is given together
    # task samples: location always marginalised; S2 the only loss; DEM and date clean together or absent
    assert 0.45 < task.float().mean() < 0.6
    given = task & (t[i_dem] == 0)
    assert 0.35 < given.float().sum() / task.float().sum() < 0.65
    assert torch.equal(x[i_dem][given], z[i_dem][given]) and torch.equal(x[i_date][given], z[i_date][given])
    absent = task & (t[i_dem] == 1000)
    assert torch.equal(x[i_dem][absent], eps[i_dem][absent]) and torch.equal(x[i_latlon][task], eps[i_latlon][task])
    assert bool((w[task][:, [i_latlon, i_dem, i_date]] == 0).all()) and bool((w[task][:, i_s2] == 1).all())
    schedule = copgen_schedule()
    assert torch.allclose(x[i_s2][task], schedule.add_noise(z[i_s2][task], eps[i_s2][task], t[i_s2][task].long()))
    # no dropout (evaluation): never a task
    _, t_eval, _, w_eval = trainer.noised_inputs(z, torch.Generator().manual_seed(0), dropout=False)
    assert torch.equal(w_eval, torch.ones(b, 4)) and bool((torch.stack(t_eval) >= 1).all())


def test_task_sampling_is_checked() -> None:
    with pytest.raises(ValueError, match="task_targets"):
        BackboneTrainConfig(task_fraction=0.5)
    with pytest.raises(ValueError, match="either"):
        BackboneTrainConfig(task_fraction=0.5, task_targets=(DEM,), task_conditions=((DEM,),))
    with pytest.raises(ValueError, match="does not model"):
        _trainer(BackboneTrainConfig(task_fraction=0.5, task_targets=(S2_60,), task_conditions=(("LULC_LULC",),)))


def test_latents_from_pixels_and_from_moments_are_the_same_posterior_sample() -> None:
    trainer = _trainer()
    batch = _batch()
    from_pixels = trainer.clean_latents(batch, torch.Generator().manual_seed(5))
    with torch.no_grad():
        moments = {**batch, **{k: trainer.vaes[k].moments(batch[k]) for k in (DEM, S2_60)}}
    from_moments = trainer.clean_latents(moments, torch.Generator().manual_seed(5))
    for key, a, b in zip(KEYS, from_pixels, from_moments, strict=True):
        assert a.shape == (3, *resolve(key).latent_shape)
        assert torch.allclose(a, b, atol=1e-6), key
    assert torch.equal(from_pixels[0], batch[LATLON])  # scalars are diffused raw
    mean = torch.chunk(moments[DEM], 2, dim=1)[0]
    assert torch.allclose(sample_posterior(moments[DEM], 0.5, torch.zeros_like(mean)), 0.5 * mean)
    with pytest.raises(ValueError, match="expected pixels"):
        trainer.clean_latents({**batch, DEM: torch.zeros(3, 1, 32, 32)}, torch.Generator())


def test_the_step_loss_is_the_official_objective() -> None:
    trainer = _trainer()
    batch = _batch()
    loss, metrics = trainer._loss(batch, 0)
    gen = trainer._generator("step", 0, 0, 0)
    z = trainer.clean_latents(batch, gen)
    x, t, eps, _ = trainer.noised_inputs(z, gen)
    expected, per_mod = diffusion_loss(trainer.backbone(x, t), eps)
    assert torch.equal(loss, expected)
    assert metrics[f"mse/{DEM}"] == per_mod[1].item()


def test_gradient_checkpointing_changes_memory_not_the_result() -> None:
    plain, ckpt = _trainer(), _trainer(BackboneTrainConfig(**{**CONFIG.to_dict(), "gradient_checkpointing": True}))
    batch = _batch()
    a, b = plain.train_step([batch]), ckpt.train_step([batch])
    assert a["loss"] == b["loss"]
    for (name, pa), pb in zip(plain.backbone.named_parameters(), ckpt.backbone.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-7), name


def test_a_missing_vae_is_refused() -> None:
    backbone = CopgenBackbone(backbone_preset("tiny", (DEM, DATE)))
    with pytest.raises(ValueError, match="train-vae"):
        BackboneTrainer(backbone, {}, CONFIG)


def test_resume_in_a_fresh_trainer_is_bitwise_identical(tiny_cube: str, tmp_path: Path) -> None:
    config = BackboneTrainConfig(lr=1e-3, warmup_steps=2, ema_rate=0.9, modality_dropout=0.2, condition_dropout=0.2,
                                 seed=11)
    ds = CubeDataset(tiny_cube, KEYS, split="train", val_fraction=0.3)

    def batches_from(position: int) -> Iterator[dict[str, torch.Tensor]]:
        return loader(ds, ResumableSampler(len(ds), 2, seed=1, start=position))

    whole = _trainer(config)
    run_loop(whole, batches_from, steps=4, grad_accum=1, state_path=tmp_path / "a.pt", checkpoint_every=4,
             log_every=1)
    part = _trainer(config)
    run_loop(part, batches_from, steps=2, grad_accum=1, state_path=tmp_path / "b.pt", checkpoint_every=2,
             log_every=1)
    fresh = _trainer(config)
    fresh.load_state_dict(load_state(tmp_path / "b.pt"))
    run_loop(fresh, batches_from, steps=4, grad_accum=1, state_path=tmp_path / "b.pt", checkpoint_every=2,
             log_every=1)
    a, b = load_state(tmp_path / "a.pt"), load_state(tmp_path / "b.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        assert torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]), k
    assert a["history"] == b["history"]
    first = next(batches_from(0))
    assert whole.evaluate([first]) == fresh.evaluate([first])  # fixed evaluation noise
