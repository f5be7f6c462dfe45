"""``BackboneConfig.local_path``: per-cell conditioning paths from the other modalities to an image modality."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from copgen_core.backbone import BackboneConfig, CopgenBackbone, signal_alpha
from copgen_core.checkpoints import load_backbone, save_backbone
from copgen_core.local_path import LocalPath
from copgen_core.modalities import BY_KEY
from copgen_core.presets import backbone_preset, count_backbone_parameters

L2A10 = "S2L2A_B02_B03_B04_B08"
DEM = "DEM_DEM"
LULC = "LULC_LULC"
DATE = "mean_timestamps"


def _config(**changes: object) -> BackboneConfig:
    base = dataclasses.replace(backbone_preset("tiny", [DEM, LULC, L2A10, DATE]), max_grid=6, prediction="v",
                               final_conv=True)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _inputs(model: CopgenBackbone, batch: int = 2, seed: int = 1) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    lat = [torch.randn((batch, *m.latent_shape), generator=gen) for m in model.modalities]
    ts = [torch.rand((batch,), generator=gen) * 1000 for _ in model.modalities]
    return lat, ts


def test_config_round_trip_and_validation() -> None:
    config = _config(local_path=("s2l2a_10m",), local_width=16)
    assert config.local_path == (L2A10,)
    assert BackboneConfig.from_dict(config.to_dict()) == config
    # models without a path keep their old dicts (run identities and states of earlier runs still match)
    assert "local_path" not in _config().to_dict() and "local_width" not in _config().to_dict()
    with pytest.raises(ValueError, match="not among"):
        _config(local_path=("S2L1C_B02_B03_B04_B08",))
    with pytest.raises(ValueError, match="image modalities only"):
        _config(local_path=(DATE,))
    with pytest.raises(ValueError, match="local_width"):
        _config(local_path=(L2A10,), local_width=0)


def test_starts_as_the_model_without_it_and_trains(tmp_path: Path) -> None:
    plain_config = _config()
    config = _config(local_path=(L2A10,), local_width=16)
    torch.manual_seed(0)
    plain = CopgenBackbone(plain_config).eval()
    model = CopgenBackbone(config).eval()
    assert sum(p.numel() for p in model.parameters()) == count_backbone_parameters(config)
    sources = [BY_KEY[k] for k in (DEM, LULC, DATE)]
    assert count_backbone_parameters(config) - count_backbone_parameters(plain_config) == \
        LocalPath.count_parameters(BY_KEY[L2A10], sources, 16)
    loaded = model.load_state_dict(plain.state_dict(), strict=False)
    assert loaded.unexpected_keys == [] and all(k.startswith(f"local_paths.{L2A10}.") for k in loaded.missing_keys)
    lat, ts = _inputs(model)
    with torch.no_grad():
        for a, b in zip(model(lat, ts), plain(lat, ts), strict=True):
            assert torch.equal(a, b)  # zero-initialised last layer: exactly the model without it
    model.train()
    loss = sum((o**2).mean() for o in model(lat, ts))
    loss.backward()  # type: ignore[union-attr]
    path = model.local_paths[L2A10]  # type: ignore[index]
    assert path.out.weight.grad is not None and float(path.out.weight.grad.abs().sum()) > 0
    with torch.no_grad():  # trained weights change only the target and survive a save and load
        path.out.weight.normal_(std=0.1)
        outs = model.eval()(lat, ts)
        ref = plain(lat, ts)
        assert not torch.allclose(outs[2], ref[2])
        for i in (0, 1, 3):
            assert torch.equal(outs[i], ref[i])
        save_backbone(model, tmp_path / "bb")
    again = load_backbone(tmp_path / "bb").eval()
    assert again.config.local_path == (L2A10,) and again.config.local_width == 16
    with torch.no_grad():
        torch.testing.assert_close(again(lat, ts)[2], outs[2])


def test_a_source_at_pure_noise_hardly_matters_and_a_clean_one_does() -> None:
    """The path reads a source through its signal share alpha(t)**2: ~0.005 at t = 1000, 1 at t = 0."""
    assert float(signal_alpha(torch.tensor([1000.0])) ** 2) < 0.01
    assert float(signal_alpha(torch.tensor([0.0]))) == 1.0
    torch.manual_seed(0)
    path = LocalPath(BY_KEY[L2A10], [BY_KEY[DEM], BY_KEY[LULC]], 16)
    with torch.no_grad():
        path.out.weight.normal_(std=0.5)
    gen = torch.Generator().manual_seed(3)
    dem, lulc = torch.randn((1, 8, 8, 8), generator=gen), torch.randn((1, 8, 24, 24), generator=gen)
    other = torch.randn((1, 8, 24, 24), generator=gen)
    emb = torch.zeros((1, 64))

    def change(gate: float) -> float:
        g = [torch.tensor([1.0]), torch.tensor([gate])]
        with torch.no_grad():
            return float((path([dem, lulc], g, emb) - path([dem, other], g, emb)).abs().mean())

    noise_gate = float(signal_alpha(torch.tensor([1000.0])) ** 2)
    assert change(noise_gate) < 0.05 * change(1.0)
    out = path([dem, lulc], [torch.tensor([1.0])] * 2, emb)
    assert out.shape == (1, 8, 24, 24)  # the DEM's 8 x 8 latent is resampled onto the target's grid


def test_local_path_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match="scalar"):
        LocalPath(BY_KEY[DATE], [BY_KEY[DEM]], 8)
    with pytest.raises(ValueError, match="own target"):
        LocalPath(BY_KEY[L2A10], [BY_KEY[L2A10]], 8)


def test_a_path_that_reads_its_own_latent() -> None:
    config = _config(local_path=(L2A10,), local_width=16, local_self=True)
    assert BackboneConfig.from_dict(config.to_dict()) == config
    model = CopgenBackbone(config).eval()
    assert sum(p.numel() for p in model.parameters()) == count_backbone_parameters(config)
    without = count_backbone_parameters(_config(local_path=(L2A10,), local_width=16))
    assert count_backbone_parameters(config) - without == 8 * 16  # the target's 8 channels into the 1 x 1 input
    path = model.local_paths[L2A10]  # type: ignore[index]
    with torch.no_grad():
        path.out.weight.normal_(std=0.5)
    lat, ts = _inputs(model)
    changed = [x.clone() for x in lat]
    changed[2] = changed[2] + 1.0  # the target's own noisy latent
    with torch.no_grad():
        a = path([lat[i] for i in (0, 1, 3)], [torch.ones(2)] * 3, torch.zeros((2, 64)), lat[2])
        b = path([lat[i] for i in (0, 1, 3)], [torch.ones(2)] * 3, torch.zeros((2, 64)), changed[2])
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="own"):
        path([lat[i] for i in (0, 1, 3)], [torch.ones(2)] * 3, torch.zeros((2, 64)))
    with pytest.raises(ValueError, match="own"):
        LocalPath(BY_KEY[L2A10], [BY_KEY[DEM]], 8)([lat[0]], [torch.ones(2)], torch.zeros((2, 64)), lat[2])


def test_deeper_paths() -> None:
    shallow = _config(local_path=(L2A10,), local_width=16, local_self=True)
    deep = dataclasses.replace(shallow, local_depth=3)
    assert BackboneConfig.from_dict(deep.to_dict()).local_depth == 3
    model = CopgenBackbone(deep)
    assert sum(p.numel() for p in model.parameters()) == count_backbone_parameters(deep)
    assert count_backbone_parameters(deep) - count_backbone_parameters(shallow) == 2 * (9 * 16 * 16 + 16)
    with pytest.raises(ValueError, match="local_depth"):
        dataclasses.replace(shallow, local_depth=0)
