"""Training-state files for exact resume, and the global RNG states that go in them.

A state file is one ``torch.save`` dict (model, EMA, optimiser, scaler, step, data position, RNG
states, config, loss history) written atomically: a temporary file in the same folder, fsync, then
``os.replace``. A crash or SIGKILL while saving leaves the previous state intact, never a torn one.
Files are read back with ``torch.load(weights_only=True)``: tensors and plain containers only, so
every value put in a state must be one of those (RNG states are converted below).
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FORMAT_VERSION = 1


class StateError(ValueError):
    """A training state cannot be used to resume this run; the message says why."""


def capture_rng() -> dict[str, Any]:
    """The global RNG states of torch (CPU and every CUDA device), numpy and Python ``random``.

    Returns
    -------
    dict
        Plain types and tensors only (safe for ``weights_only`` loading).
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    version, internal, gauss_next = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: Mapping[str, Any]) -> None:
    """Restore :func:`capture_rng` output (CUDA states only where devices are present)."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])[: torch.cuda.device_count()]
        for index, cuda_state in enumerate(cuda_states):
            torch.cuda.set_rng_state(cuda_state, index)


def save_state(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write a training state atomically (temp file, fsync, ``os.replace``); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format_version": STATE_FORMAT_VERSION, **dict(state)}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training state written by :func:`save_state` (onto the CPU).

    Raises
    ------
    FileNotFoundError
        If there is no state at ``path``.
    StateError
        If the file is not a training state of this format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}; start a new run (without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for damaged or foreign files
        raise StateError(f"{path} is not a readable training state ({type(exc).__name__}: {exc}); "
                         "delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format_version") != STATE_FORMAT_VERSION:
        raise StateError(f"{path} is not a copgen training state of format {STATE_FORMAT_VERSION}; "
                         "resume it with the release that wrote it, or start over")
    return state


def check_config(saved: Mapping[str, Any], current: Mapping[str, Any], *, what: str) -> None:
    """Refuse to resume when the saved and current configs differ.

    Raises
    ------
    StateError
        Naming every differing field with both values.
    """
    keys = sorted(set(saved) | set(current))
    diff = [f"{k}: saved {saved.get(k)!r}, now {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
    if diff:
        raise StateError(f"the saved {what} differs from this run's ({'; '.join(diff)}); resume with the same "
                         "settings, or start a new run in another --out directory")
