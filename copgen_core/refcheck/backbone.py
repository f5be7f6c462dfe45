"""Golden checks of the backbone against ``<ref>/backbone/`` (official COPGEN outputs).

The model is built from ``backbone/config.json`` → ``constructor_kwargs`` (so other sizes and
modality sets work), loaded strictly from ``weights.safetensors`` and run on every case of
``cases.safetensors`` with both attention paths (math and SDPA); every intermediate recorded in
``intermediates.safetensors`` is compared too. Tolerance: ``allclose(atol=1e-5, rtol=1e-5)`` for the
outputs, ``1e-4`` for the intermediates.

Why the intermediates get more room: the time embedding is ``cos/sin(t * exp(-ln(1e4) k / half))``
in float32, and float32 ``exp`` is CPU-dependent in the last bit (MKL picks its code path by
instruction set: on an AVX-512-FP16 machine 3 of 32 frequencies differ by one ulp from the golden
machine's). At ``t`` near 1000 one ulp of a frequency moves the embedding by ~3e-5, which the
blocks carry (up to ~5e-5 measured) before the output heads shrink it again (outputs within 3e-7).
On the machine that produced the golden vectors the math path is bit-exact.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from copgen_core.backbone import ATTENTION_MODES, BackboneConfig, CopgenBackbone
from copgen_core.checkpoints import CheckpointError, check_state_dict, read_state_dict
from copgen_core.modalities import resolve
from copgen_core.refcheck import CheckResult

SECTION = "backbone"
ATOL = 1e-5
RTOL = 1e-5
INTERMEDIATE_TOL = 1e-4
"""atol and rtol of the intermediates (see the module notes)."""


def config_from_reference(meta: dict[str, Any]) -> BackboneConfig:
    """The :class:`BackboneConfig` described by a golden ``backbone/config.json``.

    Raises
    ------
    ValueError
        If the official constructor arguments describe something this implementation does not
        build (a time-embedding MLP, or per-modality sizes that differ from the registry).
    KeyError
        On a missing field or an unknown modality.
    """
    kwargs = meta["constructor_kwargs"]
    order = list(meta.get("modality_order") or kwargs["img_sizes"])
    if kwargs.get("mlp_time_embed", False):
        raise ValueError("constructor_kwargs.mlp_time_embed=True is not supported; COP-GEN uses Identity")
    for key in order:
        m = resolve(key)
        c, h, _ = m.latent_shape
        got = (kwargs["in_chans"][key], kwargs["img_sizes"][key], kwargs["patch_size"][key])
        if got != (c, h, m.patch_size):
            raise ValueError(
                f"{key}: reference (in_chans, img_size, patch_size) = {got}, registry has {(c, h, m.patch_size)}"
            )
    return BackboneConfig(
        modalities=tuple(order),
        embed_dim=int(kwargs["embed_dim"]),
        depth=int(kwargs["depth"]),
        num_heads=int(kwargs["num_heads"]),
        mlp_ratio=float(kwargs.get("mlp_ratio", 4.0)),
        qkv_bias=bool(kwargs.get("qkv_bias", False)),
    )


def load_reference_model(backbone_dir: Path) -> CopgenBackbone:
    """Build the golden backbone from ``config.json`` and load ``weights.safetensors`` strictly.

    Raises
    ------
    FileNotFoundError, CheckpointError, ValueError, KeyError
        If the files are missing or the weights do not fit the config.
    """
    meta = json.loads((backbone_dir / "config.json").read_text())
    model = CopgenBackbone(config_from_reference(meta))
    weights = backbone_dir / "weights.safetensors"
    state = read_state_dict(weights)
    check_state_dict(model, state, source=str(weights), hint="the reference config.json does not match its weights")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _compare(name: str, got: Tensor, want: Tensor, detail: str = "", *, atol: float = ATOL,
             rtol: float = RTOL) -> CheckResult:
    if got.shape != want.shape:
        return CheckResult(SECTION, name, math.inf, atol, False, f"shape {tuple(got.shape)} != {tuple(want.shape)}")
    got, want = got.double(), want.double()
    worst = float((got - want).abs().max()) if want.numel() else 0.0
    ok = bool(torch.allclose(got, want, atol=atol, rtol=rtol))
    return CheckResult(SECTION, name, worst, atol, ok, detail or f"rtol={rtol:g}")


def check_model(model: CopgenBackbone, backbone_dir: Path) -> list[CheckResult]:
    """Compare ``model`` with every case and intermediate under ``backbone_dir``, with both attentions.

    The model's attention mode is restored afterwards.
    """
    cases = load_file(str(backbone_dir / "cases.safetensors"))
    inter_path = backbone_dir / "intermediates.safetensors"
    intermediates = load_file(str(inter_path)) if inter_path.is_file() else {}
    case_names = sorted({name.split("/", 1)[0] for name in cases})
    keys = model.keys
    results: list[CheckResult] = []
    previous = model.attention
    try:
        for mode in ATTENTION_MODES:
            model.set_attention(mode)
            for case in case_names:
                with torch.no_grad():
                    outs, record = model.forward_with_intermediates(
                        [cases[f"{case}/in/{k}"] for k in keys], [cases[f"{case}/t/{k}"] for k in keys]
                    )
                worst_key, worst_err = keys[0], -1.0
                ok = True
                for k, out in zip(keys, outs, strict=True):
                    r = _compare(f"{case}/out/{k}", out, cases[f"{case}/out/{k}"])
                    ok = ok and r.ok
                    if r.worst > worst_err:
                        worst_key, worst_err = k, r.worst
                results.append(
                    CheckResult(SECTION, f"{case}/out [{mode}]", worst_err, ATOL, ok, f"worst at {worst_key}")
                )
                for name, want in intermediates.items():
                    if not name.startswith(f"{case}/"):
                        continue
                    rec_name = name.split("/", 1)[1]
                    if rec_name not in record:
                        results.append(
                            CheckResult(SECTION, f"{name} [{mode}]", math.inf, ATOL, False, "not produced by the model")
                        )
                        continue
                    results.append(_compare(f"{name} [{mode}]", record[rec_name], want, atol=INTERMEDIATE_TOL,
                                            rtol=INTERMEDIATE_TOL))
    finally:
        model.set_attention(previous)
    return results


def run(ref_dir: Path) -> list[CheckResult]:
    """Run every backbone golden check under ``ref_dir/backbone``; a build failure is one failed check."""
    backbone_dir = Path(ref_dir) / SECTION
    try:
        model = load_reference_model(backbone_dir)
    except (FileNotFoundError, CheckpointError, ValueError, KeyError) as exc:
        return [CheckResult(SECTION, "build model", math.inf, 0.0, False, str(exc))]
    return check_model(model, backbone_dir)
