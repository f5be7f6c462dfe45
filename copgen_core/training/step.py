"""One optimiser step over accumulated micro-batches: the part both trainers share.

Per step: set the scheduled learning rate, run ``grad_accum`` micro-batches (forward under
autocast, backward of ``loss / grad_accum``, gradient all-reduce only on the last one under DDP),
optionally clip the gradient norm, and step the optimiser through the loss scaler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from copgen_core.training.optim import LRSchedule, adamw, set_lr
from copgen_core.training.precision import autocast, grad_scaler

Batch = TypeVar("Batch")
LossFn = Callable[[Any, int], tuple[Tensor, dict[str, float]]]
"""``(micro_batch, index) -> (scalar loss, metrics)``; the index is the micro-batch's position in the step."""


class OptimizerStep:
    """AdamW, its schedule, the loss scaler and gradient accumulation for one set of parameters.

    Parameters
    ----------
    module:
        What the loss function runs (possibly DDP-wrapped); its ``no_sync`` is used between
        micro-batches when present.
    params:
        Every trained parameter (the model's, plus any the loss owns).
    schedule:
        The learning rate per step.
    weight_decay, betas, eps:
        AdamW settings.
    device, precision:
        Where the step runs and its mixed precision (see :mod:`~copgen_core.training.precision`).
    grad_accum:
        Micro-batches per optimiser step.
    grad_clip:
        Clip the global gradient norm to this value; None disables clipping.

    Raises
    ------
    ValueError
        On ``grad_accum < 1`` or a non-positive ``grad_clip``.
    """

    def __init__(
        self,
        module: nn.Module,
        params: Sequence[nn.Parameter],
        schedule: LRSchedule,
        *,
        weight_decay: float,
        betas: tuple[float, float],
        eps: float = 1e-8,
        device: torch.device,
        precision: str = "fp32",
        grad_accum: int = 1,
        grad_clip: float | None = None,
    ) -> None:
        if grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be positive (or None to disable clipping), got {grad_clip}")
        self.module = module
        self.params = list(params)
        self.schedule = schedule
        self.device = device
        self.precision = precision
        self.grad_accum = grad_accum
        self.grad_clip = grad_clip
        self.optimizer = adamw(self.params, lr=schedule.lr, weight_decay=weight_decay, betas=betas, eps=eps)
        self.scaler = grad_scaler(device, precision)
        self.step = 0

    def __call__(self, micro_batches: Sequence[Any], loss_fn: LossFn) -> dict[str, float]:
        """Run one optimiser step over ``grad_accum`` micro-batches.

        Returns
        -------
        dict
            The loss function's metrics averaged over the micro-batches, plus ``loss``, ``lr`` and
            (when clipping) ``grad_norm``.

        Raises
        ------
        ValueError
            If the number of micro-batches is not ``grad_accum``.
        FloatingPointError
            If the loss is not finite (the step is not applied; lower the learning rate).
        """
        if len(micro_batches) != self.grad_accum:
            raise ValueError(f"expected {self.grad_accum} micro-batches per step (grad_accum), got {len(micro_batches)}")
        lr = self.schedule.lr_at(self.step)
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        n = len(micro_batches)
        for i, batch in enumerate(micro_batches):
            sync = i == n - 1 or not hasattr(self.module, "no_sync")
            ctx = contextlib.nullcontext() if sync else self.module.no_sync()  # type: ignore[operator]
            with ctx:
                with autocast(self.device, self.precision):
                    loss, metrics = loss_fn(batch, i)
                if not torch.isfinite(loss.detach()).item():
                    raise FloatingPointError(
                        f"loss is {float(loss.detach())} at step {self.step + 1}; lower the learning rate, enable "
                        "gradient clipping (--grad-clip) or use fp32"
                    )
                self.scaler.scale(loss / n if n > 1 else loss).backward()
            for k, v in {"loss": float(loss.detach()), **metrics}.items():
                totals[k] = totals.get(k, 0.0) + v / n
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        totals["lr"] = lr
        return totals

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, scaler and step."""
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (tensors are moved to the parameters' device)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
