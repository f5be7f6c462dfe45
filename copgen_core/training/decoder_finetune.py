"""Decoder-only fine-tuning of a trained KL-VAE: the encoder, hence the latent space, stays fixed.

A backbone learns the latent space of its VAEs' encoders. Training the decoder alone afterwards (its
``post_quant_conv``, network and, with the shortcut, ``shortcut_out``) improves reconstructions and
decodes of generated latents without touching what the backbone learned, so it can run after the
backbone, or on a finished bundle. The targets are the images, the inputs their frozen posterior
means (no posterior noise), the loss the plain MSE (the quantity PSNR measures), the optimiser Adam
with a cosine decay to 1 % of the peak rate, on random ``crop`` px crops aligned to the latent cells.

Decodes of generated latents matter as much as reconstructions, and generated latents are much closer
to white noise than encodings of real images are. Trained on reconstructions alone, a decoder learns
features that put the latent cell grid into decodes of such latents (S2 L2A 10 m of the bundle: the
cell-edge ratio of decoded white noise went from 1.00 to 1.90 while the held-out PSNR rose 1.2 dB).
``edge_penalty`` adds ``edge_penalty * (r - 1)^2`` to the loss, ``r`` the cell-edge ratio
(:func:`copgen_core.vae.grid_ratio`) of a fresh batch of decoded white-noise
latents at every step, so the grid stays invisible in generated images.

Deterministic on one machine: crops and batches come from a generator seeded with ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from copgen_core.vae import KLVAE, grid_ratio


@dataclass(frozen=True)
class DecoderFinetune:
    """Settings of :func:`finetune_decoder`.

    Attributes
    ----------
    steps:
        Optimiser steps (>= 1).
    lr:
        Peak learning rate; cosine decay to ``lr / 100`` over ``steps``.
    batch_size:
        Crops per step.
    crop:
        Crop side in pixels, a multiple of the VAE's downsampling factor (crops are cut on latent cells).
    seed:
        Seed of the crop positions, sample draws and noise latents.
    edge_penalty:
        Weight of the cell-grid penalty on decoded white-noise latents (module docstring); 0 = off.
    noise_batch, noise_cells:
        White-noise latents per step for that penalty: ``noise_batch`` of ``noise_cells`` x ``noise_cells``.
    """

    steps: int
    lr: float = 1e-3
    batch_size: int = 8
    crop: int = 64
    seed: int = 0
    edge_penalty: float = 0.0
    noise_batch: int = 4
    noise_cells: int = 8

    def __post_init__(self) -> None:
        if (self.steps < 1 or self.batch_size < 1 or not self.lr > 0 or self.crop < 1 or self.noise_batch < 1
                or self.noise_cells < 3 or self.edge_penalty < 0):
            raise ValueError(f"steps, batch_size, crop and noise_batch must be >= 1, noise_cells >= 3, lr > 0 and "
                             f"edge_penalty >= 0, got {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decoder_parameters(vae: KLVAE) -> list[torch.nn.Parameter]:
    """The parameters a decoder-only fine-tune trains: ``post_quant_conv``, ``decoder``, ``shortcut_out``."""
    params = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    if vae.shortcut_out is not None:
        params += list(vae.shortcut_out.parameters())
    return params


def finetune_decoder(vae: KLVAE, images: Tensor, config: DecoderFinetune, *,
                     log: Callable[[int, float], None] | None = None, log_every: int = 250) -> dict[str, float]:
    """Train ``vae``'s decoder in place on ``images`` from the frozen encoder's posterior means.

    Parameters
    ----------
    vae:
        A trained :class:`KLVAE` (fp32); its encoder, ``quant_conv`` and ``shortcut_in`` are not changed.
    images:
        (N, in_channels, H, W) normalised training images (held in memory: about 0.6 MB per 4-band
        192 px window), H and W at least ``config.crop``.
    config:
        Steps, learning rate, batch, crop and seed.
    log:
        Called with (step, batch MSE) every ``log_every`` steps.

    Returns
    -------
    dict
        ``mse_first`` and ``mse_last``: the mean batch MSE of the first and last tenth of the steps;
        with ``edge_penalty``, ``grid_ratio_last``: the mean noise cell-edge ratio of the last tenth.

    Raises
    ------
    ValueError
        If the crop is not a multiple of the downsampling factor or larger than the images, or the
        images do not fit the VAE.
    """
    f = vae.config.downsample_factor
    if config.crop % f or config.crop > min(images.shape[-2:]):
        raise ValueError(f"crop {config.crop} px must be a multiple of {f} and at most the images' "
                         f"{tuple(images.shape[-2:])}")
    vae._check_image(images)
    with torch.no_grad():
        means = torch.cat([torch.chunk(vae.moments(images[i:i + 8]), 2, dim=1)[0] for i in range(0, len(images), 8)])
    params = decoder_parameters(vae)
    trained = {id(p) for p in params}
    frozen = [p for p in vae.parameters() if id(p) not in trained]
    before = [p.detach().clone() for p in frozen]
    flags = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    opt = torch.optim.Adam(params, lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(i, config.steps) / config.steps)))
    gen = torch.Generator().manual_seed(config.seed)
    cells, span = config.crop // f, (min(means.shape[-2:]) - config.crop // f + 1)
    tenth = max(1, config.steps // 10)
    first: list[float] = []
    last: list[float] = []
    grid: list[float] = []
    vae.train()
    try:
        for step in range(1, config.steps + 1):
            idx = torch.randint(len(images), (config.batch_size,), generator=gen)
            oy, ox = torch.randint(0, span, (2,), generator=gen).tolist()
            z = means[idx][..., oy:oy + cells, ox:ox + cells]
            x = images[idx][..., oy * f:(oy + cells) * f, ox * f:(ox + cells) * f]
            loss = ((vae.decode_unscaled(z) - x) ** 2).mean()
            mse = float(loss.detach())
            if config.edge_penalty > 0:
                noise = torch.randn(config.noise_batch, vae.config.embed_dim, config.noise_cells, config.noise_cells,
                                    generator=gen)
                ratio = grid_ratio(vae.decode(noise), f)
                loss = loss + config.edge_penalty * (ratio - 1.0) ** 2
                if step > config.steps - tenth:
                    grid.append(float(ratio.detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            value = mse
            if step <= tenth:
                first.append(value)
            if step > config.steps - tenth:
                last.append(value)
            if log is not None and step % log_every == 0:
                log(step, value)
    finally:
        vae.eval()
        for p, flag in zip(frozen, flags, strict=True):
            p.requires_grad_(flag)
    if any(not torch.equal(p, b) for p, b in zip(frozen, before, strict=True)):  # pragma: no cover - a bug
        raise RuntimeError("finetune_decoder changed an encoder weight")
    out = {"mse_first": sum(first) / len(first), "mse_last": sum(last) / len(last)}
    if grid:
        out["grid_ratio_last"] = sum(grid) / len(grid)
    return out
