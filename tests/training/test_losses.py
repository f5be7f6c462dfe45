"""The training losses: the official VAE loss and the multimodal ε-prediction loss."""

from __future__ import annotations

import math

import pytest
import torch

from copgen_core.training.losses import VAELoss, diffusion_loss, kl_divergence


def test_kl_of_the_standard_normal_is_zero_and_matches_the_closed_form() -> None:
    zeros = torch.zeros(2, 8, 4, 4)
    assert torch.equal(kl_divergence(zeros, zeros), torch.zeros(2))
    mean, logvar = torch.full((1, 8, 2, 2), 0.5), torch.full((1, 8, 2, 2), math.log(2.0))
    per_element = 0.5 * (0.25 + 2.0 - 1.0 - math.log(2.0))
    assert kl_divergence(mean, logvar).item() == pytest.approx(32 * per_element, rel=1e-6)


def test_vae_loss_is_the_official_per_sample_sum_with_learned_logvar() -> None:
    torch.manual_seed(0)
    x, recon = torch.rand(3, 2, 8, 8) * 2 - 1, torch.rand(3, 2, 8, 8) * 2 - 1
    moments = torch.randn(3, 16, 1, 1)
    loss_fn = VAELoss(kl_weight=1e-6, learned_logvar=True, logvar_init=0.5)
    loss, metrics = loss_fn(x, recon, moments)
    rec = (x - recon).abs() + (x - recon).square()
    nll = (rec / math.exp(0.5) + 0.5).sum() / 3
    kl = kl_divergence(*torch.chunk(moments, 2, dim=1)).sum() / 3
    assert loss.item() == pytest.approx((nll + 1e-6 * kl).item(), rel=1e-6)
    assert metrics["mse"] == pytest.approx((x - recon).square().mean().item(), rel=1e-6)
    loss.backward()
    assert loss_fn.logvar is not None and loss_fn.logvar.grad is not None  # the log-variance is learned


def test_vae_loss_by_default_is_the_plain_pixel_term_as_the_official_optimiser_leaves_it() -> None:
    x, recon = torch.zeros(2, 1, 8, 8), torch.full((2, 1, 8, 8), 0.5)
    loss_fn = VAELoss(kl_weight=0.0)
    loss, _ = loss_fn(x, recon, torch.zeros(2, 16, 1, 1))
    assert loss_fn.logvar is None and not list(loss_fn.parameters())
    assert loss.item() == pytest.approx(64 * (0.5 + 0.25))


def test_diffusion_loss_weighs_every_modality_equally_whatever_its_size() -> None:
    big, small = torch.zeros(4, 8, 24, 24), torch.zeros(4, 1, 1, 3)
    loss, per_mod = diffusion_loss([big + 1.0, small + 2.0], [big, small])
    assert loss.item() == pytest.approx(1.0 + 4.0)
    assert per_mod.tolist() == pytest.approx([1.0, 4.0])


def test_diffusion_loss_weights_drop_pairs_and_still_divide_by_the_batch() -> None:
    eps = [torch.zeros(2, 1, 1, 3), torch.zeros(2, 1, 1, 3)]
    pred = [torch.ones(2, 1, 1, 3), torch.ones(2, 1, 1, 3)]
    weights = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    loss, per_mod = diffusion_loss(pred, eps, weights)
    assert loss.item() == pytest.approx(0.5)
    assert per_mod.tolist() == [1.0, 1.0]  # logged unweighted
    with pytest.raises(ValueError, match="weights have shape"):
        diffusion_loss(pred, eps, torch.ones(2, 3))
