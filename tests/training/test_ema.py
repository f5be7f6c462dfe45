"""The weight moving average: official backbone update and the ema-pytorch schedule of the VAEs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from copgen_core.training.ema import EMA


def _model(value: float) -> nn.Linear:
    m = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def test_ema_starts_as_a_copy_and_follows_the_official_update() -> None:
    model = _model(1.0)
    ema = EMA(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model, 1)
    assert torch.allclose(ema.model.weight, torch.full((1, 2), 0.9 * 1.0 + 0.1 * 2.0))
    assert not ema.model.weight.requires_grad


def test_ema_copies_until_start_step_then_updates_every_n_steps() -> None:
    model = _model(0.0)
    ema = EMA(model, 0.5, every=10, start_step=1000)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model, 1000)
    assert ema.model.weight.flatten().tolist() == [4.0, 4.0]  # plain copy up to start_step
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema.update(model, 1005)
    assert ema.model.weight.flatten().tolist() == [4.0, 4.0]  # not an update step
    ema.update(model, 1010)
    assert ema.model.weight.flatten().tolist() == [2.0, 2.0]


def test_decay_warms_up_as_ema_pytorch() -> None:
    ema = EMA(_model(0.0), 0.995, every=10, start_step=1000, power=2 / 3)
    assert ema.decay_at(1001) == 0.0
    assert ema.decay_at(1011) == pytest.approx(1 - 11 ** (-2 / 3))
    assert ema.decay_at(100_000) == 0.995
    assert EMA(_model(0.0), 0.9).decay_at(1) == 0.9


def test_ema_state_round_trips_and_refuses_other_settings() -> None:
    ema = EMA(_model(3.0), 0.99)
    other = EMA(_model(0.0), 0.99)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.model.weight, ema.model.weight)
    with pytest.raises(ValueError, match="same EMA settings"):
        EMA(_model(0.0), 0.9).load_state_dict(ema.state_dict())
