"""Specification of the KL-VAE: golden vectors, official structure, encode/decode conventions."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from copgen_core.modalities import MODALITIES, resolve
from copgen_core.presets import vae_preset
from copgen_core.refcheck import vae as ref_vae
from copgen_core.vae import KLVAE, VAEConfig
from tests.paths import REFERENCE

VAE_DIR = REFERENCE / "vae"


@pytest.fixture(scope="module")
def reference_model() -> KLVAE:
    return ref_vae.load_reference_model(VAE_DIR)


@pytest.fixture(scope="module")
def cases() -> dict[str, torch.Tensor]:
    return load_file(str(VAE_DIR / "cases.safetensors"))


def test_golden_vectors_match(reference_model: KLVAE) -> None:
    results = ref_vae.check_model(reference_model, VAE_DIR)
    assert [r.name for r in results] == [
        "encode/moments",
        "encode/mean",
        "encode/logvar",
        "encode/z_scaled (saved eps)",
        "decode/z_unscaled",
        "decode/out",
        "roundtrip/out",
    ]
    failed = [r.line() for r in results if not r.ok]
    assert not failed, failed


def test_refcheck_run_reads_config_and_passes() -> None:
    results = ref_vae.run(REFERENCE)
    assert results and all(r.ok for r in results)


def test_perturbed_weight_fails_the_golden_check(reference_model: KLVAE) -> None:
    model = KLVAE(reference_model.config, reference_model.scale_factor)
    model.load_state_dict(reference_model.state_dict())
    with torch.no_grad():
        model.decoder.conv_out.bias[0] += 1e-2
    failed = {r.name for r in ref_vae.check_model(model.eval(), VAE_DIR) if not r.ok}
    assert failed == {"decode/out", "roundtrip/out"}


def test_reference_structure_has_the_official_keys(reference_model: KLVAE) -> None:
    official = load_file(str(VAE_DIR / "weights.safetensors"))
    ours = reference_model.state_dict()
    assert set(ours) == set(official) and len(ours) == 180
    assert sum(v.numel() for v in ours.values()) == 1_258_508


def test_official_config_has_the_official_size_and_key_layout() -> None:
    with torch.device("meta"):
        model = KLVAE(vae_preset("official", "S2L1C_B05_B06_B07_B11_B12_B8A"))
    state = model.state_dict()
    assert len(state) == 248
    assert sum(k.startswith("encoder.") for k in state) == 106
    assert sum(k.startswith("decoder.") for k in state) == 138
    assert 83_000_000 < sum(v.numel() for v in state.values()) < 84_500_000
    assert state["encoder.conv_in.weight"].shape == (128, 6, 3, 3)
    assert state["encoder.down.2.block.0.nin_shortcut.weight"].shape == (512, 256, 1, 1)
    assert state["decoder.up.0.block.0.nin_shortcut.weight"].shape == (128, 256, 1, 1)
    assert (
        "decoder.up.0.upsample.conv.weight" not in state
        and "encoder.down.3.downsample.conv.weight" not in state
    )
    assert state["encoder.conv_out.weight"].shape == (16, 512, 3, 3)


def test_vae_presets_follow_the_modality_channels() -> None:
    for m in MODALITIES:
        if m.is_image:
            assert vae_preset("tiny", m.key).in_channels == m.vae_channels
    assert vae_preset("tiny", "lulc").output_channels == 10
    with pytest.raises(ValueError, match="scalar"):
        vae_preset("tiny", "mean_timestamps")


def test_default_encode_is_the_scaled_posterior_mean(reference_model: KLVAE, cases: dict) -> None:
    x = cases["input/x"]
    with torch.no_grad():
        z = reference_model.encode(x)
    assert torch.allclose(z, 0.5 * cases["encode/mean"], atol=1e-5)


def test_sampling_is_reproducible_with_a_generator_and_needs_one(reference_model: KLVAE, cases: dict) -> None:
    x = cases["input/x"]
    with torch.no_grad():
        a = reference_model.encode(x, sample=True, generator=torch.Generator().manual_seed(7))
        b = reference_model.encode(x, sample=True, generator=torch.Generator().manual_seed(7))
        c = reference_model.encode(x, sample=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="explicit torch.Generator"):
        reference_model.encode(x, sample=True)
    with pytest.raises(ValueError, match="sample=False"):
        reference_model.encode(x, generator=torch.Generator())
    with pytest.raises(ValueError, match="eps has shape"):
        reference_model.encode(x, eps=torch.zeros(2, 8, 2, 2))


def test_chunked_encode_and_decode_equal_whole_batch(reference_model: KLVAE) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, 32, 32, generator=gen) * 2 - 1
    z = torch.randn(3, 8, 4, 4, generator=gen)
    # batch-size dependent conv kernels differ in the last bits (~4e-6 here), far below the 1e-4 tolerance
    with torch.no_grad():
        assert torch.allclose(reference_model.encode(x, chunk_size=2), reference_model.encode(x), atol=1e-5)
        assert torch.allclose(reference_model.decode(z, chunk_size=1), reference_model.decode(z), atol=1e-5)
    with pytest.raises(ValueError, match="chunk_size"):
        reference_model.decode(z, chunk_size=0)


def test_decode_divides_by_the_scale_factor(reference_model: KLVAE) -> None:
    z = torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    other = KLVAE(reference_model.config, scale_factor=0.25)
    other.load_state_dict(reference_model.state_dict())
    with torch.no_grad():
        assert torch.allclose(other.eval().decode(0.5 * z), reference_model.decode(z), atol=1e-6)


def test_bad_inputs_raise_with_shapes(reference_model: KLVAE) -> None:
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        reference_model.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="multiples of 8"):
        reference_model.encode(torch.zeros(1, 4, 30, 30))
    with pytest.raises(ValueError, match=r"\(B, 8, h, w\)"):
        reference_model.decode(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="multiple of 32"):
        VAEConfig(in_channels=3, ch=48, ch_mult=(1, 2))
    with pytest.raises(ValueError, match="scale_factor"):
        KLVAE(VAEConfig(in_channels=3, ch=32, ch_mult=(1,)), scale_factor=0.0)


def test_config_round_trips_and_reads_official_ddconfig() -> None:
    config = vae_preset("official", "s1")
    assert VAEConfig.from_dict(config.to_dict()) == config
    dd = {
        "double_z": True,
        "z_channels": 8,
        "resolution": 192,
        "in_channels": 2,
        "out_ch": 2,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    assert VAEConfig.from_ddconfig(dd) == config
    with pytest.raises(ValueError, match="attn_resolutions"):
        VAEConfig.from_ddconfig({**dd, "attn_resolutions": [16]})
    assert resolve("s1").vae_channels == config.in_channels
