"""Decoder-only fine-tuning (copgen_core.training.decoder_finetune): the latent space must not move."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from copgen_core.presets import vae_preset
from copgen_core.training.decoder_finetune import DecoderFinetune, decoder_parameters, finetune_decoder
from copgen_core.vae import KLVAE, VAEConfig, init_block_pca

KEY = "S2L2A_B02_B03_B04_B08"


def _images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.randn(n, 4, size // 8, size // 8, generator=g), size=size, mode="bilinear",
                           align_corners=False)
    return (0.5 * coarse + 0.2 * torch.randn(n, 4, size, size, generator=g)).float()


def _vae(shortcut: bool = True) -> KLVAE:
    torch.manual_seed(0)
    vae = KLVAE(VAEConfig(**{**vae_preset("tiny", KEY).to_dict(), "shortcut": shortcut}))
    if shortcut:
        init_block_pca(vae, _images(6, seed=5))
    return vae


def _mse(vae: KLVAE, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((vae(x) - x) ** 2).mean())


@pytest.mark.parametrize("shortcut", [True, False])
def test_finetune_lowers_the_error_and_leaves_the_encoder_bitwise_alone(shortcut: bool) -> None:
    x = _images()
    vae = _vae(shortcut)
    decoder_ids = {id(p) for p in decoder_parameters(vae)}
    encoder_before = {n: p.detach().clone() for n, p in vae.named_parameters() if id(p) not in decoder_ids}
    with torch.no_grad():
        moments = vae.moments(x)
    start = _mse(vae, x)
    stats = finetune_decoder(vae, x, DecoderFinetune(steps=20, lr=3e-3, batch_size=2, crop=24))
    assert _mse(vae, x) < 0.9 * start
    assert stats["mse_last"] < stats["mse_first"]
    for name, p in vae.named_parameters():
        if name in encoder_before:
            assert torch.equal(p, encoder_before[name]), name
    with torch.no_grad():
        assert torch.equal(vae.moments(x), moments)  # the latent space a backbone learned is the same
    assert all(p.requires_grad for p in vae.parameters())  # trainability restored


def test_finetune_is_deterministic_for_a_seed_and_depends_on_it() -> None:
    x = _images()
    runs = []
    for seed in (0, 0, 1):
        vae = _vae()
        finetune_decoder(vae, x, DecoderFinetune(steps=3, batch_size=2, crop=16, seed=seed))
        runs.append(vae.shortcut_out.weight.detach().clone())  # type: ignore[union-attr]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"steps": 1, "lr": 0.0}, {"steps": 1, "batch_size": 0},
                                    {"steps": 1, "edge_penalty": -1.0}, {"steps": 1, "noise_cells": 2}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        DecoderFinetune(**kwargs)  # type: ignore[arg-type]


def test_crops_must_sit_on_latent_cells_inside_the_images() -> None:
    vae = _vae()
    with pytest.raises(ValueError, match="multiple of 8"):
        finetune_decoder(vae, _images(), DecoderFinetune(steps=1, crop=20))
    with pytest.raises(ValueError, match="at most"):
        finetune_decoder(vae, _images(), DecoderFinetune(steps=1, crop=40))


def test_edge_penalty_keeps_the_cell_grid_out_of_decoded_noise() -> None:
    from copgen_core.vae import noise_edge_ratio

    x = _images()
    ratios = {}
    for penalty in (0.0, 1.0):
        vae = _vae()
        with torch.no_grad():  # a block synthesis: each latent cell paints its own 8 x 8 block, a grid in decoded noise
            w = torch.zeros_like(vae.shortcut_out.weight)  # type: ignore[union-attr]
            for c in range(4):
                w[c, c, 4:12, 4:12] = 1.0
            vae.shortcut_out.weight.mul_(0.5).add_(0.5 * w)  # type: ignore[union-attr]
        start = noise_edge_ratio(vae)
        stats = finetune_decoder(vae, x, DecoderFinetune(steps=20, lr=3e-3, batch_size=2, crop=24,
                                                         edge_penalty=penalty))
        ratios[penalty] = noise_edge_ratio(vae)
        assert ("grid_ratio_last" in stats) == (penalty > 0)
    assert start > 2.0
    assert abs(ratios[1.0] - 1.0) < abs(ratios[0.0] - 1.0)
    assert abs(ratios[1.0] - 1.0) < 0.5 * abs(start - 1.0)
