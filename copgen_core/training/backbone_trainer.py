"""Training the COP-GEN backbone: independent noise levels per modality, ε-prediction.

For every sample and every modality independently: draw ``n ~ U{1..1000}`` and ``ε ~ N(0, I)``, form
``x_n = sqrt(abar_n) z + sqrt(1 - abar_n) ε`` from the clean latent ``z`` and ask the backbone for
ε. The loss is :func:`~copgen_core.training.losses.diffusion_loss`. Image latents are posterior
samples of the frozen VAEs, times their scale factor, drawn either from pixels (the VAE encodes them)
or from cached posterior moments; scalars (location, date) are diffused as their raw 3-vectors.

Two options beyond the official recipe, both off by default:

- **modality dropout** (probability ``p`` per sample and modality): the modality is replaced by pure
  noise ``x = ε`` labelled ``n = 1000``, exactly how the sampler marginalises a modality that is
  neither generated nor given;
- **condition dropout** (probability ``q``): the modality is given clean, ``x = z`` at ``n = 0``, how
  the sampler feeds conditions. The official model never sees ``n = 0`` in training (``n >= 1``)
  although inference conditions at ``t = 0``; this puts that input in distribution.

- **task sampling** (probability ``f`` per sample): instead of independent draws, the sample becomes
  one conditional-generation task: the ``task_targets`` share one random step, one of the
  ``task_conditions`` sets (drawn uniformly) is given clean at ``n = 0`` and every other modality is
  marginalised (pure noise at ``n = 1000``). This spends part of a small budget on the exact input
  pattern the product samples with (e.g. S2 L2A from {DEM, LULC, location, date} + S1 + L1C).

Dropped and conditioned modalities carry no loss (their ε target is either the input itself or
undefined). Randomness comes from a generator seeded by ``(seed, step, micro-batch, rank)``, so a
resumed run draws exactly the numbers the uninterrupted one would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from copgen_core.backbone import CopgenBackbone
from copgen_core.modalities import Modality
from copgen_core.schedule import DiscreteVPSchedule, copgen_schedule
from copgen_core.seeding import derive_seed
from copgen_core.training import distributed
from copgen_core.training.ema import EMA
from copgen_core.training.losses import diffusion_loss
from copgen_core.training.optim import Decay, LRSchedule
from copgen_core.training.precision import Precision, autocast, check_precision
from copgen_core.training.state import capture_rng, check_config, restore_rng
from copgen_core.training.step import OptimizerStep
from copgen_core.vae import KLVAE, LOGVAR_CLAMP

Batch = Mapping[str, Tensor]
"""Modality key -> (B, ...) tensor: pixels (B, C, H, W) in the normalised space or posterior moments
(B, 2 * 8, h, w) for image modalities, (B, 1, 1, 3) vectors for scalars. Other keys are ignored."""


@dataclass(frozen=True)
class BackboneTrainConfig:
    """Hyper-parameters of a backbone run (defaults: the official recipe).

    Attributes
    ----------
    lr, weight_decay, betas, adam_eps:
        AdamW; official 2e-4, 0.03, (0.99, 0.99).
    warmup_steps:
        Linear warm-up, then constant (official 5000).
    lr_decay, lr_decay_steps:
        ``"constant"`` (official) keeps the peak rate after the warm-up; ``"poly"`` decays it to 0 over
        ``lr_decay_steps`` steps after the warm-up (``lr (1 - s / lr_decay_steps)^0.95``, the official VAE
        schedule; not in the official backbone recipe). A decayed run is tied to its length: resuming it
        with another ``lr_decay_steps`` is refused (the config differs).
    ema_rate:
        EMA decay per optimiser step (official 0.9999; short runs want e.g. 0.999).
    grad_accum:
        Micro-batches per optimiser step.
    grad_clip:
        Gradient-norm clipping; None (official) disables it.
    precision:
        ``fp32``, or ``bf16``/``fp16`` autocast on CUDA (official: fp16).
    gradient_checkpointing:
        Recompute each block in the backward pass (saves activation memory).
    modality_dropout:
        Probability per (sample, modality) of pure noise at n = 1000 (not in the official recipe).
    condition_dropout:
        Probability per (sample, modality) of a clean latent at n = 0 (not in the official recipe).
    task_fraction, task_targets, task_conditions:
        Task sampling (see the module notes; not in the official recipe): probability per sample,
        modality keys generated, and the condition sets (tuples of keys, one drawn per sample).
    min_snr_gamma:
        Min-SNR-γ loss weighting (Hang et al., 2023; not in the official recipe): each noised
        modality's ε-MSE is weighted by ``min(SNR_n, γ) / SNR_n`` with ``SNR_n = abar_n / (1 - abar_n)``,
        which stops the many nearly clean steps from dominating the gradient; None (official) weighs
        every step 1.
    timestep_shift:
        Shift of the training-step distribution toward noise (not in the official recipe): ``u ~ U(0, 1)``
        becomes ``t = s u / (1 + (s - 1) u)`` and ``n = ceil(N t)``, so 1 (official) is uniform on
        ``1..N`` and ``s > 1`` trains more on high noise, where a latent with strong spatial correlation
        still shows its low frequencies at ``n = N`` and generation decides its large-scale structure
        (the resolution shift of Esser et al., 2024).
    terminal_noise:
        Probability per noised (sample, modality) in the loss of a *pure-noise* draw instead (not in the
        official recipe): input ``x = eps`` at ``n = N`` with the target ``(eps - sqrt(abar_N) z) / sqrt(1 -
        abar_N)``, so the x0 estimate learned there is the mean of ``z`` given the rest, which is what the
        sampler's first step needs: it starts from pure noise, while at ``n = N`` the schedule leaves
        ``sqrt(abar_N) = 0.068`` of the latent, enough for a backbone to read the low frequencies of a
        strongly correlated latent from ``x_N`` instead of learning to generate them (Lin et al., 2024).
        Such a draw keeps the step's usual loss weight, so it teaches much only a v-prediction backbone
        (weight ``1 / abar_N``: the loss is the x0 error); an ε one weighs the x0 error by ``abar_N / (1 - abar_N)``.
    seed:
        Run seed of every random draw.

    Raises
    ------
    ValueError
        On invalid values, naming the field.
    """

    lr: float = 2e-4
    weight_decay: float = 0.03
    betas: tuple[float, float] = (0.99, 0.99)
    adam_eps: float = 1e-8
    warmup_steps: int = 5000
    lr_decay: Decay = "constant"
    lr_decay_steps: int | None = None
    ema_rate: float = 0.9999
    grad_accum: int = 1
    grad_clip: float | None = None
    precision: Precision = "fp32"
    gradient_checkpointing: bool = False
    modality_dropout: float = 0.0
    condition_dropout: float = 0.0
    min_snr_gamma: float | None = None
    task_fraction: float = 0.0
    task_targets: tuple[str, ...] = ()
    task_conditions: tuple[tuple[str, ...], ...] = ()
    timestep_shift: float = 1.0
    terminal_noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        check_precision(self.precision)
        p, q = self.modality_dropout, self.condition_dropout
        if not (0.0 <= p <= 1.0 and 0.0 <= q <= 1.0 and p + q <= 1.0):
            raise ValueError(
                f"modality_dropout={p} and condition_dropout={q} must be probabilities with a sum <= 1"
            )
        object.__setattr__(self, "task_targets", tuple(self.task_targets))
        object.__setattr__(self, "task_conditions", tuple(tuple(c) for c in self.task_conditions))
        if not 0.0 <= self.task_fraction <= 1.0:
            raise ValueError(f"task_fraction must be a probability, got {self.task_fraction}")
        if self.task_fraction > 0 and not (self.task_targets and self.task_conditions):
            raise ValueError("task_fraction > 0 needs task_targets and at least one task_conditions set "
                             "(an empty set means unconditional generation)")
        for given in self.task_conditions:
            both = sorted(set(given) & set(self.task_targets))
            if both:
                raise ValueError(f"task condition set {list(given)} contains targets {both}; a modality is either "
                                 "generated or given")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be positive (or None), got {self.min_snr_gamma}")
        if not (self.timestep_shift > 0 and math.isfinite(self.timestep_shift)):
            raise ValueError(f"timestep_shift must be a positive number (1 = uniform steps), got {self.timestep_shift}")
        if not 0.0 <= self.terminal_noise <= 1.0:
            raise ValueError(f"terminal_noise must be a probability, got {self.terminal_noise}")
        self.schedule()

    def schedule(self) -> LRSchedule:
        """The learning-rate schedule: linear warm-up, then constant or decayed (``lr_decay``)."""
        return LRSchedule(self.lr, self.warmup_steps, decay=self.lr_decay, decay_steps=self.lr_decay_steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for states and provenance); the decay fields only when the rate decays, so the
        states of constant-rate runs saved before they existed still resume."""
        out = asdict(self)
        if self.lr_decay == "constant" and self.lr_decay_steps is None:
            del out["lr_decay"], out["lr_decay_steps"]
        return out


def shifted_steps(u: Tensor, shift: float, num_steps: int) -> Tensor:
    """Training steps from uniform draws ``u`` in [0, 1): ``ceil(N s u / (1 + (s - 1) u))``, clamped to ``1..N``.

    ``shift`` 1 gives uniform steps; 3 puts half of the draws above ``n = 0.75 N``. Returns int64, shape of ``u``.
    """
    t = shift * u / (1.0 + (shift - 1.0) * u)
    return torch.ceil(t * num_steps).long().clamp(1, num_steps)


def sample_posterior(moments: Tensor, scale_factor: float, eps: Tensor) -> Tensor:
    """Scaled posterior sample ``scale * (mean + exp(0.5 clamp(logvar, -30, 20)) ε)`` from moments.

    Parameters
    ----------
    moments:
        (B, 2C, h, w): mean in the first C channels, logvar in the last C.
    eps:
        (B, C, h, w) standard normal noise.
    """
    mean, logvar = torch.chunk(moments.float(), 2, dim=1)
    return scale_factor * (mean + torch.exp(0.5 * torch.clamp(logvar, *LOGVAR_CLAMP)) * eps)


class BackboneTrainer:
    """Trains a :class:`~copgen_core.backbone.CopgenBackbone` over frozen VAEs.

    Parameters
    ----------
    backbone:
        The model (any subset of modalities), trained in place and moved to ``device``.
    vaes:
        A VAE for every image modality of the backbone (frozen; used to encode pixels and for the
        scale factor of cached moments).
    config:
        Hyper-parameters.
    device:
        Training device.
    schedule:
        Noise schedule (the official scaled-linear one by default).

    Raises
    ------
    ValueError
        If an image modality of the backbone has no VAE.
    """

    def __init__(
        self,
        backbone: CopgenBackbone,
        vaes: Mapping[str, KLVAE],
        config: BackboneTrainConfig,
        *,
        device: str | torch.device = "cpu",
        schedule: DiscreteVPSchedule | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.config = config
        self.backbone = backbone.to(self.device).train()
        self.backbone.gradient_checkpointing = config.gradient_checkpointing
        self.modalities: tuple[Modality, ...] = backbone.modalities
        missing = [m.key for m in self.modalities if m.is_image and m.key not in vaes]
        if missing:
            raise ValueError(f"no VAE for the image modalities {missing}; train them with 'copgen train-vae' or "
                             "pass a --vae-dir/--bundle that holds them")
        self.vaes = {m.key: vaes[m.key].to(self.device).eval().requires_grad_(False)
                     for m in self.modalities if m.is_image}
        self.schedule = schedule or copgen_schedule()
        self.module = distributed.wrap(self.backbone, self.device)
        self.ema = EMA(self.backbone, config.ema_rate)
        self.opt = OptimizerStep(self.module, list(self.backbone.parameters()), config.schedule(),
                                 weight_decay=config.weight_decay, betas=config.betas, eps=config.adam_eps,
                                 device=self.device, precision=config.precision, grad_accum=config.grad_accum,
                                 grad_clip=config.grad_clip)
        self.history: list[dict[str, float]] = []
        keys = {m.key for m in self.modalities}
        unknown = sorted((set(config.task_targets) | {k for c in config.task_conditions for k in c}) - keys)
        if unknown:
            raise ValueError(f"task sampling names {unknown}, which this backbone does not model ({sorted(keys)})")

    @property
    def step(self) -> int:
        """Optimiser steps taken."""
        return self.opt.step

    def _generator(self, *key: object) -> torch.Generator:
        seed = derive_seed(self.config.seed, tuple(key), stream="backbone")  # type: ignore[arg-type]
        return torch.Generator(device=self.device).manual_seed(seed)

    @torch.no_grad()
    def clean_latents(self, batch: Batch, gen: torch.Generator) -> list[Tensor]:
        """Clean latents ``z`` in backbone order from pixels, moments or scalar vectors.

        Raises
        ------
        ValueError
            If a modality is missing from the batch or has a shape that is neither its pixels, its
            moments nor its scalar vector.
        """
        out = []
        for m in self.modalities:
            if m.key not in batch:
                raise ValueError(f"the batch has no {m.key!r}; it holds {sorted(batch)}")
            x = batch[m.key].to(self.device, non_blocking=True)
            c, h, w = m.latent_shape
            if m.is_scalar:
                if tuple(x.shape[1:]) != m.pixel_shape:
                    raise ValueError(f"{m.key}: expected (B, 1, 1, 3) vectors, got {tuple(x.shape)}")
                out.append(x.float())
                continue
            vae = self.vaes[m.key]
            eps = torch.randn((x.shape[0], c, h, w), generator=gen, device=self.device)
            if tuple(x.shape[1:]) == m.pixel_shape:
                out.append(vae.encode(x, eps=eps).float())
            elif tuple(x.shape[1:]) == (2 * c, h, w):
                out.append(sample_posterior(x, vae.scale_factor, eps))
            else:
                raise ValueError(f"{m.key}: expected pixels {(-1, *m.pixel_shape)} or moments {(-1, 2 * c, h, w)}, "
                                 f"got {tuple(x.shape)}")
        return out

    def noised_inputs(
        self, z: Sequence[Tensor], gen: torch.Generator, *, dropout: bool = True
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], Tensor]:
        """Noise clean latents to independent random steps, with modality/condition dropout.

        Returns
        -------
        x, t, eps, weights
            Per modality the noisy input, the (B,) float timestep and the noise; (B, M) loss weights
            (0 where the modality was dropped or given clean; the min-SNR weight if configured).
        """
        p = self.config.modality_dropout if dropout else 0.0
        q = self.config.condition_dropout if dropout else 0.0
        xs, ts, epss, ws = [], [], [], []
        top = self.schedule.num_steps
        tasks = self._draw_tasks(z[0].shape[0], gen) if dropout and self.config.task_fraction > 0 else None
        if tasks is not None and len(z) != len(self.modalities):
            raise ValueError(f"task sampling needs one latent per modality ({len(self.modalities)}), got {len(z)}")
        for i, zm in enumerate(z):
            b = zm.shape[0]
            n = self._sample_steps(b, gen)
            eps = torch.randn(zm.shape, generator=gen, device=self.device)
            u = torch.rand((b,), generator=gen, device=self.device)
            drop, cond = u < p, (u >= p) & (u < p + q)
            x = self.schedule.add_noise(zm, eps, n)
            view = (-1,) + (1,) * (zm.ndim - 1)
            x = torch.where(drop.view(view), eps, torch.where(cond.view(view), zm, x))
            n = torch.where(drop, torch.full_like(n, top), torch.where(cond, torch.zeros_like(n), n))
            w = (~(drop | cond)).float() * self._snr_weight(n)
            if tasks is not None:
                x, n, w = self._apply_task(self.modalities[i].key, zm, eps, x, n, w, *tasks)
            target = eps
            if dropout and self.config.terminal_noise > 0:
                x, n, target, w = self._terminal_draw(zm, eps, x, n, w, gen)
            xs.append(x)
            ts.append(n.float())
            epss.append(target)
            ws.append(w)
        return xs, ts, epss, torch.stack(ws, dim=1)

    def _terminal_draw(self, zm: Tensor, eps: Tensor, x: Tensor, n: Tensor, w: Tensor,
                       gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Turn a ``terminal_noise`` share of the noised draws in the loss into pure-noise draws at ``n = N``.

        Returns the new (input, step, ε target, weight); the target of a pure-noise draw is
        ``(eps - sqrt(abar_N) z) / sqrt(1 - abar_N)``, the ε that makes the sampler's x0 estimate ``z``.
        """
        top = self.schedule.num_steps
        pick = (torch.rand(n.shape, generator=gen, device=self.device) < self.config.terminal_noise) & (w > 0)
        abar = float(self.schedule.alphas_cumprod[top])
        view = (-1,) + (1,) * (zm.ndim - 1)
        terminal = ((eps - abar ** 0.5 * zm) / (1.0 - abar) ** 0.5).to(eps.dtype)
        x = torch.where(pick.view(view), eps.to(x.dtype), x)
        target = torch.where(pick.view(view), terminal, eps)
        n_top = torch.full_like(n, top)
        w = torch.where(pick, self._snr_weight(n_top), w)
        return x, torch.where(pick, n_top, n), target, w

    def _draw_tasks(self, b: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Per sample: whether it is a task sample, which condition set, and the targets' shared step."""
        task = torch.rand((b,), generator=gen, device=self.device) < self.config.task_fraction
        choice = torch.randint(len(self.config.task_conditions), (b,), generator=gen, device=self.device)
        n = self._sample_steps(b, gen)
        return task, choice, n

    def _sample_steps(self, b: int, gen: torch.Generator) -> Tensor:
        """(b,) int64 training steps in ``1..N``: uniform, or shifted toward noise (``timestep_shift``)."""
        shift = self.config.timestep_shift
        if shift == 1.0:
            return self.schedule.sample_steps(b, generator=gen, device=self.device)
        return shifted_steps(torch.rand((b,), generator=gen, device=self.device), shift, self.schedule.num_steps)

    def _apply_task(self, key: str, zm: Tensor, eps: Tensor, x: Tensor, n: Tensor, w: Tensor, task: Tensor,
                    choice: Tensor, n_task: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Override one modality's (input, step, weight) on the task samples."""
        view = (-1,) + (1,) * (zm.ndim - 1)
        if key in self.config.task_targets:
            x = torch.where(task.view(view), self.schedule.add_noise(zm, eps, n_task), x)
            return x, torch.where(task, n_task, n), torch.where(task, self._snr_weight(n_task), w)
        member = torch.tensor([key in given for given in self.config.task_conditions], device=self.device)
        given = task & member[choice]
        x = torch.where(given.view(view), zm, torch.where(task.view(view), eps, x))
        n = torch.where(given, torch.zeros_like(n), torch.where(task, torch.full_like(n, self.schedule.num_steps), n))
        return x, n, torch.where(task, torch.zeros_like(w), w)

    def _snr_weight(self, n: Tensor) -> Tensor:
        """Per-sample loss weight of training step ``n``.

        Ones for an ε-prediction backbone unless ``min_snr_gamma`` is set. A v-prediction backbone
        (``BackboneConfig.prediction == "v"``) gets ``1 / abar_n`` on top: its ε error is
        ``alpha (v̂ - v)``, so the weighted ε-MSE is exactly the v-MSE of v-prediction training.
        """
        gamma = self.config.min_snr_gamma
        velocity = self.backbone.config.prediction == "v"
        if gamma is None and not velocity:
            return torch.ones(n.shape, device=n.device)
        abar = self.schedule.alphas_cumprod.to(n.device)[n.clamp(min=1)]
        weight = torch.ones_like(abar)
        if gamma is not None:
            snr = abar / (1.0 - abar)
            weight = snr.clamp(max=gamma) / snr
        if velocity:
            weight = weight / abar
        return weight.float()

    def _loss(self, batch: Batch, micro: int) -> tuple[Tensor, dict[str, float]]:
        gen = self._generator("step", self.step, micro, distributed.rank())
        z = self.clean_latents(batch, gen)
        x, t, eps, weights = self.noised_inputs(z, gen)
        eps_hat = self.module(x, t)
        loss, per_mod = diffusion_loss(eps_hat, eps, weights)
        metrics = {f"mse/{m.key}": float(v) for m, v in zip(self.modalities, per_mod.tolist(), strict=True)}
        metrics["kept"] = float((weights > 0).float().mean())
        return loss, metrics

    def train_step(self, micro_batches: Sequence[Batch], *, log: bool = True) -> dict[str, float]:
        """One optimiser step over ``grad_accum`` micro-batches.

        Returns
        -------
        dict
            ``loss``, ``mse/<key>`` per modality, ``kept`` (fraction of (sample, modality) pairs in
            the loss), ``lr`` and ``step``.
        """
        metrics = self.opt(micro_batches, self._loss)
        self.ema.update(self.backbone, self.step)
        metrics = distributed.mean_over_ranks(metrics, self.device)
        metrics["step"] = float(self.step)
        if log:
            self.history.append(dict(metrics))
        return metrics

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Batch], *, use_ema: bool = True) -> dict[str, float]:
        """Mean diffusion loss over ``batches`` with fixed noise (seeded by batch index), no dropout.

        Returns
        -------
        dict
            ``loss``, ``mse/<key>`` per modality and ``batches``.

        Raises
        ------
        ValueError
            If ``batches`` is empty.
        """
        model = self.ema.model if use_ema else self.backbone
        was_training = model.training
        model.eval()
        totals: dict[str, float] = {}
        count = 0
        for i, batch in enumerate(batches):
            gen = self._generator("eval", i)
            with autocast(self.device, self.config.precision):
                z = self.clean_latents(batch, gen)
                x, t, eps, _ = self.noised_inputs(z, gen, dropout=False)
                loss, per_mod = diffusion_loss(model(x, t), eps)
            totals["loss"] = totals.get("loss", 0.0) + float(loss)
            for m, v in zip(self.modalities, per_mod.tolist(), strict=True):
                totals[f"mse/{m.key}"] = totals.get(f"mse/{m.key}", 0.0) + v
            count += 1
        model.train(was_training)
        if not count:
            raise ValueError("evaluate got no batches; give a non-empty validation split (--val-fraction)")
        out = {k: v / count for k, v in totals.items()}
        out["batches"] = float(count)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly."""
        return {"kind": "backbone", "config": self.config.to_dict(), "model": self.backbone.state_dict(),
                "ema": self.ema.state_dict(), "opt": self.opt.state_dict(), "rng": capture_rng(),
                "history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` output (also restores the global RNG states).

        Raises
        ------
        StateError
            If the state is not a backbone state or its config differs from this trainer's.
        """
        check_config({"kind": state.get("kind")}, {"kind": "backbone"}, what="training kind")
        check_config(state["config"], self.config.to_dict(), what="backbone training config")
        self.backbone.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.history = [dict(h) for h in state["history"]]
        restore_rng(state["rng"])
