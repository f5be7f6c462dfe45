"""Learning-rate schedules: a pure function of the step."""

from __future__ import annotations

import pytest

from copgen_core.training.optim import LRSchedule, adamw


def test_warmup_is_linear_from_zero_then_constant_as_the_official_lambda() -> None:
    s = LRSchedule(2e-4, warmup_steps=5000)
    assert s.lr_at(0) == 0.0
    assert s.lr_at(2500) == pytest.approx(1e-4)
    assert s.lr_at(5000) == 2e-4
    assert s.lr_at(400_000) == 2e-4


def test_poly_decay_reaches_min_lr_at_the_end() -> None:
    s = LRSchedule(5e-6, decay="poly", decay_steps=100, power=0.95, min_lr=1e-6)
    assert s.lr_at(0) == pytest.approx(5e-6)
    assert s.lr_at(50) == pytest.approx(5e-6 * 0.5**0.95)
    assert s.lr_at(99) == pytest.approx(1e-6)  # the floor is reached before the end
    assert s.lr_at(10_000) == pytest.approx(1e-6)


def test_schedule_and_optimiser_refuse_bad_settings() -> None:
    with pytest.raises(ValueError, match="decay_steps"):
        LRSchedule(1e-4, decay="poly")
    with pytest.raises(ValueError, match="positive"):
        LRSchedule(0.0)
    with pytest.raises(ValueError, match="betas"):
        adamw([], lr=1e-4, weight_decay=0.0, betas=(0.9, 1.0))
