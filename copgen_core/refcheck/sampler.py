"""Golden check of the latent-space sampler against ``<ref>/sampler/``.

Rebuilds the reference backbone from ``<ref>/backbone/config.json`` (``constructor_kwargs``) with the
weights in ``<ref>/backbone/weights.safetensors`` (loaded strictly, "math" attention as the vectors
were made), then runs :func:`copgen_core.generate.sample_latents` from the saved initial noise with
the saved condition latents, for every step count in ``sampler/config.json`` → ``per_steps``. Each
step count yields two checks: the final latents (``allclose(rtol=1e-4, atol=1e-4)``, reported as
``max |got - want| / (1 + |want|)`` against 1e-4) and the continuous time of every model call
(against ``nfe_t_continuous``; one float32 ulp allowed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from copgen_core.backbone import BackboneConfig, CopgenBackbone
from copgen_core.generate import sample_latents
from copgen_core.modalities import canonical
from copgen_core.refcheck import CheckResult

SECTION = "sampler"
LATENT_TOLERANCE = 1e-4
"""allclose(rtol=1e-4, atol=1e-4), as the reference README suggests."""
TIME_TOLERANCE = 1.2e-7
"""Model-call times must agree to about one float32 ulp at t = 1."""


def reference_backbone(ref_dir: Path) -> CopgenBackbone:
    """The reference backbone of ``<ref>/backbone`` with its weights, in eval mode, math attention.

    Raises
    ------
    FileNotFoundError
        If the config or weights are missing.
    RuntimeError
        If the weights do not load strictly.
    """
    ref_dir = Path(ref_dir)
    kwargs: dict[str, Any] = json.loads((ref_dir / "backbone" / "config.json").read_text())[
        "constructor_kwargs"
    ]
    config = BackboneConfig(
        modalities=tuple(m.key for m in canonical(kwargs["img_sizes"])),
        embed_dim=int(kwargs["embed_dim"]),
        depth=int(kwargs["depth"]),
        num_heads=int(kwargs["num_heads"]),
        mlp_ratio=float(kwargs["mlp_ratio"]),
        qkv_bias=bool(kwargs["qkv_bias"]),
    )
    net = CopgenBackbone(config, attention="math")
    net.load_state_dict(load_file(str(ref_dir / "backbone" / "weights.safetensors")), strict=True)
    return net.eval()


def solver_settings(solver: dict[str, Any]) -> dict[str, Any]:
    """Map the official ``DPM_Solver`` settings of ``config.json`` → ``solver`` to ours.

    Raises
    ------
    ValueError
        For settings this implementation does not reproduce (noise prediction, thresholding, a
        final denoising step, the "taylor" solver type or the adaptive method).
    """
    unsupported = {
        "predict_x0": (solver.get("predict_x0", True), True),
        "thresholding": (solver.get("thresholding", False), False),
        "denoise": (solver.get("denoise", False), False),
        "solver_type": (solver.get("solver_type", "dpm_solver"), "dpm_solver"),
    }
    bad = {k: got for k, (got, want) in unsupported.items() if got != want}
    methods = {"fast": "singlestep", "singlestep": "singlestep", "multistep": "multistep"}
    if bad or solver.get("method", "fast") not in methods:
        raise ValueError(
            f"reference solver settings {bad or {'method': solver.get('method')}} are not reproduced by "
            "copgen_core.sampler (DPM-Solver++ data prediction, dpm_solver form, no final denoise)"
        )
    return {
        "order": int(solver.get("order", 3)),
        "method": methods[solver.get("method", "fast")],
        "spacing": solver.get("skip_type", "time_uniform"),
        "t_start": float(solver.get("T", 1.0)),
        "t_end": float(solver.get("eps", 1e-3)),
    }


def _latent_error(got: Tensor, want: Tensor) -> tuple[float, float]:
    diff = (got - want).abs()
    return float((diff / (1.0 + want.abs())).max()), float(diff.max())


def check_steps(
    ref_dir: Path,
    name: str,
    *,
    net: CopgenBackbone | None = None,
    orders: Sequence[int] | None = None,
) -> list[CheckResult]:
    """Run one step count of ``sampler/config.json`` → ``per_steps`` (e.g. ``"steps9"``) and compare.

    Parameters
    ----------
    ref_dir:
        Directory laid out like ``shared/reference/copgen``.
    name:
        A ``per_steps`` key.
    net:
        The reference backbone (built with :func:`reference_backbone` when None).
    orders:
        Override the outer-step orders (to show that a wrong list is caught); the solver's own
        :func:`~copgen_core.sampler.singlestep_orders` when None.

    Returns
    -------
    list[CheckResult]
        ``<name>/latents`` and ``<name>/nfe_times``.
    """
    ref_dir = Path(ref_dir)
    config = json.loads((ref_dir / SECTION / "config.json").read_text())
    case = config["per_steps"][name]
    cases = load_file(str(ref_dir / SECTION / "cases.safetensors"))
    net = net if net is not None else reference_backbone(ref_dir)
    generated = [entry["modality"] for entry in config["generated_concat_order"]]
    noise = {key: cases[f"noise/{key}"] for key in generated}
    conditions = {key: cases[f"cond/{key}"] for key in config["conditioned"]}
    settings = solver_settings(config["solver"])

    times: list[float] = []

    def record(call: int, t: Tensor, x0: Tensor) -> None:
        times.append(float(t[0]))

    out = sample_latents(
        net,
        noise,
        conditions,
        steps=int(case["steps"]),
        orders=orders,
        **settings,
        callback=record,
    )
    got = torch.cat([out[key].flatten(1) for key in generated], dim=1)
    want = torch.cat([cases[f"{name}/out/{key}"].flatten(1) for key in generated], dim=1)
    rel, absolute = _latent_error(got, want)
    results = [
        CheckResult(
            SECTION,
            f"{name}/latents",
            rel,
            LATENT_TOLERANCE,
            rel <= LATENT_TOLERANCE,
            f"max abs {absolute:.2e}, |x| <= {float(want.abs().max()):.1f}",
        )
    ]
    want_t = cases[f"{name}/nfe_t_continuous"]
    if len(times) != want_t.shape[0]:
        results.append(
            CheckResult(
                SECTION, f"{name}/nfe_times", float("inf"), TIME_TOLERANCE, False,
                f"{len(times)} model calls, expected {want_t.shape[0]}",
            )
        )  # fmt: skip
    else:
        err = float((torch.tensor(times) - want_t).abs().max())
        results.append(
            CheckResult(
                SECTION,
                f"{name}/nfe_times",
                err,
                TIME_TOLERANCE,
                err <= TIME_TOLERANCE,
                f"{len(times)} calls",
            )
        )
    return results


def run(ref_dir: Path) -> list[CheckResult]:
    """Check every step count listed in ``<ref>/sampler/config.json`` (9, 10, 30 and 50 in set A)."""
    ref_dir = Path(ref_dir)
    config = json.loads((ref_dir / SECTION / "config.json").read_text())
    try:
        solver_settings(config["solver"])
    except ValueError as exc:
        return [CheckResult(SECTION, "solver_settings", float("inf"), 0.0, False, str(exc))]
    net = reference_backbone(ref_dir)
    results: list[CheckResult] = []
    for name in sorted(config["per_steps"], key=lambda k: int(config["per_steps"][k]["steps"])):
        results.extend(check_steps(ref_dir, name, net=net))
    return results
