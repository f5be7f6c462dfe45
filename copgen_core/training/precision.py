"""Mixed precision for training: autocast and gradient scaling, active on CUDA only.

``fp32`` trains in float32 everywhere. ``bf16`` and ``fp16`` run the forward pass under
``torch.autocast`` on CUDA (the official backbone trained with fp16 through ``accelerate``); ``fp16``
also scales the loss with a :class:`torch.amp.GradScaler`, whose state is part of the training
state. On the CPU both are no-ops, so a CPU run is always float32 and bitwise reproducible.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> None:
    """Raise ValueError unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {list(PRECISIONS)}")


def is_mixed(device: torch.device, precision: str) -> bool:
    """True when ``precision`` actually changes anything on ``device`` (CUDA with bf16/fp16)."""
    check_precision(precision)
    return device.type == "cuda" and precision != "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for bf16/fp16 on CUDA; a null context otherwise (fp32, or any CPU run)."""
    if not is_mixed(device, precision):
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for fp16 on CUDA (disabled scalers pass gradients through)."""
    enabled = is_mixed(device, precision) and precision == "fp16"
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)
