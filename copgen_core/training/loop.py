"""The training loop: steps, periodic atomic checkpoints, logging; resumable at any checkpoint.

The loop owns no randomness and no data: it asks ``batches_from(position)`` for an iterator of
micro-batches starting at micro-batch ``position`` (``step * grad_accum``), which a resumable data
source (``transforms.dataset.ResumableSampler``) can start anywhere without replaying the past.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from copgen_core.training import distributed
from copgen_core.training.state import save_state


class Trainer(Protocol):
    """What the loop needs of a trainer (both :class:`VAETrainer` and :class:`BackboneTrainer` fit)."""

    @property
    def step(self) -> int: ...

    def train_step(self, micro_batches: Sequence[Any], *, log: bool = True) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...


def run_loop(
    trainer: Trainer,
    batches_from: Callable[[int], Iterator[Any]],
    *,
    steps: int,
    grad_accum: int,
    state_path: str | Path,
    checkpoint_every: int,
    log_every: int = 10,
    extra_state: Mapping[str, Any] | None = None,
    describe_position: Callable[[int], Mapping[str, Any]] | None = None,
    on_log: Callable[[dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
) -> int:
    """Train until ``trainer.step == steps``, checkpointing every ``checkpoint_every`` steps and at the end.

    Parameters
    ----------
    trainer:
        A fresh trainer, or one restored from a state (it continues from its ``step``).
    batches_from:
        ``position -> iterator`` of micro-batches starting at micro-batch ``position``.
    steps:
        Total optimiser steps of the run (not the steps still to do).
    grad_accum:
        Micro-batches per step.
    state_path:
        Training-state file, rewritten atomically at each checkpoint (rank 0 only).
    checkpoint_every:
        Steps between checkpoints.
    log_every:
        Steps between history records and ``on_log`` calls (the last step is always logged).
    extra_state:
        Stored beside the trainer's state (e.g. the data source's identity, to check on resume).
    describe_position:
        ``micro-batch position -> dict`` stored with it too (e.g. the epoch and the offset in it).
    on_log, on_checkpoint:
        Callbacks on rank 0: the step's metrics; ``(step, path)`` after a checkpoint is on disk.

    Returns
    -------
    int
        The number of steps run by this call.

    Raises
    ------
    ValueError
        On non-positive ``steps``, ``grad_accum``, ``checkpoint_every`` or ``log_every``.
    """
    if min(steps, grad_accum, checkpoint_every, log_every) < 1:
        raise ValueError(f"steps, grad_accum, checkpoint_every and log_every must be >= 1, got {steps}, "
                         f"{grad_accum}, {checkpoint_every}, {log_every}")
    start = trainer.step
    if start >= steps:
        return 0
    batches = batches_from(start * grad_accum)
    state_path = Path(state_path)
    while trainer.step < steps:
        micro = [next(batches) for _ in range(grad_accum)]
        step = trainer.step + 1
        log = step % log_every == 0 or step == steps
        metrics = trainer.train_step(micro, log=log)
        if log and on_log is not None and distributed.is_main():
            on_log(metrics)
        if step % checkpoint_every == 0 or step == steps:
            if distributed.is_main():
                state = trainer.state_dict()
                position = step * grad_accum
                where = dict(describe_position(position)) if describe_position is not None else {}
                state["data"] = {"micro_batches": position, **where, **dict(extra_state or {})}
                save_state(state_path, state)
                if on_checkpoint is not None:
                    on_checkpoint(step, state_path)
            distributed.barrier()
    return trainer.step - start
