"""Shared vocabulary of the normalisation modules: modes, the result type, numpy/torch plumbing.

Every transform is written once, in torch float32, because that is the path the official code takes
and the one the golden vectors pin bit for bit. numpy inputs go through ``torch.from_numpy`` (no copy on
the CPU) and come back as numpy; torch inputs stay on their device.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch

Mode = Literal["strict", "official"]
"""``"strict"`` validates input and reports what it changed; ``"official"`` reproduces COP-GEN exactly."""

Array = np.ndarray | torch.Tensor
"""A numpy array or a torch tensor; outputs have the same type as inputs."""

MODES: tuple[str, ...] = ("strict", "official")


class Normalized(NamedTuple):
    """Result of a forward normalisation.

    Attributes
    ----------
    values:
        The normalised array, numpy or torch like the input (float32).
    notes:
        Human-readable notes on what strict mode changed or found (empty in official mode and for
        clean input), e.g. ``"DEM: 123 pixels below 0 m were raised to the floor 5.9e-06 m"``.
    """

    values: Array
    notes: tuple[str, ...]


def check_mode(mode: str) -> None:
    """Raise ValueError unless ``mode`` is ``"strict"`` or ``"official"``."""
    if mode not in MODES:
        raise ValueError(f"unknown normalisation mode {mode!r}; use 'strict' (validates) or 'official' (bit-exact)")


def to_torch(values: object, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, bool]:
    """Return ``(tensor, came_from_numpy)``; numpy/lists are converted (CPU), tensors only cast."""
    if isinstance(values, torch.Tensor):
        return values.to(dtype), False
    arr = np.asarray(values)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"expected a numeric array, got dtype {arr.dtype}; convert the raster to numbers first")
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64, torch.int64: np.int64}[dtype]
    return torch.from_numpy(np.ascontiguousarray(arr.astype(np_dtype, copy=False))), True


def back(tensor: torch.Tensor, as_numpy: bool) -> Array:
    """Convert a result back to numpy when the input was numpy."""
    return tensor.numpy() if as_numpy else tensor


def count(mask: torch.Tensor) -> int:
    """Number of True entries of a boolean tensor."""
    return int(mask.sum().item())


def pct(n: int, total: int) -> str:
    """``"123 pixels (4.5%)"``-style count for notes."""
    share = 100.0 * n / total if total else 0.0
    return f"{n} pixel{'s' if n != 1 else ''} ({share:.3g}%)"
