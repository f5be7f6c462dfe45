"""Golden checks of the KL-VAE against ``<ref>/vae/`` (official FrozenAutoencoderKL outputs).

The model is built from ``vae/config.json`` (``get_model_kwargs.ddconfig``, ``embed_dim`` and
``scale_factor``), loaded strictly from ``weights.safetensors`` and compared on moments, mean,
logvar, the scaled sample given the saved ε, what ``post_quant_conv`` receives in ``decode``, the
decoded image and the round trip. Tolerance: ``atol=1e-4``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from copgen_core.checkpoints import CheckpointError, check_state_dict, read_state_dict
from copgen_core.refcheck import CheckResult
from copgen_core.vae import KLVAE, VAEConfig

SECTION = "vae"
ATOL = 1e-4


def load_reference_model(vae_dir: Path) -> KLVAE:
    """Build the golden VAE from ``config.json`` and load ``weights.safetensors`` strictly.

    Raises
    ------
    FileNotFoundError, CheckpointError, ValueError, KeyError
        If the files are missing, the ddconfig is unsupported or the weights do not fit.
    """
    meta = json.loads((vae_dir / "config.json").read_text())
    kwargs = meta["get_model_kwargs"]
    config = VAEConfig.from_ddconfig(kwargs["ddconfig"], meta.get("embed_dim"))
    model = KLVAE(config, float(kwargs.get("scale_factor", meta.get("scale_factor", 1.0))))
    weights = vae_dir / "weights.safetensors"
    state = read_state_dict(weights)
    check_state_dict(model, state, source=str(weights), hint="the reference config.json does not match its weights")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _compare(name: str, got: Tensor, want: Tensor) -> CheckResult:
    if got.shape != want.shape:
        return CheckResult(SECTION, name, math.inf, ATOL, False, f"shape {tuple(got.shape)} != {tuple(want.shape)}")
    worst = float((got.double() - want.double()).abs().max()) if want.numel() else 0.0
    return CheckResult(SECTION, name, worst, ATOL, worst <= ATOL)


def _decode_capturing(model: KLVAE, z_scaled: Tensor) -> tuple[Tensor, Tensor]:
    """``model.decode(z_scaled)`` and the tensor ``post_quant_conv`` received."""
    seen: list[Tensor] = []

    def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        seen.append(args[0].detach())

    handle = model.post_quant_conv.register_forward_pre_hook(hook)
    try:
        out = model.decode(z_scaled)
    finally:
        handle.remove()
    return out, seen[0]


def check_model(model: KLVAE, vae_dir: Path) -> list[CheckResult]:
    """Compare ``model`` with every tensor in ``vae_dir/cases.safetensors``."""
    cases = load_file(str(vae_dir / "cases.safetensors"))
    x = cases["input/x"]
    with torch.no_grad():
        moments = model.moments(x)
        mean, logvar = torch.chunk(moments, 2, dim=1)
        z_scaled = model.encode(x, eps=cases["encode/eps"])
        decoded, unscaled = _decode_capturing(model, cases["decode/z_scaled"])
        roundtrip = model.decode(cases["encode/z_scaled"])
    return [
        _compare("encode/moments", moments, cases["encode/moments"]),
        _compare("encode/mean", mean, cases["encode/mean"]),
        _compare("encode/logvar", logvar, cases["encode/logvar"]),
        _compare("encode/z_scaled (saved eps)", z_scaled, cases["encode/z_scaled"]),
        _compare("decode/z_unscaled", unscaled, cases["decode/z_unscaled"]),
        _compare("decode/out", decoded, cases["decode/out"]),
        _compare("roundtrip/out", roundtrip, cases["roundtrip/out"]),
    ]


def run(ref_dir: Path) -> list[CheckResult]:
    """Run every VAE golden check under ``ref_dir/vae``; a build failure is one failed check."""
    vae_dir = Path(ref_dir) / SECTION
    try:
        model = load_reference_model(vae_dir)
    except (FileNotFoundError, CheckpointError, ValueError, KeyError) as exc:
        return [CheckResult(SECTION, "build model", math.inf, 0.0, False, str(exc))]
    return check_model(model, vae_dir)
