"""``BackboneConfig.max_grid``: coarser patches for the 10 m latents, one shared 6 x 6 lattice."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from copgen_core.backbone import BackboneConfig, CopgenBackbone, token_centres
from copgen_core.checkpoints import load_backbone, save_backbone
from copgen_core.modalities import BY_KEY, MODALITIES, patch_size_for
from copgen_core.presets import backbone_preset, count_backbone_parameters

L2A10 = "S2L2A_B02_B03_B04_B08"
L2A20 = "S2L2A_B05_B06_B07_B11_B12_B8A"
DEM = "DEM_DEM"


def test_default_is_the_official_layout() -> None:
    config = backbone_preset("tiny")
    assert config.max_grid == 0
    assert all(config.patch_size(m) == (1 if m.is_scalar else 2) for m in MODALITIES)
    # 12 time tokens + 5 x 144 (10 m) + 2 x 36 (20 m) + 16 (DEM) + 2 x 4 (60 m) + 2 x 3 (scalars)
    assert config.num_tokens == 12 + 5 * 144 + 2 * 36 + 16 + 2 * 4 + 2 * 3


def test_patch_sizes_and_token_counts() -> None:
    assert patch_size_for(BY_KEY[L2A10], 6) == 4  # 24 latent -> 6 x 6
    assert patch_size_for(BY_KEY[L2A20], 6) == 2  # 12 latent -> 6 x 6
    assert patch_size_for(BY_KEY[DEM], 6) == 2  # 8 latent -> 4 x 4 (not wider than 6)
    assert patch_size_for(BY_KEY[L2A10], 3) == 8  # 24 -> 3 x 3
    assert patch_size_for(BY_KEY["mean_timestamps"], 6) == 1
    config = dataclasses.replace(backbone_preset("tiny"), max_grid=6)
    assert config.num_tokens == 12 + 7 * 36 + 16 + 2 * 4 + 2 * 3
    with pytest.raises(ValueError, match="max_grid"):
        dataclasses.replace(config, max_grid=1)
    with pytest.raises(ValueError, match="max_grid"):
        dataclasses.replace(config, max_grid=-2)
    assert BackboneConfig.from_dict(config.to_dict()) == config


def test_10m_and_20m_tokens_share_the_ground_lattice() -> None:
    config = dataclasses.replace(backbone_preset("tiny", [DEM, L2A10, L2A20]), max_grid=6)
    centres = token_centres(config)
    spans = config.token_layout.spans()
    c10 = centres[spans[L2A10][0]:spans[L2A10][1]]
    c20 = centres[spans[L2A20][0]:spans[L2A20][1]]
    assert c10.shape == (36, 2)
    torch.testing.assert_close(c10, c20)
    assert not torch.allclose(centres[spans[DEM][0]:spans[DEM][1]][:4], c10[:4])  # DEM is 4 x 4


def test_forward_shapes_parameter_count_and_save_load(tmp_path: Path) -> None:
    config = dataclasses.replace(backbone_preset("tiny", [DEM, L2A10, L2A20, "mean_timestamps"]), max_grid=6,
                                 ground_heads=2)
    torch.manual_seed(0)
    model = CopgenBackbone(config).eval()
    assert sum(p.numel() for p in model.parameters()) == count_backbone_parameters(config)
    assert model.patch_embeds[1].proj.kernel_size == (4, 4)
    gen = torch.Generator().manual_seed(1)
    lat = [torch.randn((2, *m.latent_shape), generator=gen) for m in model.modalities]
    ts = [torch.rand((2,), generator=gen) * 1000 for _ in model.modalities]
    with torch.no_grad():
        out = model(lat, ts)
    assert [o.shape for o in out] == [x.shape for x in lat]
    # each 4 x 4 block of the 10 m output depends on its own patch token: changing one latent patch
    # changes that block of the prediction (and, through attention, others), never nothing
    lat2 = [x.clone() for x in lat]
    lat2[1][:, :, :4, :4] += 1.0
    with torch.no_grad():
        out2 = model(lat2, ts)
    assert not torch.allclose(out[1][:, :, :4, :4], out2[1][:, :, :4, :4])
    save_backbone(model, tmp_path / "bb")
    again = load_backbone(tmp_path / "bb").eval()
    assert again.config.max_grid == 6
    with torch.no_grad():
        out3 = again(lat, ts)
    for a, b in zip(out, out3, strict=True):
        torch.testing.assert_close(a, b)


# -- final_conv -------------------------------------------------------------------------------------


def test_final_conv_starts_as_the_identity_and_trains(tmp_path: Path) -> None:
    plain_config = dataclasses.replace(backbone_preset("tiny", [DEM, L2A10, "mean_timestamps"]), max_grid=6,
                                       prediction="v")
    config = dataclasses.replace(plain_config, final_conv=True)
    assert BackboneConfig.from_dict(config.to_dict()).final_conv
    torch.manual_seed(0)
    plain = CopgenBackbone(plain_config).eval()
    model = CopgenBackbone(config).eval()
    assert sum(p.numel() for p in model.parameters()) == count_backbone_parameters(config)
    assert count_backbone_parameters(config) - count_backbone_parameters(plain_config) == 2 * (8 * 8 * 9 + 8)
    loaded = model.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(loaded.missing_keys) == [f"final_convs.{i}.{p}" for i in (0, 1) for p in ("bias", "weight")]
    gen = torch.Generator().manual_seed(1)
    lat = [torch.randn((2, *m.latent_shape), generator=gen) for m in model.modalities]
    ts = [torch.rand((2,), generator=gen) * 1000 for _ in model.modalities]
    with torch.no_grad():
        for a, b in zip(model(lat, ts), plain(lat, ts), strict=True):
            assert torch.equal(a, b)  # zero-initialised: exactly the model without it
    model.train()
    loss = sum((o**2).mean() for o in model(lat, ts))
    loss.backward()  # type: ignore[union-attr]
    conv = model.final_convs[1]  # type: ignore[index]
    assert conv.weight.grad is not None and float(conv.weight.grad.abs().sum()) > 0
    with torch.no_grad():  # trained weights change the output and survive a save and load
        conv.weight.normal_(std=0.1)
        out = model.eval()(lat, ts)[1]
        assert not torch.allclose(out, plain(lat, ts)[1])
        save_backbone(model, tmp_path / "bb")
    again = load_backbone(tmp_path / "bb").eval()
    assert again.config.final_conv
    with torch.no_grad():
        torch.testing.assert_close(again(lat, ts)[1], out)


def test_final_conv_kernel_size() -> None:
    base = dataclasses.replace(backbone_preset("tiny", [DEM, L2A10, "mean_timestamps"]), max_grid=6, final_conv=True)
    wide = dataclasses.replace(base, final_conv_kernel=7)
    assert BackboneConfig.from_dict(wide.to_dict()).final_conv_kernel == 7
    model = CopgenBackbone(wide)
    assert model.final_convs[1].kernel_size == (7, 7)  # type: ignore[index]
    assert sum(p.numel() for p in model.parameters()) == count_backbone_parameters(wide)
    assert count_backbone_parameters(wide) - count_backbone_parameters(base) == 2 * 8 * 8 * (49 - 9)
    with pytest.raises(ValueError, match="odd"):
        dataclasses.replace(base, final_conv_kernel=4)


# -- prediction = "v" ---------------------------------------------------------------------------------


def test_velocity_to_eps_inverts_the_velocity() -> None:
    from copgen_core.backbone import velocity_to_eps
    from copgen_core.schedule import copgen_schedule

    sched = copgen_schedule()
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn((4, 8, 6, 6), generator=gen), torch.randn((4, 8, 6, 6), generator=gen)
    n = torch.tensor([1, 250, 750, 1000])
    a, s = (c.float().view(-1, 1, 1, 1) for c in sched.noise_coefficients(n))
    x, v = a * x0 + s * eps, a * eps - s * x0
    torch.testing.assert_close(velocity_to_eps(v, x, n.float()), eps, atol=2e-5, rtol=0)
    # a clean condition (n = 0) passes the head's output through
    torch.testing.assert_close(velocity_to_eps(v, x, torch.zeros(4)), v)


def test_v_backbone_returns_eps_from_the_same_heads() -> None:
    from copgen_core.backbone import velocity_to_eps

    keys = [DEM, L2A10, "mean_timestamps"]
    eps_cfg = dataclasses.replace(backbone_preset("tiny", keys), max_grid=6)
    v_cfg = dataclasses.replace(eps_cfg, prediction="v")
    assert BackboneConfig.from_dict(v_cfg.to_dict()) == v_cfg
    with pytest.raises(ValueError, match="prediction"):
        dataclasses.replace(eps_cfg, prediction="x0")  # type: ignore[arg-type]
    torch.manual_seed(0)
    raw = CopgenBackbone(eps_cfg).eval()
    v_model = CopgenBackbone(v_cfg).eval()
    v_model.load_state_dict(raw.state_dict())  # same weights: the raw heads' output is v̂
    gen = torch.Generator().manual_seed(3)
    lat = [torch.randn((2, *m.latent_shape), generator=gen) for m in raw.modalities]
    ts = [torch.tensor([0.0, 0.0]), torch.tensor([980.0, 40.0]), torch.tensor([1000.0, 0.0])]
    with torch.no_grad():
        heads, eps_hat = raw(lat, ts), v_model(lat, ts)
    for h, e, x, t in zip(heads, eps_hat, lat, ts, strict=True):
        torch.testing.assert_close(e, velocity_to_eps(h, x, t))
    assert not torch.allclose(heads[1], eps_hat[1])


def test_trainer_weights_a_v_backbone_with_the_v_loss() -> None:
    from copgen_core.modalities import resolve
    from copgen_core.presets import vae_preset
    from copgen_core.schedule import copgen_schedule
    from copgen_core.training.backbone_trainer import BackboneTrainConfig, BackboneTrainer
    from copgen_core.vae import KLVAE

    cfg = dataclasses.replace(backbone_preset("tiny", [L2A10, "mean_timestamps"]), max_grid=6, prediction="v")
    vaes = {L2A10: KLVAE(vae_preset("tiny", L2A10), scale_factor=resolve(L2A10).scale_factor)}
    trainer = BackboneTrainer(CopgenBackbone(cfg), vaes, BackboneTrainConfig(warmup_steps=1))
    n = torch.tensor([1, 500, 1000])
    abar = copgen_schedule().alphas_cumprod[n].float()
    torch.testing.assert_close(trainer._snr_weight(n), 1.0 / abar)
    eps_trainer = BackboneTrainer(CopgenBackbone(dataclasses.replace(cfg, prediction="eps")), vaes,
                                  BackboneTrainConfig(warmup_steps=1))
    torch.testing.assert_close(eps_trainer._snr_weight(n), torch.ones(3))
