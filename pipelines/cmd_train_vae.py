"""``copgen train-vae``: train the KL-VAE of one image modality on a preprocessed cube.

Only wiring: samples from :class:`transforms.dataset.CubeDataset` (random horizontal flips), training
from :class:`copgen_core.training.vae_trainer.VAETrainer` and :func:`copgen_core.training.loop.run_loop`.
Writes ``<out>/<modality key>/`` in our checkpoint format (EMA weights, ready for ``copgen train
--vae-dir <out>``), ``training.json`` (provenance, validation PSNR) and ``train_state.pt``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from pipelines.cmd_train import (
    STATE_FILE,
    BadInput,
    check_run_dir,
    common_options,
    echo_checkpoint,
    echo_metrics,
    parse_storage_options,
    provenance,
    resolve_device,
    resume_state,
    say,
    seeded_init,
)

DEFAULT_LR = {"official": 5e-6, "tiny": 1e-4}
"""Peak learning rate per preset: the official recipe's, and a faster one for the small CPU model."""
SCALE_BATCHES = 8
"""Training batches the latent scale factor is estimated from (``--scale-factor auto``)."""


PCA_SAMPLES = 64
"""Training samples the ``--shortcut`` block PCA is computed from (evenly spread over the split)."""


def _scale_choice(text: str) -> str | float:
    if text in ("auto", "official"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"--scale-factor {text!r}: use 'auto', 'official' or a positive number") from None
    if not value > 0:
        raise BadInput(f"--scale-factor must be positive, got {value}")
    return value


@click.command("train-vae")
@common_options
@click.option("--modality", required=True, help="the image modality (key or alias, e.g. s2l2a_10m).")
@click.option("--lr-decay", type=click.Choice(["constant", "poly"]), default="constant", show_default=True,
              help="'poly' decays to --min-lr over the run with power 0.95 (official).")
@click.option("--min-lr", type=float, default=1e-6, show_default=True, help="floor of the 'poly' decay.")
@click.option("--kl-weight", type=float, default=1e-6, show_default=True, help="KL term weight.")
@click.option("--learned-logvar", is_flag=True,
              help="train the NLL's log-variance (the official optimiser leaves it at 0: plain L1+L2).")
@click.option("--no-flip", is_flag=True, help="no random horizontal flips.")
@click.option("--crop", type=click.IntRange(min=8), default=None,
              help="train on random square crops of this many pixels (a multiple of 8); validation and the "
                   "scale factor use whole windows [default: whole windows].")
@click.option("--ema-decay", type=float, default=0.995, show_default=True, help="EMA decay per update.")
@click.option("--ema-every", type=int, default=10, show_default=True, help="steps between EMA updates.")
@click.option("--ema-start", type=int, default=1000, show_default=True, help="EMA copies the model until this step.")
@click.option("--ema-power", type=float, default=2 / 3, show_default=True,
              help="EMA decay warm-up exponent (ema-pytorch); 0 uses --ema-decay from the start.")
@click.option("--init-from", "init_from", type=click.Path(path_type=Path, exists=True), default=None,
              help="start from the weights of this VAE (our checkpoint or an official state dict) instead of a "
                   "random initialisation: fine-tuning, e.g. on whole windows after training on --crop.")
@click.option("--shortcut", is_flag=True,
              help="add the linear block shortcut (copgen_core.vae; not in the official VAEs), started at the "
                   "whitened block PCA of the training windows: training starts from the best linear 8x8 block "
                   "code and learns what it misses.")
@click.option("--scale-factor", "scale_factor", default="auto", show_default=True,
              help="latent scale: 'auto' (--latent-std / std of sampled latents), 'official' (registry) or a number.")
@click.option("--latent-std", type=click.FloatRange(min=0.0, min_open=True), default=1.0, show_default=True,
              help="the std of the scaled latents the backbone sees with '--scale-factor auto' (1 is the official "
                   "choice; below 1 the diffusion schedule reaches a lower signal-to-noise ratio at n = 1000, which a "
                   "latent with strong spatial correlation needs).")
def command(cube: str, preset: str, steps: int, batch_size: int, out: Path, seed: int, resume: bool,
            lr: float | None, warmup_steps: int | None, grad_accum: int, grad_clip: float | None, precision: str,
            val_fraction: float, split_seed: int, val_batches: int, checkpoint_every: int, log_every: int,
            workers: int, device: str, storage_options: str | None, modality: str, lr_decay: str, min_lr: float,
            kl_weight: float, learned_logvar: bool, no_flip: bool, crop: int | None, ema_decay: float, ema_every: int,
            ema_start: int, ema_power: float, init_from: Path | None, shortcut: bool, scale_factor: str,
            latent_std: float) -> None:
    """Train the VAE of one modality; writes <out>/<modality key>/ with the EMA weights.

    \b
    Example:
      copgen train-vae --cube train.zarr --modality s2l2a_10m --preset tiny --steps 2000 \\
          --batch-size 8 --out vaes --seed 0

    Exit codes: 0 trained; 2 bad input (nothing trained).
    """
    from copgen_core.checkpoints import load_vae, save_vae
    from copgen_core.modalities import resolve
    from copgen_core.presets import VAE_PRESETS, vae_preset
    from copgen_core.training import distributed
    from copgen_core.training.loop import run_loop
    from copgen_core.training.vae_trainer import VAETrainConfig, VAETrainer
    from copgen_core.vae import KLVAE, init_block_pca
    from transforms.cube_spec import CubeError
    from transforms.dataset import (
        CubeDataset,
        DatasetError,
        ResumableSampler,
        eval_batches,
        loader,
        spread_images,
    )

    try:
        mod = resolve(modality)
    except KeyError as exc:
        raise BadInput(str(exc.args[0])) from exc
    if not mod.is_image:
        raise BadInput(f"{mod.key} is a scalar modality and has no VAE; pick an image modality")
    if preset not in VAE_PRESETS:
        raise BadInput(f"unknown VAE preset {preset!r}; use one of {sorted(VAE_PRESETS)}")
    scale = _scale_choice(scale_factor)
    so = parse_storage_options(storage_options)
    dev = resolve_device(device)
    distributed.init_from_env(dev)
    run_dir = out / mod.key
    state_path = run_dir / STATE_FILE
    check_run_dir(state_path, resume, ("model.safetensors", "config.json"))
    try:
        config = VAETrainConfig(
            lr=DEFAULT_LR.get(preset, 5e-6) if lr is None else lr, warmup_steps=warmup_steps or 0,
            lr_decay=lr_decay,  # type: ignore[arg-type]
            decay_steps=steps if lr_decay == "poly" else None, min_lr=min_lr, kl_weight=kl_weight,
            learned_logvar=learned_logvar, ema_decay=ema_decay, ema_every=ema_every, ema_start=ema_start,
            ema_power=ema_power,
            grad_accum=grad_accum, grad_clip=grad_clip, precision=precision,  # type: ignore[arg-type]
            seed=seed)
        train_ds = CubeDataset(cube, [mod.key], storage_options=so, split="train", val_fraction=val_fraction,
                               split_seed=split_seed, flip=not no_flip, seed=seed, crop=crop)
        val_ds = (CubeDataset(cube, [mod.key], storage_options=so, split="val", val_fraction=val_fraction,
                              split_seed=split_seed) if val_fraction > 0 else None)
    except (CubeError, DatasetError, ValueError) as exc:
        raise BadInput(str(exc)) from exc
    if train_ds.skipped:
        say(f"skipped samples: {train_ds.skipped}")
    say(f"training {preset} VAE of {mod.key} on {len(train_ds)} samples "
        f"({len(val_ds) if val_ds else 0} held out) on {dev}")
    arch = vae_preset(preset, mod.key)
    if shortcut:
        arch = dataclasses.replace(arch, shortcut=True)
    vae = seeded_init(seed, lambda: KLVAE(arch, scale_factor=mod.scale_factor))
    if init_from is not None:
        try:
            start = load_vae(init_from, mod.key)
        except (OSError, ValueError, KeyError) as exc:
            raise BadInput(f"--init-from {init_from}: {exc}") from exc
        if start.config.to_dict() != arch.to_dict():
            raise BadInput(f"--init-from {init_from} is a {start.config.to_dict()} VAE, not the {preset} preset's "
                           f"{arch.to_dict()}; pick the matching --preset "
                           "(and --shortcut as it was trained)")
        vae.load_state_dict(start.state_dict())
    elif shortcut:
        lam = init_block_pca(vae, spread_images(train_ds, mod.key, PCA_SAMPLES))
        say(f"shortcut: whitened block PCA of {min(len(train_ds), PCA_SAMPLES)} samples, component variances "
            f"{', '.join(f'{v:.3g}' for v in lam.tolist())}")
    trainer = VAETrainer(vae, config, device=dev)
    identity = {**train_ds.fingerprint(), "batch_size": batch_size, "world_size": distributed.world_size(),
                "preset": preset, "architecture": arch.to_dict(),
                "init_from": None if init_from is None else str(init_from)}
    if resume:
        resume_state(state_path, trainer, identity)
        say(f"resuming at step {trainer.step}")

    def batches_from(position: int) -> Iterator[Any]:
        sampler = ResumableSampler(len(train_ds), batch_size, seed=seed, start=position)
        return (batch[mod.key] for batch in loader(train_ds, sampler, workers=workers))

    stream = ResumableSampler(len(train_ds), batch_size, seed=seed)
    try:
        run_loop(trainer, batches_from, steps=steps, grad_accum=grad_accum, state_path=state_path,
                 checkpoint_every=checkpoint_every, log_every=log_every, extra_state=identity,
                 describe_position=stream.position,
                 on_log=echo_metrics(f"vae {mod.key}"), on_checkpoint=echo_checkpoint)
    except (DatasetError, FloatingPointError) as exc:
        raise click.ClickException(str(exc)) from exc
    evaluation = None
    if val_ds is not None:
        evaluation = trainer.evaluate(b[mod.key] for b in eval_batches(val_ds, batch_size, max_batches=val_batches,
                                                                        workers=workers))
    if scale == "auto":
        unflipped = CubeDataset(cube, [mod.key], storage_options=so, split="train", val_fraction=val_fraction,
                                split_seed=split_seed)
        scale = latent_std * trainer.latent_scale(b[mod.key] for b in eval_batches(
            unflipped, batch_size, max_batches=SCALE_BATCHES, workers=workers))
    elif scale == "official":
        scale = mod.scale_factor
    if distributed.is_main():
        ema = trainer.ema.model
        ema.scale_factor = float(scale)
        save_vae(ema, run_dir, mod.key, overwrite=True)
        info = provenance("vae", seed=seed, steps=trainer.step, config=config.to_dict(),
                          data={**identity, "cube": cube}, history=trainer.history, evaluation=evaluation,
                          extra={"modality": mod.key, "scale_factor": float(scale), "latent_std": latent_std})
        (run_dir / "training.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        if evaluation is not None:
            click.echo(f"validation PSNR (EMA, posterior mean) {evaluation['psnr']:.2f} dB over "
                       f"{int(evaluation['samples'])} samples")
        click.echo(f"wrote VAE {run_dir} (scale factor {float(scale):.6g})")
    distributed.barrier()


if __name__ == "__main__":
    command()
