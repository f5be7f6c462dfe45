"""Training-state files: atomic writes, safe loading, RNG capture."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from copgen_core.training.state import (
    StateError,
    capture_rng,
    check_config,
    load_state,
    restore_rng,
    save_state,
)


def _draws() -> tuple[float, float, float]:
    return float(torch.rand(())), float(np.random.rand()), random.random()


def test_restored_rng_states_repeat_the_same_draws(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # a cached gaussian must round-trip too
    save_state(tmp_path / "s.pt", {"rng": capture_rng()})
    first = _draws()
    restore_rng(load_state(tmp_path / "s.pt")["rng"])
    assert _draws() == first


def test_failed_save_keeps_the_previous_state_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "train_state.pt"
    save_state(path, {"step": 1})
    with pytest.raises(Exception):  # noqa: B017 - any pickling error
        save_state(path, {"step": 2, "bad": lambda: None})
    assert load_state(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state.pt"]


def test_load_state_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="without --resume"):
        load_state(tmp_path / "none.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(StateError, match="not a copgen training state"):
        load_state(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(StateError, match="not a readable training state"):
        load_state(tmp_path / "junk.pt")


def test_check_config_names_every_difference() -> None:
    check_config({"lr": 1e-4}, {"lr": 1e-4}, what="config")
    with pytest.raises(StateError, match=r"lr: saved 0.0001, now 0.0002; seed: saved 0, now None"):
        check_config({"lr": 1e-4, "seed": 0}, {"lr": 2e-4}, what="config")
