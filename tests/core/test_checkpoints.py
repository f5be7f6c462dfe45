"""Specification of checkpoint loading, saving and conversion (official .pth <-> copgen format)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from copgen_core.backbone import BackboneConfig, CopgenBackbone
from copgen_core.checkpoints import (
    CheckpointError,
    convert_official,
    export_official,
    infer_backbone_config,
    infer_vae_config,
    load_backbone,
    load_vae,
    read_state_dict,
    save_backbone,
    save_vae,
)
from copgen_core.modalities import resolve
from copgen_core.presets import BACKBONE_PRESETS, vae_preset
from copgen_core.vae import KLVAE
from pipelines.cmd_convert import command as convert_command
from tests.paths import REFERENCE


class _OpensFile:
    """Unpickling this object calls ``open(marker, "w")``, i.e. runs code that creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def official_backbone() -> dict[str, torch.Tensor]:
    """The golden backbone weights in a non-sorted key order (as an official file could have)."""
    state = load_file(str(REFERENCE / "backbone" / "weights.safetensors"))
    return {k: state[k] for k in reversed(sorted(state))}


@pytest.fixture(scope="module")
def official_vae() -> dict[str, torch.Tensor]:
    return load_file(str(REFERENCE / "vae" / "weights.safetensors"))


@pytest.fixture()
def backbone_pth(tmp_path: Path, official_backbone: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "500000_nnet_ema.pth"
    torch.save(official_backbone, path)
    return path


def _outputs(model: CopgenBackbone) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    latents = [torch.randn(1, *resolve(k).latent_shape, generator=gen) for k in model.keys]
    with torch.no_grad():
        return model(latents, [torch.tensor([400.0]) for _ in model.keys])


@pytest.mark.parametrize("writer", ["raw_pickle", "torch_save"])
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    payload = {"pos_embed": torch.zeros(1), "evil": _OpensFile(marker)}
    if writer == "raw_pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"refused to load .*evil\.pth"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_backbone(path, num_heads=4)
    assert not marker.exists()


def test_corrupt_and_non_state_dict_files_are_reported(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth"):
        read_state_dict(junk)
    listy = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listy)
    with pytest.raises(CheckpointError, match=r"flat state dict"):
        read_state_dict(listy)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_state_dict(tmp_path / "missing.pth")


def test_module_prefix_is_stripped(tmp_path: Path, official_backbone: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in official_backbone.items()}, path)
    state = read_state_dict(path)
    assert list(state) == list(official_backbone)
    model = load_backbone(path, num_heads=4)
    assert torch.equal(model.pos_embed, official_backbone["pos_embed"])


def test_official_to_ours_to_official_is_bit_exact(
    tmp_path: Path, backbone_pth: Path, official_backbone: dict[str, torch.Tensor]
) -> None:
    out = convert_official(backbone_pth, tmp_path / "ours", num_heads=4)
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "backbone" and config["config"]["num_heads"] == 4
    assert config["modalities"][0] == "3d_cartesian_lat_lon" and config["dtype"] == "float32"
    assert config["scale_factors"]["S2L2A_B02_B03_B04_B08"] == 0.853416
    assert len(config["sha256"]) == 64 and config["num_parameters"] == 361_538
    back = export_official(out, tmp_path / "back.pth")
    state = torch.load(back, map_location="cpu", weights_only=True)
    assert list(state) == list(official_backbone)  # the official key order is kept
    for k, v in official_backbone.items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k


def test_converted_backbone_loads_and_matches_the_official_weights(
    tmp_path: Path, backbone_pth: Path
) -> None:
    out = convert_official(backbone_pth, tmp_path / "ours", num_heads=4)
    from_ours = load_backbone(out)
    from_pth = load_backbone(backbone_pth, num_heads=4)
    assert not from_ours.training and from_ours.attention == "sdpa"
    for a, b in zip(_outputs(from_ours), _outputs(from_pth), strict=True):
        assert torch.equal(a, b)
    assert load_backbone(out / "model.safetensors").config == from_ours.config


def test_tampered_weights_fail_the_hash_check(tmp_path: Path, backbone_pth: Path) -> None:
    out = convert_official(backbone_pth, tmp_path / "ours", num_heads=4)
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_backbone(out)


def test_heads_come_from_flag_preset_or_a_unique_official_size(official_backbone: dict) -> None:
    with pytest.raises(CheckpointError, match="--num-heads"):
        infer_backbone_config(official_backbone)
    with pytest.raises(CheckpointError, match="preset 'base' has embed_dim 1024"):
        infer_backbone_config(official_backbone, preset="base")
    for name in ("base", "large", "huge"):
        with torch.device("meta"):
            state = CopgenBackbone(BACKBONE_PRESETS[name]).state_dict()
        assert infer_backbone_config(state) == BACKBONE_PRESETS[name]


def test_missing_extra_and_misshaped_keys_are_named(tmp_path: Path, official_backbone: dict) -> None:
    state = dict(official_backbone)
    del state["mid_block.norm3.bias"]
    state["extra.weight"] = torch.zeros(3)
    state["out_blocks.0.skip_linear.weight"] = torch.zeros(64, 64)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_backbone(path, num_heads=4)
    message = str(info.value)
    assert "missing keys (1): mid_block.norm3.bias" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "out_blocks.0.skip_linear.weight: expected (64, 128), got (64, 64)" in message
    assert "--num-heads" in message  # says what to check next


def test_half_precision_weights_load_as_float32_by_default(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CopgenBackbone(BackboneConfig(modalities=("DEM_DEM",), embed_dim=32, depth=2, num_heads=2))
    out = save_backbone(model, tmp_path / "half", dtype=torch.float16)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    loaded = load_backbone(out)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert torch.equal(loaded.pos_embed, model.pos_embed.half().float())
    assert all(p.dtype == torch.float16 for p in load_backbone(out, dtype=None).parameters())
    with pytest.raises(FileExistsError, match="overwrite"):
        save_backbone(model, out)
    save_backbone(model, out, overwrite=True)
    assert torch.equal(load_backbone(out).pos_embed, model.pos_embed)


def test_vae_convert_records_modality_and_scale(tmp_path: Path, official_vae: dict) -> None:
    pth = tmp_path / "model-50-ema.pth"
    torch.save(official_vae, pth)
    assert infer_vae_config(official_vae) == vae_preset("tiny", "s2l2a_10m")
    with pytest.raises(ValueError, match="--modality"):
        convert_official(pth, tmp_path / "x", kind="vae")
    with pytest.raises(CheckpointError, match="encodes 4 channels, but S1RTC_vh_vv has 2"):
        convert_official(pth, tmp_path / "x", kind="vae", modality="s1")
    out = convert_official(pth, tmp_path / "vae", kind="vae", modality="s2l2a_10m")
    vae = load_vae(out, "S2L2A_B02_B03_B04_B08")
    assert isinstance(vae, KLVAE) and vae.scale_factor == 0.853416
    with pytest.raises(CheckpointError, match="not of 'S2L1C_B02_B03_B04_B08'"):
        load_vae(out, "s2l1c_10m")
    with pytest.raises(CheckpointError, match="'vae' checkpoint, not a 'backbone'"):
        load_backbone(out)
    direct = load_vae(pth, "s2l1c_10m")
    assert direct.scale_factor == 0.772514
    for k, v in official_vae.items():
        assert torch.equal(direct.state_dict()[k], v) and torch.equal(vae.state_dict()[k], v)
    state = torch.load(export_official(out, tmp_path / "vae.pth"), weights_only=True)
    assert list(state) == list(official_vae)


def test_save_and_load_vae_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = KLVAE(vae_preset("tiny", "dem"), scale_factor=0.404247)
    out = save_vae(model, tmp_path / "dem", "dem")
    loaded = load_vae(out)
    assert loaded.config == model.config and loaded.scale_factor == 0.404247
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), model.eval().encode(x))


def test_cli_converts_and_exports(tmp_path: Path, backbone_pth: Path, official_backbone: dict) -> None:
    runner = CliRunner()
    dst = tmp_path / "cli"
    result = runner.invoke(convert_command, [str(backbone_pth), str(dst), "--num-heads", "4"])
    assert result.exit_code == 0, result.output
    assert (dst / "model.safetensors").is_file()
    result = runner.invoke(convert_command, [str(dst), str(tmp_path / "back.pth")])
    assert result.exit_code == 0, result.output
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert all(torch.equal(back[k], v) for k, v in official_backbone.items())


def test_cli_bad_input_exits_2_with_a_clear_message(tmp_path: Path, backbone_pth: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(convert_command, [str(tmp_path / "nope.pth"), str(tmp_path / "o")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    no_heads = runner.invoke(convert_command, [str(backbone_pth), str(tmp_path / "o")])
    assert no_heads.exit_code == 2 and "--num-heads" in no_heads.output
    vae_no_mod = runner.invoke(convert_command, [str(backbone_pth), str(tmp_path / "o"), "--kind", "vae"])
    assert vae_no_mod.exit_code == 2 and "--modality" in vae_no_mod.output
    bad_mod = runner.invoke(
        convert_command, [str(backbone_pth), str(tmp_path / "o"), "--kind", "vae", "--modality", "marsrover"]
    )
    assert bad_mod.exit_code == 2 and "unknown modality 'marsrover'" in bad_mod.output
    assert not (tmp_path / "o").exists()
