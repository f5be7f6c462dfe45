"""Ground attention heads: the fixed distance bias, official state dicts, save/load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from copgen_core.backbone import (
    BackboneConfig,
    CopgenBackbone,
    ground_attention_bias,
    token_centres,
)
from copgen_core.checkpoints import load_backbone, save_backbone
from copgen_core.presets import backbone_preset

L1C = "S2L1C_B02_B03_B04_B08"
L2A = "S2L2A_B02_B03_B04_B08"
L2A20 = "S2L2A_B05_B06_B07_B11_B12_B8A"


def _config(heads: int = 2, **kw: object) -> BackboneConfig:
    return dataclasses.replace(backbone_preset("tiny", [L1C, L2A, L2A20, "mean_timestamps"]), ground_heads=heads,
                               **kw)


def _inputs(model: CopgenBackbone, batch: int = 2, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    lat = [torch.randn((batch, *m.latent_shape), generator=gen) for m in model.modalities]
    ts = [torch.rand((batch,), generator=gen) * 1000 for _ in model.modalities]
    return lat, ts


def test_config_checks_and_round_trips() -> None:
    with pytest.raises(ValueError, match="ground_heads"):
        _config(heads=5)
    with pytest.raises(ValueError, match="ground_sigma"):
        _config(ground_sigma=0.0)
    config = _config(heads=3, ground_sigma=0.05)
    assert BackboneConfig.from_dict(config.to_dict()) == config
    assert backbone_preset("base").ground_heads == 0  # the official architectures have none


def test_distance_bias_links_the_same_ground_across_resolutions() -> None:
    config = _config(heads=2, ground_sigma=1 / 24)
    bias = ground_attention_bias(config)
    assert bias is not None and bias.shape == (1, 4, config.num_tokens, config.num_tokens)
    spans = config.token_layout.spans()
    l1c, l2a, l2a20 = spans[L1C][0], spans[L2A][0], spans[L2A20][0]
    # token 0 of L1C and of L2A (10 m) sit on the same ground: no penalty; the next token one lattice step away
    assert float(bias[0, 0, l2a, l1c]) == 0.0
    assert float(bias[0, 0, l2a, l1c + 1]) == pytest.approx(-0.5 * (1 / 12) ** 2 / (1 / 24) ** 2)
    # head 1 is twice as wide: a quarter of the penalty
    assert float(bias[0, 1, l2a, l1c + 1]) == pytest.approx(float(bias[0, 0, l2a, l1c + 1]) / 4)
    # a 20 m token covers 2 x 2 tokens at 10 m: closer to them than to a far one
    assert float(bias[0, 0, l2a20, l2a]) > float(bias[0, 0, l2a20, l2a + 11])
    # time tokens, the date token and the non-ground heads are unbiased
    centres = token_centres(config)
    assert torch.isnan(centres[: len(config.modalities)]).all()
    date = spans["mean_timestamps"][0]
    assert float(bias[0, 0, l2a, date]) == 0.0 and float(bias[0, 0, 0, l1c + 5]) == 0.0
    assert not bias[0, 2:].any()


def test_ground_heads_add_no_weights_and_change_attention() -> None:
    torch.manual_seed(0)
    plain = CopgenBackbone(dataclasses.replace(_config(heads=2), ground_heads=0))
    torch.manual_seed(0)
    grounded = CopgenBackbone(_config(heads=2))
    assert plain.ground_bias is None and grounded.ground_bias is not None
    assert set(grounded.state_dict()) == set(plain.state_dict())  # the bias is a buffer outside state dicts
    for k, v in plain.state_dict().items():
        assert torch.equal(v, grounded.state_dict()[k])
    lat, ts = _inputs(plain)
    with torch.no_grad():
        assert not torch.allclose(plain(lat, ts)[1], grounded(lat, ts)[1])  # same weights, other attention


def test_sdpa_and_math_attention_agree_with_the_bias() -> None:
    torch.manual_seed(0)
    model = CopgenBackbone(_config(heads=2))
    lat, ts = _inputs(model)
    with torch.no_grad():
        fast = model(lat, ts)
        model.set_attention("math")
        exact = model(lat, ts)
    for a, b in zip(fast, exact, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_save_and_load_rebuild_the_bias(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CopgenBackbone(_config(heads=2, ground_sigma=0.05)).eval()
    save_backbone(model, tmp_path / "bb")
    back = load_backbone(tmp_path / "bb")
    assert back.config == model.config
    assert back.ground_bias is not None and back.ground_bias.device.type == "cpu"
    lat, ts = _inputs(model)
    with torch.no_grad():
        for a, b in zip(model(lat, ts), back(lat, ts), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
