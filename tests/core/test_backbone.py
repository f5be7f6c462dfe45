"""Specification of the COP-GEN backbone: golden vectors, architecture, sizes and input checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from copgen_core.backbone import BackboneConfig, CopgenBackbone, timestep_embedding
from copgen_core.modalities import KEYS, resolve
from copgen_core.presets import (
    BACKBONE_PRESETS,
    OFFICIAL_PARAMETER_COUNTS,
    backbone_preset,
    count_backbone_parameters,
)
from copgen_core.refcheck import backbone as ref_backbone
from tests.paths import REFERENCE

BACKBONE_DIR = REFERENCE / "backbone"
SMALL = BackboneConfig(embed_dim=32, depth=2, num_heads=2)


@pytest.fixture(scope="module")
def reference_model() -> CopgenBackbone:
    return ref_backbone.load_reference_model(BACKBONE_DIR)


def random_inputs(model: CopgenBackbone, batch: int = 2, seed: int = 0) -> tuple[list, list]:
    gen = torch.Generator().manual_seed(seed)
    latents = [torch.randn(batch, *resolve(k).latent_shape, generator=gen) for k in model.keys]
    times = [torch.rand(batch, generator=gen) * 1000 for _ in model.keys]
    return latents, times


def test_golden_vectors_match_with_math_and_sdpa_attention(reference_model: CopgenBackbone) -> None:
    results = ref_backbone.check_model(reference_model, BACKBONE_DIR)
    failed = [r.line() for r in results if not r.ok]
    assert not failed, failed
    names = {r.name for r in results}
    # 3 cases x 2 attention paths, plus 31 intermediates of case 1 x 2 attention paths
    assert {f"case{k}/out [{m}]" for k in (1, 2, 3) for m in ("math", "sdpa")} <= names
    assert len(results) == 2 * (3 + 31)
    # the math path reproduces the official outputs to float32 rounding (bit for bit on the golden
    # machine; float32 exp differs in the last bit across CPUs, see copgen_core/refcheck/backbone.py)
    assert max(r.worst for r in results if r.name.endswith("/out [math]")) <= 1e-6
    assert max(r.worst for r in results if r.name.endswith("[math]")) <= 1e-4


def test_refcheck_run_reads_config_and_passes() -> None:
    results = ref_backbone.run(REFERENCE)
    assert results and all(r.ok for r in results)


def test_perturbed_weight_fails_the_golden_check(reference_model: CopgenBackbone) -> None:
    model = CopgenBackbone(reference_model.config)
    model.load_state_dict(reference_model.state_dict())
    with torch.no_grad():
        model.out_blocks[1].mlp.fc2.bias[0] += 1e-3
    results = ref_backbone.check_model(model.eval(), BACKBONE_DIR)
    assert not all(r.ok for r in results)
    failed = {r.name for r in results if not r.ok}
    assert "case1/out [math]" in failed and "case1/out_blocks.1 [math]" in failed
    assert "case1/in_blocks.0 [math]" not in failed  # the divergence is located after the perturbed block


def test_state_dict_keys_are_the_official_ones(reference_model: CopgenBackbone) -> None:
    official = load_file(str(BACKBONE_DIR / "weights.safetensors"))
    ours = reference_model.state_dict()
    assert set(ours) == set(official)
    assert len(ours) == 114
    assert all(ours[k].shape == official[k].shape for k in official)


def test_time_embedding_is_cos_then_sin_and_t0_gives_ones_then_zeros() -> None:
    emb = timestep_embedding(torch.tensor([0.0, 500.25]), 64)
    assert emb.shape == (2, 64) and emb.dtype == torch.float32
    assert torch.equal(emb[0], torch.cat([torch.ones(32), torch.zeros(32)]))
    k = torch.arange(32, dtype=torch.float64)
    freqs = torch.exp(-torch.log(torch.tensor(10000.0, dtype=torch.float64)) * k / 32)
    want = torch.cat([torch.cos(500.25 * freqs), torch.sin(500.25 * freqs)])
    assert torch.allclose(emb[1].double(), want, atol=1e-4)


def test_official_presets_have_the_published_parameter_counts() -> None:
    for name, count in OFFICIAL_PARAMETER_COUNTS.items():
        assert count_backbone_parameters(BACKBONE_PRESETS[name]) == count
    with torch.device("meta"):
        base = CopgenBackbone(BACKBONE_PRESETS["base"])
    assert sum(p.numel() for p in base.parameters()) == OFFICIAL_PARAMETER_COUNTS["base"]
    assert len(base.state_dict()) == 322
    assert base.pos_embed.shape == (1, 834, 1024)
    assert (len(base.in_blocks), len(base.out_blocks)) == (10, 10)


def test_analytic_count_matches_instantiated_models_for_odd_configs() -> None:
    configs = [
        BACKBONE_PRESETS["tiny"],
        BackboneConfig(
            modalities=("DEM_DEM", "mean_timestamps"), embed_dim=48, depth=3, num_heads=3, qkv_bias=True
        ),
        BackboneConfig(embed_dim=40, depth=4, num_heads=5, mlp_ratio=2.5),
    ]
    for config in configs:
        with torch.device("meta"):
            model = CopgenBackbone(config)
        assert count_backbone_parameters(config) == sum(p.numel() for p in model.parameters())


def test_tiny_preset_is_small_enough_for_cpu_training() -> None:
    tiny = BACKBONE_PRESETS["tiny"]
    assert count_backbone_parameters(tiny) < 5_000_000
    assert tiny.modalities == KEYS


def test_subset_model_builds_fewer_tokens_and_heads() -> None:
    config = dataclasses.replace(SMALL, modalities=("3d_cartesian_lat_lon", "S2L2A_B02_B03_B04_B08"))
    model = CopgenBackbone(config)
    assert model.pos_embed.shape == (1, 2 + 3 + 144, 32)
    assert len(model.patch_embeds) == len(model.decoder_preds) == 2
    latents, times = random_inputs(model)
    outs = model(latents, times)
    assert [o.shape for o in outs] == [x.shape for x in latents]


def test_config_accepts_aliases_but_rejects_non_canonical_order() -> None:
    config = BackboneConfig(modalities=("dem", "s2l2a_10m"), embed_dim=32, depth=2, num_heads=2)
    assert config.modalities == ("DEM_DEM", "S2L2A_B02_B03_B04_B08")
    with pytest.raises(ValueError, match="canonical"):
        BackboneConfig(modalities=("S2L2A_B02_B03_B04_B08", "DEM_DEM"), embed_dim=32, depth=2, num_heads=2)
    with pytest.raises(ValueError, match="divisible"):
        BackboneConfig(embed_dim=30, depth=2, num_heads=4)


def test_config_round_trips_through_dict() -> None:
    config = backbone_preset("large", ["dem", "lulc"])
    assert BackboneConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown BackboneConfig fields"):
        BackboneConfig.from_dict({**config.to_dict(), "heads": 3})


def test_forward_dict_matches_forward_and_scalar_timesteps_broadcast(reference_model: CopgenBackbone) -> None:
    latents, times = random_inputs(reference_model)
    times = [torch.full((2,), 250.0) for _ in times]
    with torch.no_grad():
        outs = reference_model(latents, times)
        by_key = reference_model.forward_dict(
            dict(zip(reference_model.keys, latents, strict=True)), {k: 250.0 for k in reference_model.keys}
        )
    for k, o in zip(reference_model.keys, outs, strict=True):
        assert torch.equal(by_key[k], o)


def test_each_modality_output_depends_on_its_timestep(reference_model: CopgenBackbone) -> None:
    latents, times = random_inputs(reference_model)
    with torch.no_grad():
        base = reference_model(latents, times)
        times2 = list(times)
        times2[3] = torch.zeros(2)
        changed = reference_model(latents, times2)
    assert not torch.allclose(base[3], changed[3])


def test_wrong_inputs_raise_with_the_offending_modality(reference_model: CopgenBackbone) -> None:
    latents, times = random_inputs(reference_model)
    bad = list(latents)
    bad[1] = torch.zeros(2, 8, 6, 6)
    with pytest.raises(ValueError, match=r"DEM_DEM has shape \(2, 8, 6, 6\), expected \(2, 8, 8, 8\)"):
        reference_model(bad, times)
    with pytest.raises(ValueError, match="expected 12 latents"):
        reference_model(latents[:11], times[:11])
    bad_t = list(times)
    bad_t[0] = torch.zeros(3)
    with pytest.raises(ValueError, match="timestep for 3d_cartesian_lat_lon"):
        reference_model(latents, bad_t)
    with pytest.raises(ValueError, match="differ from the model's modalities"):
        reference_model.forward_dict({"dem": latents[1]}, {"dem": times[1]})
    with pytest.raises(ValueError, match="unknown attention mode"):
        reference_model.set_attention("flash")  # type: ignore[arg-type]


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    plain = CopgenBackbone(dataclasses.replace(SMALL, modalities=("DEM_DEM", "mean_timestamps")))
    ckpt = CopgenBackbone(plain.config, gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    latents, times = random_inputs(plain)
    grads = []
    for model in (plain, ckpt):
        model.zero_grad()
        loss = sum((o**2).mean() for o in model(latents, times))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_bfloat16_weights_run_and_stay_close_to_fp32(reference_model: CopgenBackbone) -> None:
    latents, times = random_inputs(reference_model)
    low = CopgenBackbone(reference_model.config)
    low.load_state_dict(reference_model.state_dict())
    low = low.to(torch.bfloat16).eval()
    with torch.no_grad():
        ref = reference_model(latents, times)
        outs = low([x.to(torch.bfloat16) for x in latents], times)
    assert all(o.dtype == torch.bfloat16 for o in outs)
    assert max(float((o.float() - r).abs().max()) for o, r in zip(outs, ref, strict=True)) < 0.1
