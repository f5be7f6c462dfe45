"""One optimiser step: accumulation, clipping, non-finite losses, state."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from copgen_core.training.optim import LRSchedule
from copgen_core.training.step import LossFn, OptimizerStep


def _setup(grad_accum: int, grad_clip: float | None = None) -> tuple[nn.Linear, OptimizerStep]:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    step = OptimizerStep(model, list(model.parameters()), LRSchedule(0.1), weight_decay=0.0, betas=(0.9, 0.99),
                         device=torch.device("cpu"), grad_accum=grad_accum, grad_clip=grad_clip)
    return model, step


def _loss(model: nn.Linear) -> LossFn:
    def fn(batch: tuple[Tensor, Tensor], index: int) -> tuple[Tensor, dict[str, float]]:
        x, y = batch
        return (model(x) - y).square().mean(), {"index": float(index)}
    return fn


def test_accumulated_micro_batches_equal_one_large_batch() -> None:
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    big_model, big = _setup(1)
    big([(x, y)], _loss(big_model))
    acc_model, acc = _setup(2)
    metrics = acc([(x[:4], y[:4]), (x[4:], y[4:])], _loss(acc_model))
    assert torch.allclose(big_model.weight, acc_model.weight, atol=1e-6)
    assert metrics["index"] == 0.5 and acc.step == 1  # metrics are micro-batch means
    with pytest.raises(ValueError, match="grad_accum"):
        acc([(x, y)], _loss(acc_model))


def test_clipping_reports_the_norm_and_bounds_the_update() -> None:
    model, step = _setup(1, grad_clip=1e-3)
    before = model.weight.detach().clone()
    metrics = step([(torch.randn(4, 3) * 100, torch.zeros(4, 1))], _loss(model))
    assert metrics["grad_norm"] > 1e-3
    assert (model.weight - before).abs().max() <= 0.1 + 1e-6  # Adam's first step moves at most lr


def test_non_finite_loss_stops_before_the_update() -> None:
    model, step = _setup(1)
    before = model.weight.detach().clone()
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        step([(torch.full((2, 3), float("nan")), torch.zeros(2, 1))], _loss(model))
    assert torch.equal(model.weight, before) and step.step == 0
