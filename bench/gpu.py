"""Sampling throughput of a COP-GEN backbone preset (random weights), with and without torch.compile.

Times :meth:`copgen_core.generate.CopgenModel.generate` in latent space (``decode=False``): all 10
image modalities generated, the two scalars generated too or given as conditions (``--scalars``),
DPM-Solver++ at ``--steps`` model calls per sample, for each batch size of ``--batches``. Reports
samples/s, the achieved TFLOP/s from an analytic count of the backbone's FLOPs per forward, and the
fraction of the device's dense bf16 peak (from a table by device name, or ``--peak-tflops``).

Examples::

    python bench/gpu.py                                   # base preset, GPU, bf16, compile off+on
    python bench/gpu.py --preset tiny --steps 3 --batches 1,2   # a CPU smoke run in seconds
    python bench/gpu.py --json out/bench.json --peak-tflops 989

Exit status 2 on bad flags (e.g. an unknown preset, or ``--compile on`` without a working compiler).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

try:
    import copgen_core  # noqa: F401
except ModuleNotFoundError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from copgen_core.backbone import BackboneConfig, CopgenBackbone
from copgen_core.generate import CopgenModel, Precision
from copgen_core.modalities import MODALITIES, resolve
from copgen_core.presets import BACKBONE_PRESETS, backbone_preset, count_backbone_parameters

PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A10G", 125.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
    ("RTX 6000 Ada", 364.0),
)
"""Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, matched by substring of the device name
(first match wins, so more specific names come first)."""

SCALARS = ("3d_cartesian_lat_lon", "mean_timestamps")


@dataclass(frozen=True)
class Row:
    """One measured configuration."""

    compile: bool
    batch: int
    seconds: float
    samples_per_s: float
    nfe_per_s: float
    tflops: float
    peak_fraction: float | None
    peak_mem_gib: float | None


def forward_flops(config: BackboneConfig) -> float:
    """Multiply-add FLOPs (2 per MAC) of one backbone forward for one sample.

    Counts every matmul: per block the fused qkv (N·D·3D), q·kᵀ and attn·v (2·N²·D), the output
    projection (N·D²) and the MLP (2·N·D·M); per out-block the skip projection (N·2D·D); the patch
    embeddings and output heads. LayerNorm, softmax, GELU and the time embedding are ignored (<1%).
    """
    n, d, m = config.num_tokens, config.embed_dim, config.mlp_hidden_dim
    block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * m
    blocks = (2 * config.num_in_blocks + 1) * block + config.num_in_blocks * n * 2 * d * d
    io = 0
    for key in config.modalities:
        mod = resolve(key)
        io += 2 * config.token_layout.tokens(mod) * config.patch_size(mod) ** 2 * mod.latent_shape[0] * d
    return 2.0 * (blocks + io)


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """The dense bf16 peak of ``device`` and where it came from."""
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown (CPU; pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if pattern in name:
            return tflops, f"table ({pattern})"
    return None, f"unknown device {name!r}; pass --peak-tflops"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    model: CopgenModel,
    compiled: bool,
    batch: int,
    steps: int,
    scalars: str,
    flops: float,
    peak: float | None,
    repeats: int,
) -> Row:
    """Warm up (compiling, if asked), then time ``repeats`` generate() calls of ``batch`` samples."""
    device = model.device
    targets = [m.key for m in MODALITIES if m.is_image or scalars == "generate"]
    conditions: dict[str, object] = {}
    if scalars == "condition":
        conditions = {
            "3d_cartesian_lat_lon": torch.tensor([[55.95, -3.19]] * batch, dtype=torch.float64),
            "mean_timestamps": torch.tensor([[2021, 7, 15]] * batch),
        }
    keys = list(range(batch))

    def run(n_steps: int) -> None:
        model.generate(conditions, targets, steps=n_steps, keys=keys, batch_size=batch, decode=False)

    for _ in range(2):  # the first call compiles; the second catches any recompilation
        run(min(steps, 3))
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run(steps)
    _sync(device)
    seconds = (time.perf_counter() - start) / repeats
    samples_per_s = batch / seconds
    tflops = samples_per_s * steps * flops / 1e12
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return Row(
        compile=compiled,
        batch=batch,
        seconds=seconds,
        samples_per_s=samples_per_s,
        nfe_per_s=samples_per_s * steps,
        tflops=tflops,
        peak_fraction=None if peak is None else tflops / peak,
        peak_mem_gib=mem,
    )


def markdown(rows: list[Row]) -> str:
    """The results as a markdown table."""
    lines = [
        "| compile | batch | s/call | samples/s | NFE/s | TFLOP/s | % of bf16 peak | peak mem GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        frac = "n/a" if r.peak_fraction is None else f"{100 * r.peak_fraction:.1f}"
        mem = "n/a" if r.peak_mem_gib is None else f"{r.peak_mem_gib:.2f}"
        lines.append(
            f"| {'on' if r.compile else 'off'} | {r.batch} | {r.seconds:.3f} | {r.samples_per_s:.3f} | "
            f"{r.nfe_per_s:.1f} | {r.tflops:.2f} | {frac} | {mem} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base", choices=sorted(BACKBONE_PRESETS))
    parser.add_argument("--steps", type=int, default=50, help="solver steps = NFE per sample (default 50)")
    parser.add_argument("--batches", default="1,2,4,8,16,32", help="comma-separated batch sizes")
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="default bf16")
    parser.add_argument("--compile", default="auto", choices=["auto", "off", "on", "both"],
                        help="auto = both on a GPU, off on the CPU")  # fmt: skip
    parser.add_argument("--scalars", default="generate", choices=["generate", "condition"])
    parser.add_argument("--device", default=None, help="default cuda if available, else cpu")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per configuration")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error(f"--batches needs positive sizes, got {args.batches!r}")
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype: Precision = args.dtype or "bf16"
    compile_modes = {
        "auto": [False, True] if device.type == "cuda" else [False],
        "off": [False],
        "on": [True],
        "both": [False, True],
    }[args.compile]
    config = backbone_preset(args.preset)
    torch.manual_seed(0)
    with torch.device(device):
        backbone = CopgenBackbone(config).eval()
    flops = forward_flops(config)
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    )
    print(
        f"# {args.preset}: {count_backbone_parameters(config) / 1e6:.1f} M parameters, {config.num_tokens} tokens, "
        f"{flops / 1e12:.3f} TFLOP per forward per sample; {args.steps} NFE; {dtype}; scalars {args.scalars}\n"
        f"# device {device_name}; bf16 peak {peak if peak is not None else 'n/a'} TFLOP/s ({peak_source}); "
        f"torch {torch.__version__}"
    )
    rows: list[Row] = []
    for compiled in compile_modes:
        model = CopgenModel(backbone, device=device, dtype=dtype, compile=compiled, batch_invariant=False)
        for batch in args.batch_sizes:
            row = measure(model, compiled, batch, args.steps, args.scalars, flops, peak, args.repeats)
            rows.append(row)
            print(f"#   compile={'on' if compiled else 'off'} batch={batch}: {row.samples_per_s:.3f} samples/s",
                  flush=True)  # fmt: skip
    table = markdown(rows)
    print(table)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "preset": args.preset,
            "parameters": count_backbone_parameters(config),
            "num_tokens": config.num_tokens,
            "flops_per_forward_per_sample": flops,
            "steps": args.steps,
            "dtype": dtype,
            "scalars": args.scalars,
            "device": device_name,
            "peak_bf16_tflops": peak,
            "peak_source": peak_source,
            "torch": torch.__version__,
            "results": [asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
