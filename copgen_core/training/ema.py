"""Exponential moving average of a model's weights.

The backbone recipe updates the average after every optimiser step with rate 0.9999, starting from
a copy of the model (``ema = rate * ema + (1 - rate) * model``). The VAE recipe (ema-pytorch) uses
decay 0.995, updated every 10 steps once step 1000 is passed, copies the model until then, and warms
the decay up as ``min(decay, 1 - (1 + k)^-power)`` with ``k`` the steps since ``start_step`` (power
2/3, ema-pytorch's default). ``every``, ``start_step`` and ``power`` express both.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import torch
from torch import nn

ModelT = TypeVar("ModelT", bound=nn.Module)


class EMA(Generic[ModelT]):
    """A frozen copy of a model whose weights follow the model's as a moving average.

    Parameters
    ----------
    model:
        The model being trained; copied (deep copy, eval mode, no gradients).
    decay:
        Weight of the old average per update, in [0, 1).
    every:
        Update every ``every`` optimiser steps (after ``start_step``).
    start_step:
        Up to and including this optimiser step, the average is a plain copy of the model.
    power:
        Decay warm-up exponent: the decay used ``k`` steps after ``start_step`` is
        ``min(decay, 1 - (1 + k)^-power)``; 0 (default) uses ``decay`` from the start.

    Raises
    ------
    ValueError
        If ``decay`` is outside [0, 1), ``every < 1``, ``start_step < 0`` or ``power < 0``.
    """

    def __init__(self, model: ModelT, decay: float, *, every: int = 1, start_step: int = 0,
                 power: float = 0.0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}; e.g. 0.9999 for the backbone")
        if every < 1 or start_step < 0 or power < 0:
            raise ValueError(f"EMA every must be >= 1, start_step >= 0 and power >= 0, got every={every}, "
                             f"start_step={start_step}, power={power}")
        self.decay = float(decay)
        self.every = int(every)
        self.start_step = int(start_step)
        self.power = float(power)
        self.model: ModelT = copy.deepcopy(model)
        self.model.eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold ``model``'s weights in after optimiser step ``step`` (1 for the first step).

        Floating parameters and buffers are averaged; integer buffers are copied.
        """
        src = dict(model.state_dict())
        copy_only = step <= self.start_step
        if not copy_only and (step - self.start_step) % self.every:
            return
        decay = self.decay_at(step)
        for name, dst in self.model.state_dict().items():
            value = src[name].detach()
            if copy_only or not dst.is_floating_point():
                dst.copy_(value)
            else:
                dst.mul_(decay).add_(value.to(dst.dtype), alpha=1.0 - decay)

    def decay_at(self, step: int) -> float:
        """The decay an update after optimiser step ``step`` uses (see ``power``)."""
        if not self.power:
            return self.decay
        k = step - self.start_step - 1
        return 0.0 if k <= 0 else min(self.decay, 1.0 - (1.0 + k) ** -self.power)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and the settings."""
        return {"model": self.model.state_dict(), "decay": self.decay, "every": self.every,
                "start_step": self.start_step, "power": self.power}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises
        ------
        ValueError
            If the saved settings differ from this EMA's (resume with the same flags).
        """
        saved = (float(state["decay"]), int(state["every"]), int(state["start_step"]), float(state["power"]))
        mine = (self.decay, self.every, self.start_step, self.power)
        if saved != mine:
            raise ValueError(f"the saved EMA has (decay, every, start_step, power) = {saved}, this run {mine}; "
                             "resume with the same EMA settings")
        self.model.load_state_dict(state["model"])
