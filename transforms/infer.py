"""The infer step: tiles -> ensembles, batched by conditioning signature, one model per worker process.

The model is loaded once per process (:func:`get_model`, a process-wide cache keyed by the model
reference and device settings) and reused for every batch. Tiles whose available conditions differ
cannot share a model call; :func:`group_by_signature` packs them into homogeneous batches. A condition
with missing pixels is not used (the model takes whole modalities) and the result says so.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from copgen_core.modalities import BY_KEY, Kind
from transforms.tiles import Tile, WorkUnit


@dataclass(frozen=True)
class InferSpec:
    """Everything that decides the generated numbers (part of the cube's provenance)."""

    model: str
    targets: tuple[str, ...]
    conditions: tuple[str, ...]
    members: int = 4
    steps: int = 50
    seed: int = 0
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "fp32"
    order: int = 3
    method: str = "singlestep"
    spacing: str = "time_uniform"
    threads: int = 1
    guidance: float = 1.0

    def settings(self) -> dict[str, Any]:
        return {"model": self.model, "members": self.members, "steps": self.steps, "seed": self.seed,
                "order": self.order, "method": self.method, "spacing": self.spacing, "dtype": self.dtype,
                "threads": self.threads, "guidance": self.guidance}


@dataclass
class TileResult:
    """Generated ensembles of one tile.

    ``outputs`` maps target key -> ``(members, C, H, W)`` in physical units (scalar targets:
    ``(members, 2)`` lat/lon or ``(members, 3)`` [day, month, year]).
    """

    unit: WorkUnit
    outputs: dict[str, np.ndarray]
    conditions_used: tuple[str, ...]
    item_ids: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str, str], Any] = {}


def get_model(spec: InferSpec) -> Any:
    """The process-wide :class:`copgen_core.generate.CopgenModel` for ``spec`` (loaded on first use).

    Also pins torch's intra-op threads to ``spec.threads`` (1 by default): CPU kernels reduce in a
    thread-count-dependent order, so equal thread counts are what makes a local run, Beam workers and
    Dask workers write the same bytes. Scale out with worker processes instead.
    """
    import torch

    if torch.get_num_threads() != spec.threads:
        torch.set_num_threads(spec.threads)
    cache_key = (spec.model, spec.device, spec.dtype)
    with _LOCK:
        model = _MODELS.get(cache_key)
        if model is None:
            from copgen_core.bundle import load_model

            model = load_model(resolve_model_ref(spec.model), device=spec.device, dtype=spec.dtype)
            _MODELS[cache_key] = model
        return model


def resolve_model_ref(ref: str) -> str:
    """``"bundled"`` -> the model shipped in the repository (``models/bundled``); other refs unchanged."""
    if ref != "bundled":
        return ref
    from pathlib import Path

    bundled = Path(__file__).resolve().parents[1] / "models" / "bundled"
    if (bundled / "bundle.json").is_file():
        return str(bundled)
    raise FileNotFoundError(
        f"the bundled model is not in {bundled}; train it (see docs/model-card.md) or pass --model "
        "with a bundle directory, a converted checkpoint, or 'random:tiny' for a smoke run"
    )


def usable_conditions(tile: Tile, wanted: Sequence[str]) -> tuple[str, ...]:
    """The wanted conditions that the tile holds completely (no missing pixel), in canonical order."""
    keys = [k for k in wanted if k in tile.arrays and tile.complete(k)]
    return tuple(k for k in BY_KEY if k in keys)


def group_by_signature(tiles: Sequence[Tile], wanted: Sequence[str]) -> dict[tuple[str, ...], list[Tile]]:
    """Tiles grouped by the exact set of conditions they can provide (stable order within groups)."""
    groups: dict[tuple[str, ...], list[Tile]] = {}
    for tile in tiles:
        groups.setdefault(usable_conditions(tile, wanted), []).append(tile)
    return groups


def _stack(tiles: Sequence[Tile], key: str) -> np.ndarray:
    mod = BY_KEY[key]
    arrays = [t.arrays[key] for t in tiles]
    if mod.kind in (Kind.LULC, Kind.CLOUD):
        return np.stack([np.nan_to_num(a).astype(np.int64) for a in arrays])
    return np.stack(arrays)


def infer_tiles(tiles: Sequence[Tile], spec: InferSpec, model: Any | None = None) -> list[TileResult]:
    """Generate ``spec.targets`` for every tile, ``spec.members`` times, in as few model calls as possible.

    The noise of (tile, member) derives from (seed, tile name, member), so results do not depend on how
    tiles are batched or which worker runs them.

    Raises
    ------
    ValueError
        From the model, on invalid condition values (out of range, wrong shape); the pipeline reports the
        batch's windows as failed with that message.
    """
    model = model if model is not None else get_model(spec)
    results: list[TileResult] = []
    for signature, group in group_by_signature(tiles, spec.conditions).items():
        conditions = {k: _stack(group, k) for k in signature}
        out = model.generate(
            conditions, list(spec.targets), members=spec.members, steps=spec.steps, seed=spec.seed,
            keys=[t.unit.name for t in group], batch_size=spec.batch_size, order=spec.order,
            method=spec.method, spacing=spec.spacing, guidance=spec.guidance,
        )
        dropped = tuple(k for k in spec.conditions if k not in signature)
        notes = tuple(out.notes) + ((f"conditions not available (missing or incomplete): {list(dropped)}",)
                                    if dropped else ())
        for i, tile in enumerate(group):
            results.append(TileResult(
                unit=tile.unit,
                outputs={k: np.asarray(v[i]) for k, v in out.outputs.items()},
                conditions_used=signature,
                item_ids={k: tile.item_ids[k] for k in signature if k in tile.item_ids},
                notes=notes,
            ))
    order = {id(t.unit): n for n, t in enumerate(tiles)}
    results.sort(key=lambda r: order[id(r.unit)])
    return results
