"""One batch of work units end to end: read -> infer -> write, with per-window outcomes.

Engines call these functions and nothing else, so a local loop, a Beam pipeline and a Dask cluster run
the same code on the same units and write the same bytes. A failing window (missing or corrupt source,
invalid values) is recorded as failed with its reason in the ledger and the outcome; the others go on.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from copgen_core.modalities import BY_KEY, Kind
from transforms import ledger
from transforms.cube import write_window
from transforms.cube_spec import UINT8_FILL, CubeSpec
from transforms.infer import InferSpec, TileResult, infer_tiles
from transforms.raster_read import ReadError
from transforms.tiles import Tile, WorkUnit, read_tile

Status = Literal["done", "failed", "skipped"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one (window, time)."""

    name: str
    window: str
    time_index: int
    status: Status
    reason: str = ""
    seconds: dict[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "window": self.window, "time_index": self.time_index,
                "status": self.status, "reason": self.reason, "seconds": self.seconds}


def _failed(cube: CubeSpec, unit: WorkUnit, reason: str, seconds: dict[str, float]) -> Outcome:
    ledger.mark_failed(cube.url, unit.key, unit.time_index, reason, storage_options=cube.storage_options)
    return Outcome(unit.name, str(unit.key), unit.time_index, "failed", reason, seconds)


def read_units(units: Sequence[WorkUnit], modalities: Sequence[str]) -> tuple[list[Tile], list[tuple[WorkUnit, str]]]:
    """Read every unit; returns (tiles, [(unit, reason)] for the ones that could not be read)."""
    tiles: list[Tile] = []
    bad: list[tuple[WorkUnit, str]] = []
    for unit in units:
        try:
            tiles.append(read_tile(unit, modalities))
        except ReadError as exc:
            bad.append((unit, str(exc)))
    return tiles, bad


def generation_provenance(result: TileResult, spec: InferSpec, model_hash: str) -> dict[str, Any]:
    """The provenance record of one generated window (goes to the ledger and the cube)."""
    srcs = {k: [s.item_id for ch in chans for s in ch] for k, chans in result.unit.sources}
    return {
        "window": str(result.unit.key), "time": result.unit.time.isoformat(),
        "source_items": {k: list(dict.fromkeys(v)) for k, v in srcs.items()},
        "items_used": {k: list(v) for k, v in result.item_ids.items()},
        "conditioning": list(result.conditions_used), "targets": list(spec.targets),
        "seed": spec.seed, "sample_key": result.unit.name, "model_hash": model_hash,
        "sampler": spec.settings(), "notes": list(result.notes),
    }


def generate_batch(units: Sequence[WorkUnit], spec: InferSpec, cube: CubeSpec, model_hash: str,
                   model: Any | None = None) -> list[Outcome]:
    """Read, generate and write one batch of units; one :class:`Outcome` per unit."""
    t0 = time.perf_counter()
    read_mods = [k for k in spec.conditions]
    tiles, bad = read_units(units, read_mods)
    t_read = time.perf_counter() - t0
    outcomes = [_failed(cube, u, reason, {"read": t_read}) for u, reason in bad]
    if not tiles:
        return outcomes
    t1 = time.perf_counter()
    try:
        results = infer_tiles(tiles, spec, model)
    except ValueError as exc:
        return outcomes + [_failed(cube, t.unit, f"generation refused the inputs: {exc}", {"read": t_read})
                           for t in tiles]
    t_infer = time.perf_counter() - t1
    for r in results:
        t2 = time.perf_counter()
        try:
            write_window(cube, r.unit.key, r.unit.time_index, r.outputs,
                         generation_provenance(r, spec, model_hash))
        except Exception as exc:  # a write failure must not lose the other windows of the batch
            outcomes.append(_failed(cube, r.unit, f"write failed: {type(exc).__name__}: {exc}",
                                    {"read": t_read, "infer": t_infer}))
            continue
        n = len(results)
        outcomes.append(Outcome(r.unit.name, str(r.unit.key), r.unit.time_index, "done", "",
                                {"read": t_read / n, "infer": t_infer / n, "write": time.perf_counter() - t2}))
    return outcomes


def _storable(key: str, values: np.ndarray) -> np.ndarray:
    """Categorical tiles hold codes as float with NaN for no data: store them as uint8, no data = 255."""
    if BY_KEY[key].kind in (Kind.LULC, Kind.CLOUD):
        return np.where(np.isfinite(values), values, UINT8_FILL).astype(np.uint8)
    return values


def preprocess_batch(units: Sequence[WorkUnit], modalities: Sequence[str], cube: CubeSpec) -> list[Outcome]:
    """Read real tiles and write them as they are (no model): the dataset-preprocessing workload."""
    outcomes: list[Outcome] = []
    for unit in units:
        t0 = time.perf_counter()
        try:
            tile = read_tile(unit, modalities)
        except ReadError as exc:
            outcomes.append(_failed(cube, unit, str(exc), {}))
            continue
        t_read = time.perf_counter() - t0
        arrays = {k: _storable(k, v) for k, v in tile.arrays.items() if k in cube.modalities}
        if not arrays:
            outcomes.append(_failed(cube, unit, "no source covers this window for any requested modality",
                                    {"read": t_read}))
            continue
        prov = {"window": str(unit.key), "time": unit.time.isoformat(),
                "source_items": {k: list(v) for k, v in tile.item_ids.items()},
                "valid_fraction": {k: float(np.mean(v)) for k, v in tile.valid.items()},
                "missing": [k for k in cube.modalities if k not in arrays]}
        try:
            write_window(cube, unit.key, unit.time_index, arrays, prov)
        except Exception as exc:
            outcomes.append(_failed(cube, unit, f"write failed: {type(exc).__name__}: {exc}", {"read": t_read}))
            continue
        outcomes.append(Outcome(unit.name, str(unit.key), unit.time_index, "done", "",
                                {"read": t_read, "write": time.perf_counter() - t0 - t_read}))
    return outcomes


def crash_reason(exc: BaseException) -> str:
    """One line for a report, with the innermost frame (for unexpected errors)."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"
