"""``copgen train``: train the diffusion backbone on a preprocessed cube over frozen VAEs.

Only wiring: the samples come from :class:`transforms.dataset.CubeDataset`, the training from
:class:`copgen_core.training.backbone_trainer.BackboneTrainer` and
:func:`copgen_core.training.loop.run_loop`. The run directory ``--out`` ends up a model bundle
(``backbone/`` with the EMA weights, ``vae/``, ``bundle.json`` with the training provenance) plus
``train_state.pt`` for ``--resume``. The helpers at the top are shared with ``copgen train-vae``.

Multi-process (DDP): ``torchrun --nproc_per_node=N -m pipelines.cli train ...``; each rank reads its
own shard of every global batch (``--batch-size`` is per rank) and rank 0 writes the files.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shlex
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click

STATE_FILE = "train_state.pt"
POSITION_KEYS = ("micro_batches", "epoch", "epoch_offset")
"""Keys of a state's ``data`` record that say where the stream is, not which stream it is."""
PRECISION_CHOICES = ("fp32", "bf16", "fp16")


class BadInput(click.ClickException):
    """Bad user input: printed as ``Error: ...`` with exit code 2."""

    exit_code = 2


# -- helpers shared with cmd_train_vae ----------------------------------------------------------------


def storage_options_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--storage-options JSON`` for a ``gs://`` cube."""
    return click.option("--storage-options", "storage_options", default=None,
                        help='fsspec options of the cube as JSON, e.g. \'{"token": "anon"}\'.')(f)


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """The ``--storage-options`` JSON object (empty when not given)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"--storage-options is not valid JSON ({exc}); pass an object such as '{{\"token\": \"anon\"}}'") from exc
    if not isinstance(value, dict):
        raise BadInput(f"--storage-options must be a JSON object, got {type(value).__name__}")
    return value


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options every training command takes."""
    opts = [
        click.option("--cube", required=True, help="training cube written by 'copgen preprocess' (path or gs://)."),
        click.option("--preset", default="tiny", show_default=True, help="model size preset."),
        click.option("--steps", type=int, required=True, help="total optimiser steps of the run."),
        click.option("--batch-size", type=int, default=8, show_default=True, help="samples per micro-batch (per rank)."),
        click.option("--out", type=click.Path(path_type=Path), required=True, help="run directory."),
        click.option("--seed", type=int, default=0, show_default=True, help="seed of every random draw."),
        click.option("--resume", is_flag=True, help="continue the run saved in --out (same flags, any --steps)."),
        click.option("--lr", type=float, default=None, help="peak learning rate (default: the preset's)."),
        click.option("--warmup-steps", type=int, default=None, help="linear warm-up steps."),
        click.option("--grad-accum", type=int, default=1, show_default=True, help="micro-batches per optimiser step."),
        click.option("--grad-clip", type=float, default=None, help="clip the gradient norm to this (default: off)."),
        click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="fp32", show_default=True,
                     help="autocast on CUDA; the CPU always trains in fp32."),
        click.option("--val-fraction", type=float, default=0.1, show_default=True,
                     help="fraction of windows held out for evaluation (0 disables it)."),
        click.option("--split-seed", type=int, default=42, show_default=True, help="seed of the window split."),
        click.option("--val-batches", type=int, default=8, show_default=True, help="evaluate on at most this many."),
        click.option("--checkpoint-every", type=int, default=100, show_default=True,
                     help="steps between training-state checkpoints."),
        click.option("--log-every", type=int, default=10, show_default=True, help="steps between log lines."),
        click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes."),
        click.option("--device", default="auto", show_default=True, help="'auto', 'cpu', 'cuda' or 'cuda:N'."),
    ]
    f = storage_options_option(f)
    for opt in reversed(opts):
        f = opt(f)
    return f


def resolve_device(name: str) -> Any:
    """The torch device for ``--device`` ('auto' picks CUDA when present; under DDP one GPU per local rank)."""
    import torch

    from copgen_core.training import distributed

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise BadInput(f"--device {name!r} is not a torch device ({exc}); use 'auto', 'cpu' or 'cuda:N'") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput("--device asks for CUDA but no GPU is visible; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", distributed.local_rank())
        torch.cuda.set_device(device)
    return device


def check_run_dir(state_path: Path, resume: bool, outputs: tuple[str, ...]) -> None:
    """Refuse to overwrite a run (or a model) without ``--resume``, and to resume a run that is not there.

    ``outputs`` are the files the run writes next to its state: a directory holding one of them but
    no state is someone else's model, never overwritten.
    """
    if resume and not state_path.is_file():
        raise BadInput(f"--resume: no training state at {state_path}; start the run without --resume")
    if not resume and state_path.exists():
        raise BadInput(f"{state_path.parent} already holds a training run; pass --resume to continue it, or choose "
                       "another --out")
    taken = [name for name in outputs if (state_path.parent / name).exists()]
    if not state_path.exists() and taken:
        raise BadInput(f"{state_path.parent} already holds a model ({', '.join(taken)}) that is not a training run "
                       "of this command; choose another --out")


def resume_state(state_path: Path, trainer: Any, data_identity: Mapping[str, Any]) -> None:
    """Load a training state into ``trainer`` after checking the data stream is the saved one."""
    from copgen_core.training.state import StateError, check_config, load_state

    try:
        state = load_state(state_path)
        saved = {k: v for k, v in state.get("data", {}).items() if k not in POSITION_KEYS}
        check_config(saved, dict(data_identity), what="data stream (cube, split, batch size, ranks)")
        trainer.load_state_dict(state)
    except (StateError, ValueError, KeyError) as exc:
        raise BadInput(str(exc)) from exc


def provenance(kind: str, *, seed: int, steps: int, config: Mapping[str, Any], data: Mapping[str, Any],
               history: list[dict[str, float]], evaluation: Mapping[str, float] | None,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The training provenance recorded next to the weights."""
    import torch

    from copgen_core.training import distributed

    try:
        from importlib.metadata import version

        software = f"copgen {version('copgen')}"
    except Exception:  # not installed as a distribution (a source checkout)
        software = "copgen (source checkout)"
    return {
        "kind": kind, "command": _command_line(), "arguments": _arguments(), "seed": seed,
        "steps": steps, "config": dict(config), "data": dict(data), "losses": history,
        "evaluation": dict(evaluation) if evaluation is not None else None, "world_size": distributed.world_size(),
        "software": software, "torch": torch.__version__, "python": platform.python_version(), **dict(extra or {}),
    }


def _command_line() -> str:
    """The run's command, rebuilt from its parsed options (defaults left out): reproducible anywhere."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return ""
    parts = ["copgen", ctx.command.name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if not isinstance(param, click.Option) or value is None or value == param.default:
            continue
        flag = max(param.opts, key=len)
        parts.extend([flag] if param.is_flag else [flag, str(value)])
    return shlex.join(parts)


def _arguments() -> dict[str, Any]:
    ctx = click.get_current_context(silent=True)
    params = dict(ctx.params) if ctx is not None else {}
    return {k: str(v) if isinstance(v, Path) else v for k, v in params.items()}


def echo_metrics(prefix: str) -> Callable[[dict[str, float]], None]:
    """An ``on_log`` callback printing one line per logged step."""
    def log(metrics: dict[str, float]) -> None:
        parts = [f"{k} {v:.5g}" for k, v in metrics.items() if k != "step" and "/" not in k]
        click.echo(f"{prefix} step {int(metrics['step'])}: " + ", ".join(parts))
    return log


def say(message: str) -> None:
    """Print a line on rank 0 only."""
    from copgen_core.training import distributed

    if distributed.is_main():
        click.echo(message)


def echo_checkpoint(step: int, path: Path) -> None:
    """An ``on_checkpoint`` callback (the line is flushed: supervisors and tests wait for it)."""
    click.echo(f"checkpoint step {step} -> {path}")


def seeded_init(seed: int, build: Callable[[], Any]) -> Any:
    """Build a model with its weights drawn from ``seed`` (the global RNG is left as it was)."""
    import torch

    from copgen_core.seeding import derive_seed

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init", stream="weights"))
        return build()


# -- copgen train -------------------------------------------------------------------------------------


def _load_vaes(vae_dir: Path | None, bundle: Path | None, keys: list[str]) -> dict[str, Any]:
    from copgen_core.checkpoints import CheckpointError, is_copgen_checkpoint, load_vae

    root = bundle / "vae" if bundle is not None else vae_dir
    assert root is not None
    out = {}
    for key in keys:
        path = root / key
        if is_copgen_checkpoint(path):
            try:
                out[key] = load_vae(path, key)
            except CheckpointError as exc:
                raise BadInput(str(exc)) from exc
    return out


def _modalities(requested: str | None, cube_modalities: tuple[str, ...], vae_keys: set[str]) -> list[str]:
    from copgen_core.modalities import canonical

    if requested:
        try:
            mods = canonical([m.strip() for m in requested.split(",") if m.strip()])
        except KeyError as exc:
            raise BadInput(str(exc.args[0])) from exc
    else:
        mods = canonical([*cube_modalities, "3d_cartesian_lat_lon", "mean_timestamps"])
        mods = tuple(m for m in mods if m.is_scalar or m.key in vae_keys)
    lacking = [m.key for m in mods if m.is_image and m.key not in vae_keys]
    if lacking:
        raise BadInput(f"no VAE for {lacking} in the --vae-dir/--bundle; train them with 'copgen train-vae' first "
                       "or leave them out of --modalities")
    if not any(m.is_image for m in mods):
        raise BadInput("no image modality of the cube has a VAE in --vae-dir/--bundle; train one with "
                       "'copgen train-vae' first")
    return [m.key for m in mods]


@click.command("train")
@common_options
@click.option("--vae-dir", type=click.Path(path_type=Path), default=None,
              help="VAEs in our format under <dir>/<modality key>/ (as 'copgen train-vae' writes them).")
@click.option("--bundle", type=click.Path(path_type=Path), default=None, help="take the VAEs from a bundle.")
@click.option("--modalities", default=None,
              help="comma-separated modalities of the model (default: the cube's with a VAE, plus location and date).")
@click.option("--modality-dropout", type=float, default=0.0, show_default=True,
              help="probability of replacing a modality by pure noise at t=1000 (not in the official recipe).")
@click.option("--condition-dropout", type=float, default=0.0, show_default=True,
              help="probability of giving a modality clean at t=0 (not in the official recipe).")
@click.option("--min-snr-gamma", type=float, default=None,
              help="min-SNR-γ loss weighting, e.g. 5 (not in the official recipe; default: off).")
@click.option("--timestep-shift", type=float, default=1.0, show_default=True,
              help="shift the training steps toward noise: t = s u / (1 + (s - 1) u) for u ~ U(0, 1); 1 is the "
                   "official uniform draw, 3 puts half of the steps above n = 750 (not in the official recipe).")
@click.option("--terminal-noise", type=float, default=0.0, show_default=True,
              help="share of the noised draws given as pure noise at n=1000 with the target that makes the x0 "
                   "estimate the clean latent: trains the sampler's first step, which starts from pure noise "
                   "(not in the official recipe).")
@click.option("--ema-rate", type=float, default=0.9999, show_default=True, help="EMA decay per step.")
@click.option("--lr-decay", type=click.Choice(["constant", "poly"]), default="constant", show_default=True,
              help="learning rate after the warm-up: 'constant' (official) or 'poly', decayed to 0 by --steps "
                   "(ties the run to its --steps: resume with the same one; not in the official recipe).")
@click.option("--weight-decay", type=float, default=0.03, show_default=True, help="AdamW weight decay.")
@click.option("--gradient-checkpointing", is_flag=True, help="recompute blocks in the backward pass.")
@click.option("--latent-cache", type=click.Path(path_type=Path), default=None,
              help="VAE moments file; encoded once if absent, then used instead of running the VAEs.")
@click.option("--position-init", type=click.Choice(["random", "ground"]), default="random", show_default=True,
              help="'ground' starts image tokens' positional embeddings with a shared code of their ground "
                   "position (faster learning of cross-modal alignment; not in the official recipe).")
@click.option("--position-scale", type=float, default=0.5, show_default=True,
              help="RMS of the ground-position code ('--position-init ground').")
@click.option("--attention-init", type=click.Choice(["random", "mimetic"]), default="random", show_default=True,
              help="'mimetic' starts each head's W_q = W_k as a scaled random orthonormal projection, so tokens "
                   "first attend to similar tokens (with --position-init ground: the same ground); not official.")
@click.option("--attention-scale", type=float, default=3.0, show_default=True,
              help="weight of the mimetic query-key identity ('--attention-init mimetic').")
@click.option("--task-fraction", type=float, default=0.0, show_default=True,
              help="probability per sample of a conditional-generation task instead of independent noise levels: "
                   "--task-targets share one step, one --task-conditions set is given clean, the rest is "
                   "marginalised (not in the official recipe).")
@click.option("--task-targets", type=str, default=None,
              help="comma-separated modalities generated in task samples, e.g. 's2l2a_10m,s2l2a_20m,s2l2a_60m'.")
@click.option("--task-conditions", type=str, multiple=True,
              help="one condition set of the task samples, comma-separated (repeat the option; '' = unconditional).")
@click.option("--adam-betas", type=str, default="0.99,0.99", show_default=True,
              help="AdamW betas 'b1,b2' (official 0.99,0.99; short runs learn faster with 0.9,0.99).")
@click.option("--ground-heads", type=int, default=None,
              help="heads per block with a fixed ground-distance attention bias, so they read the tokens of "
                   "every modality over the same ground from the first step (default: the preset's; 0 is the "
                   "official architecture).")
@click.option("--ground-sigma", type=float, default=None,
              help="width of the first ground head's bias in window units (default 1/12, one 10 m token); "
                   "head h uses sigma * 2**h.")
@click.option("--max-grid", type=int, default=None,
              help="largest token lattice per side: larger latents get larger patches (6: the 10 m modalities "
                   "are patched 4x4 onto the 20 m 6x6 lattice, ~3x fewer tokens; default: the preset's; 0 is "
                   "the official patch 2).")
@click.option("--final-conv", "final_conv", is_flag=True, default=False,
              help="add a zero-initialised 3x3 convolution over each image modality's unpatchified output, so "
                   "neighbouring tokens' patches can join up (not in the official model; for large --max-grid patches).")
@click.option("--final-conv-kernel", type=int, default=3, show_default=True,
              help="kernel size of the --final-conv convolutions (odd).")
@click.option("--local-path", "local_path", type=str, default=None,
              help="comma-separated image modalities that get a local conditioning path: a small per-latent-"
                   "cell network from every other modality at the same place, added to the modality's head "
                   "output (not in the official model; e.g. 's2l2a_10m,s2l2a_20m,s2l2a_60m').")
@click.option("--local-width", type=click.IntRange(min=1), default=48, show_default=True,
              help="hidden channels of every --local-path network.")
@click.option("--local-depth", type=click.IntRange(min=1), default=1, show_default=True,
              help="3x3 convolutions in every --local-path network.")
@click.option("--local-self", is_flag=True, default=False,
              help="every --local-path network also reads its target's own noisy latent (a small convolutional "
                   "denoiser beside the transformer).")
@click.option("--prediction", type=click.Choice(["eps", "v"]), default=None,
              help="what the heads predict: 'eps' (official) or 'v' (velocity; sane x0 estimates at high noise, "
                   "trained with the v loss); the model still returns ε̂ (default: the preset's, eps).")
def command(cube: str, preset: str, steps: int, batch_size: int, out: Path, seed: int, resume: bool,
            lr: float | None, warmup_steps: int | None, grad_accum: int, grad_clip: float | None, precision: str,
            val_fraction: float, split_seed: int, val_batches: int, checkpoint_every: int, log_every: int,
            workers: int, device: str, storage_options: str | None, vae_dir: Path | None, bundle: Path | None,
            modalities: str | None, modality_dropout: float, condition_dropout: float, min_snr_gamma: float | None,
            timestep_shift: float, terminal_noise: float, ema_rate: float, lr_decay: str,
            weight_decay: float, gradient_checkpointing: bool, latent_cache: Path | None, position_init: str,
            position_scale: float, attention_init: str, attention_scale: float, ground_heads: int | None,
            ground_sigma: float | None, adam_betas: str, task_fraction: float, task_targets: str | None,
            task_conditions: tuple[str, ...], max_grid: int | None, prediction: str | None,
            final_conv: bool, final_conv_kernel: int, local_path: str | None, local_width: int,
            local_self: bool, local_depth: int) -> None:
    """Train the diffusion backbone; --out becomes a model bundle (EMA weights, VAEs, provenance).

    \b
    Example:
      copgen train --cube train.zarr --vae-dir vaes --preset tiny --steps 2000 --batch-size 8 \\
          --warmup-steps 100 --ema-rate 0.999 --out runs/tiny --seed 0

    Exit codes: 0 trained; 2 bad input (nothing trained).
    """
    from copgen_core.backbone import CopgenBackbone
    from copgen_core.bundle import save_bundle
    from copgen_core.modalities import resolve
    from copgen_core.presets import backbone_preset
    from copgen_core.training import distributed
    from copgen_core.training.backbone_trainer import BackboneTrainConfig, BackboneTrainer
    from copgen_core.training.init import align_positions_, mimetic_attention_
    from copgen_core.training.loop import run_loop
    from transforms.cube import load_spec
    from transforms.cube_spec import CubeError
    from transforms.dataset import (
        CubeDataset,
        DatasetError,
        ResumableSampler,
        check_cache_vaes,
        encode_latents,
        eval_batches,
        loader,
    )

    if (vae_dir is None) == (bundle is None):
        raise BadInput("give exactly one of --vae-dir and --bundle (where the trained VAEs are)")
    so = parse_storage_options(storage_options)
    dev = resolve_device(device)
    distributed.init_from_env(dev)
    state_path = out / STATE_FILE
    check_run_dir(state_path, resume, ("bundle.json", "backbone"))
    try:
        spec = load_spec(cube, so)
        vaes = _load_vaes(vae_dir, bundle, list(spec.modalities))
        keys = _modalities(modalities, spec.modalities, set(vaes))
        vaes = {k: v for k, v in vaes.items() if k in keys}
        try:
            b1, b2 = (float(b) for b in adam_betas.split(","))
        except ValueError:
            raise BadInput(f"--adam-betas {adam_betas!r} is not two comma-separated numbers, e.g. 0.9,0.99") from None
        def _keys(text: str) -> tuple[str, ...]:
            return tuple(resolve(k.strip()).key for k in text.split(",") if k.strip())

        warmup = 5000 if warmup_steps is None else warmup_steps
        decay_steps = None
        if lr_decay == "poly":
            decay_steps = steps - warmup
            if decay_steps < 1:
                raise BadInput(f"--lr-decay poly needs more --steps ({steps}) than --warmup-steps ({warmup})")

        config = BackboneTrainConfig(
            task_fraction=task_fraction, task_targets=_keys(task_targets or ""),
            task_conditions=tuple(_keys(c) for c in task_conditions),
            betas=(b1, b2), lr=2e-4 if lr is None else lr, weight_decay=weight_decay,
            warmup_steps=warmup, lr_decay=lr_decay, lr_decay_steps=decay_steps,  # type: ignore[arg-type]
            ema_rate=ema_rate, grad_accum=grad_accum,
            grad_clip=grad_clip, precision=precision,  # type: ignore[arg-type]
            gradient_checkpointing=gradient_checkpointing, modality_dropout=modality_dropout,
            condition_dropout=condition_dropout, min_snr_gamma=min_snr_gamma,
            timestep_shift=timestep_shift, terminal_noise=terminal_noise, seed=seed)
        arch = backbone_preset(preset, keys)
        if ground_heads is not None:
            arch = dataclasses.replace(arch, ground_heads=ground_heads)
        if ground_sigma is not None:
            arch = dataclasses.replace(arch, ground_sigma=ground_sigma)
        if max_grid is not None:
            arch = dataclasses.replace(arch, max_grid=max_grid)
        if prediction is not None:
            arch = dataclasses.replace(arch, prediction="v" if prediction == "v" else "eps")
        if final_conv:
            arch = dataclasses.replace(arch, final_conv=True, final_conv_kernel=final_conv_kernel)
        elif final_conv_kernel != 3:
            raise BadInput("--final-conv-kernel needs --final-conv")
        if local_path:
            try:
                arch = dataclasses.replace(arch, local_path=_keys(local_path), local_width=local_width,
                                           local_self=local_self, local_depth=local_depth)
            except ValueError as err:
                raise BadInput(f"--local-path {local_path!r}: {err}") from None
        elif local_width != 48 or local_self or local_depth != 1:
            raise BadInput("--local-width, --local-self and --local-depth need --local-path")
        if latent_cache is not None:
            if not latent_cache.exists() and distributed.is_main():
                say(f"encoding VAE latents of every sample into {latent_cache}")
                everything = CubeDataset(cube, keys, storage_options=so, split="all")
                encode_latents(everything, vaes, latent_cache, batch_size=batch_size, device=dev, workers=workers)
            distributed.barrier()
            check_cache_vaes(latent_cache, vaes)
        train_ds = CubeDataset(cube, keys, storage_options=so, split="train", val_fraction=val_fraction,
                               split_seed=split_seed, latent_cache=latent_cache)
        val_ds = (CubeDataset(cube, keys, storage_options=so, split="val", val_fraction=val_fraction,
                              split_seed=split_seed, latent_cache=latent_cache) if val_fraction > 0 else None)
    except (CubeError, DatasetError, KeyError, ValueError) as exc:
        raise BadInput(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)) from exc
    if train_ds.skipped:
        say(f"skipped samples: {train_ds.skipped}")
    say(f"training {preset} backbone over {keys} on {len(train_ds)} samples "
        f"({len(val_ds) if val_ds else 0} held out) on {dev}")
    backbone = seeded_init(seed, lambda: CopgenBackbone(arch))
    if position_init == "ground":
        align_positions_(backbone, position_scale)
    if attention_init == "mimetic":
        mimetic_attention_(backbone, attention_scale)
    trainer = BackboneTrainer(backbone, vaes, config, device=dev)
    identity = {**train_ds.fingerprint(), "batch_size": batch_size, "world_size": distributed.world_size(),
                "preset": preset, "architecture": arch.to_dict(),
                "position_init": [position_init, position_scale if position_init == "ground" else None],
                "attention_init": [attention_init, attention_scale if attention_init == "mimetic" else None]}
    if resume:
        resume_state(state_path, trainer, identity)
        say(f"resuming at step {trainer.step}")

    def batches_from(position: int) -> Iterator[Any]:
        sampler = ResumableSampler(len(train_ds), batch_size, seed=seed, start=position)
        return loader(train_ds, sampler, workers=workers)

    stream = ResumableSampler(len(train_ds), batch_size, seed=seed)
    try:
        run_loop(trainer, batches_from, steps=steps, grad_accum=grad_accum, state_path=state_path,
                 checkpoint_every=checkpoint_every, log_every=log_every, extra_state=identity,
                 describe_position=stream.position,
                 on_log=echo_metrics("train"), on_checkpoint=echo_checkpoint)
    except (DatasetError, FloatingPointError) as exc:
        raise click.ClickException(str(exc)) from exc
    evaluation = (trainer.evaluate(eval_batches(val_ds, batch_size, max_batches=val_batches, workers=workers))
                  if val_ds is not None else None)
    if distributed.is_main():
        info = provenance("backbone", seed=seed, steps=trainer.step, config=config.to_dict(),
                          data={**identity, "cube": cube}, history=trainer.history, evaluation=evaluation,
                          extra={"name": out.name, "description": f"{preset} backbone trained by copgen train",
                                 "vae_sources": str(bundle or vae_dir),
                                 "latent_cache": str(latent_cache) if latent_cache else None})
        save_bundle(out, trainer.ema.model, vaes, info=info, overwrite=True)
        if evaluation is not None:
            click.echo(f"validation loss (EMA) {evaluation['loss']:.5f} over {int(evaluation['batches'])} batches")
        click.echo(f"wrote bundle {out}")
    distributed.barrier()


if __name__ == "__main__":
    command()
