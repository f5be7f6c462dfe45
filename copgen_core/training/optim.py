"""AdamW and the learning-rate schedule.

The schedule is a pure function of the optimiser step, so it needs no state of its own: a resumed
run recomputes the same rate. Backbone recipe: linear warm-up over 5000 steps, then constant
(``lr * min(step / warmup, 1)``, as the official ``LambdaLR``: the first step runs at rate 0). VAE
recipe: polynomial decay ``lr * max((1 - step / steps)^0.95, min_lr / lr)`` over the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch

Decay = Literal["constant", "poly"]
DECAYS: tuple[str, ...] = ("constant", "poly")


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate per optimiser step.

    Attributes
    ----------
    lr:
        Peak learning rate.
    warmup_steps:
        Linear warm-up length; 0 disables it.
    decay:
        ``"constant"`` after warm-up, or ``"poly"``: ``lr * max((1 - s / decay_steps)^power, min_lr / lr)``
        with ``s`` the steps since warm-up (the official VAE schedule).
    decay_steps:
        Length of the polynomial decay (needed for ``"poly"``).
    power:
        Exponent of the polynomial decay.
    min_lr:
        Floor of the polynomial decay.

    Raises
    ------
    ValueError
        On negative sizes or an unknown decay, or ``"poly"`` without ``decay_steps``.
    """

    lr: float
    warmup_steps: int = 0
    decay: Decay = "constant"
    decay_steps: int | None = None
    power: float = 0.95
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay not in DECAYS:
            raise ValueError(f"unknown lr decay {self.decay!r}; use one of {list(DECAYS)}")
        if self.decay == "poly" and (self.decay_steps is None or self.decay_steps < 1):
            raise ValueError("lr decay 'poly' needs decay_steps >= 1 (the run's length in steps)")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must lie in [0, lr={self.lr}], got {self.min_lr}")

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0 for the first step)."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * step / self.warmup_steps
        if self.decay == "constant" or self.decay_steps is None:
            return self.lr
        frac = min((step - self.warmup_steps) / self.decay_steps, 1.0)
        return self.lr * max((1.0 - frac) ** self.power, self.min_lr / self.lr)


def adamw(
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``params`` (the rate is reset every step from an :class:`LRSchedule`).

    Raises
    ------
    ValueError
        On a negative weight decay or betas outside [0, 1).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
    return torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr
