"""Training one KL-VAE: the official recipe minus LPIPS and the discriminator.

A batch is a (B, C, H, W) float tensor in the normalised [-1, 1] space of one image modality
(:func:`copgen_core.normalize.normalize`). Each step encodes, draws a posterior sample (from a
generator seeded by the run seed, the step and the micro-batch, so a resumed run draws the same
numbers), decodes, and minimises :class:`~copgen_core.training.losses.VAELoss`.

What the official trainer (``ddm``) does, and this one too: AdamW with torch's default betas and
weight decay over the encoder, decoder and the two 1x1 convs only, so the loss's log-variance is
never trained and the NLL is the plain pixel term (``learned_logvar=False``); the learning rate
decays as ``max((1 - s / S)^0.95, min_lr / lr)``; the EMA follows ema-pytorch. What differs (see
``docs/training.md``): no LPIPS term (no offline weights) and no PatchGAN discriminator (it starts at
step 50001, beyond any run here). The official ``gradient_accumulate_every: 2`` is not gradient
accumulation: its second pass trains the discriminator; ``grad_accum`` here is real accumulation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from copgen_core.seeding import derive_seed
from copgen_core.training import distributed
from copgen_core.training.ema import EMA
from copgen_core.training.losses import VAELoss
from copgen_core.training.optim import Decay, LRSchedule
from copgen_core.training.precision import Precision, autocast, check_precision
from copgen_core.training.state import capture_rng, check_config, restore_rng
from copgen_core.training.step import OptimizerStep
from copgen_core.vae import KLVAE, LOGVAR_CLAMP

PSNR_PEAK_TO_PEAK = 2.0
"""Range of the normalised space ([-1, 1]) used as the PSNR peak."""


@dataclass(frozen=True)
class VAETrainConfig:
    """Hyper-parameters of a VAE run (defaults: the official recipe where it is known).

    Attributes
    ----------
    lr:
        Peak learning rate (official 5e-6 for the 83.7 M-parameter VAEs).
    weight_decay, betas, adam_eps:
        AdamW settings (official: torch's defaults).
    warmup_steps:
        Linear warm-up steps (official: none).
    lr_decay, decay_steps, min_lr, lr_power:
        ``"poly"`` is the official decay floored at ``min_lr`` 1e-6, power 0.95, over ``decay_steps``.
    kl_weight, l1_weight, l2_weight, learned_logvar, logvar_init:
        The loss (see :class:`~copgen_core.training.losses.VAELoss`). The official loss declares a
        learned log-variance but never optimises it: ``learned_logvar=False`` is what it computes.
    ema_decay, ema_every, ema_start, ema_power:
        Official (ema-pytorch): 0.995 every 10 steps after step 1000 (a plain copy before), the decay
        warmed up with power 2/3.
    grad_accum:
        Micro-batches per step (official: 1; see the module notes).
    grad_clip:
        Gradient-norm clipping (official: none; its clip call comes after the optimiser step).
    precision:
        ``fp32`` (official) or ``bf16``/``fp16`` autocast on CUDA.
    seed:
        Run seed of every random draw.

    Raises
    ------
    ValueError
        On invalid values, naming the field.
    """

    lr: float = 5e-6
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_steps: int = 0
    lr_decay: Decay = "constant"
    decay_steps: int | None = None
    min_lr: float = 1e-6
    lr_power: float = 0.95
    kl_weight: float = 1e-6
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    learned_logvar: bool = False
    logvar_init: float = 0.0
    ema_decay: float = 0.995
    ema_every: int = 10
    ema_start: int = 1000
    ema_power: float = 2.0 / 3.0
    grad_accum: int = 1
    grad_clip: float | None = None
    precision: Precision = "fp32"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        check_precision(self.precision)
        self.schedule()  # validates the lr fields

    def schedule(self) -> LRSchedule:
        """The learning-rate schedule of these settings."""
        return LRSchedule(self.lr, self.warmup_steps, self.lr_decay, self.decay_steps, self.lr_power,
                          min(self.min_lr, self.lr) if self.lr_decay == "poly" else 0.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for states and provenance)."""
        return asdict(self)


class _Reconstruction(nn.Module):
    """VAE and loss as one module, so DDP averages the gradients of both (the loss owns the logvar)."""

    def __init__(self, vae: KLVAE, loss: VAELoss) -> None:
        super().__init__()
        self.vae = vae
        self.loss = loss

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, dict[str, float]]:
        moments = self.vae.moments(x)
        mean, logvar = torch.chunk(moments, 2, dim=1)
        z = mean + torch.exp(0.5 * torch.clamp(logvar, *LOGVAR_CLAMP)) * eps.to(mean.dtype)
        recon = self.vae.decode_unscaled(z)
        result: tuple[Tensor, dict[str, float]] = self.loss(x, recon, moments)
        return result


def psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error in the [-1, 1] space (peak-to-peak 2): ``10 log10(4 / mse)``."""
    return math.inf if mse <= 0 else 10.0 * math.log10(PSNR_PEAK_TO_PEAK**2 / mse)


class VAETrainer:
    """Trains one :class:`~copgen_core.vae.KLVAE` with AdamW, EMA and gradient accumulation.

    Parameters
    ----------
    vae:
        The model, trained in place (moved to ``device``).
    config:
        Hyper-parameters.
    device:
        Training device.

    Attributes
    ----------
    ema:
        The moving average; its model is what gets saved and evaluated.
    history:
        Logged metrics, one dict per :meth:`train_step` call that had ``log=True``.
    """

    def __init__(self, vae: KLVAE, config: VAETrainConfig, *, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.config = config
        self.vae = vae.to(self.device).train()
        self.loss = VAELoss(kl_weight=config.kl_weight, l1_weight=config.l1_weight, l2_weight=config.l2_weight,
                            learned_logvar=config.learned_logvar, logvar_init=config.logvar_init).to(self.device)
        self.module = distributed.wrap(_Reconstruction(self.vae, self.loss), self.device)
        self.ema = EMA(self.vae, config.ema_decay, every=config.ema_every, start_step=config.ema_start,
                       power=config.ema_power)
        params = list(self.vae.parameters()) + list(self.loss.parameters())
        self.opt = OptimizerStep(self.module, params, config.schedule(), weight_decay=config.weight_decay,
                                 betas=config.betas, eps=config.adam_eps, device=self.device,
                                 precision=config.precision, grad_accum=config.grad_accum,
                                 grad_clip=config.grad_clip)
        self.history: list[dict[str, float]] = []

    @property
    def step(self) -> int:
        """Optimiser steps taken."""
        return self.opt.step

    def _posterior_eps(self, x: Tensor, micro: int) -> Tensor:
        f = self.vae.config.downsample_factor
        shape = (x.shape[0], self.vae.config.embed_dim, x.shape[2] // f, x.shape[3] // f)
        seed = derive_seed(self.config.seed, ("vae-step", self.step, micro, distributed.rank()), stream="posterior")
        gen = torch.Generator(device=self.device).manual_seed(seed)
        return torch.randn(shape, generator=gen, device=self.device)

    def _loss(self, x: Tensor, micro: int) -> tuple[Tensor, dict[str, float]]:
        x = x.to(self.device, non_blocking=True)
        loss, metrics = self.module(x, self._posterior_eps(x, micro))
        return loss, metrics

    def train_step(self, micro_batches: Sequence[Tensor], *, log: bool = True) -> dict[str, float]:
        """One optimiser step over ``grad_accum`` micro-batches of images (B, C, H, W).

        Returns
        -------
        dict
            ``loss``, ``nll``, ``kl``, ``l1``, ``mse``, ``logvar``, ``psnr`` (of this batch's
            posterior-sample reconstruction), ``lr`` and ``step``.
        """
        metrics = self.opt(micro_batches, lambda batch, i: self._loss(batch, i))
        self.ema.update(self.vae, self.step)
        metrics = distributed.mean_over_ranks(metrics, self.device)
        metrics["psnr"] = psnr(metrics["mse"])
        metrics["step"] = float(self.step)
        if log:
            self.history.append(dict(metrics))
        return metrics

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Tensor], *, use_ema: bool = True) -> dict[str, float]:
        """Reconstruction error of the posterior mean over ``batches`` (e.g. the validation split).

        Returns
        -------
        dict
            ``mse``, ``l1``, ``psnr`` (over every element of every batch) and ``samples``.
        """
        model = self.ema.model if use_ema else self.vae
        was_training = model.training
        model.eval()
        sq = ab = count = samples = 0.0
        for x in batches:
            x = x.to(self.device)
            with autocast(self.device, self.config.precision):
                mean = torch.chunk(model.moments(x), 2, dim=1)[0]
                recon = model.decode_unscaled(mean).float()
            diff = recon - x.float()
            sq += float(diff.square().sum())
            ab += float(diff.abs().sum())
            count += diff.numel()
            samples += x.shape[0]
        model.train(was_training)
        if not count:
            raise ValueError("evaluate got no batches; give a non-empty validation split (--val-fraction)")
        mse = sq / count
        return {"mse": mse, "l1": ab / count, "psnr": psnr(mse), "samples": samples}

    @torch.no_grad()
    def latent_scale(self, batches: Iterable[Tensor], *, use_ema: bool = True) -> float:
        """``1 / std`` of posterior-sampled latents over ``batches``: the VAE's scale factor.

        The official scale factors were computed this way (``compute_scaling_factor_simplified.py``).

        Raises
        ------
        ValueError
            If no batch is given or the latents have zero spread.
        """
        model = self.ema.model if use_ema else self.vae
        total = total_sq = count = 0.0
        for i, x in enumerate(batches):
            mean, logvar = torch.chunk(model.moments(x.to(self.device)).float(), 2, dim=1)
            gen = torch.Generator(device=self.device).manual_seed(
                derive_seed(self.config.seed, ("scale", i), stream="posterior"))
            z = mean + torch.exp(0.5 * torch.clamp(logvar, *LOGVAR_CLAMP)) * torch.randn(
                mean.shape, generator=gen, device=self.device)
            total += float(z.double().sum())
            total_sq += float(z.double().square().sum())
            count += z.numel()
        if not count:
            raise ValueError("latent_scale got no batches; give training samples to compute the scale factor from")
        var = total_sq / count - (total / count) ** 2
        if not var > 0:
            raise ValueError("the latents have zero spread; the VAE is degenerate, train it longer")
        return 1.0 / math.sqrt(var)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (see :mod:`~copgen_core.training.state`)."""
        return {"kind": "vae", "config": self.config.to_dict(), "model": self.vae.state_dict(),
                "loss": self.loss.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "rng": capture_rng(), "history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` output (also restores the global RNG states).

        Raises
        ------
        StateError
            If the state is not a VAE state or its config differs from this trainer's.
        """
        check_config({"kind": state.get("kind")}, {"kind": "vae"}, what="training kind")
        check_config(state["config"], self.config.to_dict(), what="VAE training config")
        self.vae.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.history = [dict(h) for h in state["history"]]
        restore_rng(state["rng"])
