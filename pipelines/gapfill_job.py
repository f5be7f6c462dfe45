"""``copgen gapfill`` driver: search -> acquisitions -> state -> one cube per acquisition -> engine -> report.

Wiring only: the per-window logic is in :mod:`transforms.gapfill`. Everything that decides the bytes
(acquisitions, windows, work units, cube specs) is fixed here before any engine starts; finished
windows (the cubes' ledgers) are skipped, so a rerun after a crash resumes, and the run state
(``<output>/_runs/state.json``) lets ``since="last"`` skip acquisitions processed before.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from copgen_core.modalities import BY_KEY
from pipelines.config import GapfillConfig
from pipelines.engines import EngineOptions, run_beam_batches, run_dask, run_local
from pipelines.jobs import JobError, RunReport, _catalog, _finish, _pending, _provenance_config, _rules
from transforms import ledger
from transforms.catalog import CatalogItem, describe_item
from transforms.cube import create_cube, create_or_resume, load_spec
from transforms.cube_spec import CubeError, CubeSpec, SpecMismatchError
from transforms.gapfill import (
    L2A_COLLECTION,
    S2L2A_GROUPS,
    Acquisition,
    GapfillSpec,
    GapfillUnit,
    StateError,
    add_filled_arrays,
    gapfill_batch,
    item_hash,
    plan_gapfill_units,
    read_state,
    record_acquisition,
    select_acquisitions,
    write_state,
)
from transforms.infer import resolve_model_ref
from transforms.windows import PlanError, Window, windows_for_bbox


def _acquisitions(cfg: GapfillConfig, margin_days: float = 0.0) -> list[tuple[Acquisition, CatalogItem]]:
    """The L2A items acquired in the period (widened by ``margin_days`` on both sides) over the bbox,
    sorted by time then id, with their hashes."""
    from transforms.search import CatalogRequestError, CatalogUnavailableError, search_items

    start, end = cfg.period
    start, end = start - timedelta(days=margin_days), end + timedelta(days=margin_days)
    try:
        found = search_items(cfg.stac_url, collections=[L2A_COLLECTION], bbox=list(cfg.bbox),
                             datetime=f"{start.isoformat()}/{end.isoformat()}", retries=cfg.retries)
    except CatalogUnavailableError as exc:
        raise JobError(str(exc), code=3) from exc
    except CatalogRequestError as exc:
        raise JobError(f"the STAC API refused the search: {exc}") from exc
    out = []
    for item in found:
        described = describe_item(item)
        if start <= described.datetime <= end:
            raw = item.to_dict(include_self_link=False, transform_hrefs=False)
            out.append((Acquisition(described.id, described.datetime, item_hash(raw)), described))
    return sorted(out, key=lambda pair: (pair[0].datetime, pair[0].item_id))


def _create(spec: CubeSpec) -> CubeSpec:
    """Create the acquisition's cube and return the spec to write with; an item that changed since its cube was
    made replaces the cube, and a cube the same job started through another STAC API URL is resumed with its
    stored spec (:func:`transforms.cube.create_or_resume`)."""
    try:
        spec = create_or_resume(spec)
    except SpecMismatchError as exc:
        try:
            stored = load_spec(spec.url, spec.storage_options).attrs.get("item_hash")
        except CubeError:
            stored = None
        if stored is None or stored == spec.attrs.get("item_hash"):
            raise JobError(f"{exc} (the gap-fill settings changed since this output was written; use a new "
                           "--output for new settings)") from exc
        create_cube(spec, overwrite=True)
    except CubeError as exc:
        raise JobError(str(exc)) from exc
    add_filled_arrays(spec)
    return spec


def _batches(units: Sequence[GapfillUnit], size: int) -> list[list[GapfillUnit]]:
    return [list(units[i:i + size]) for i in range(0, len(units), size)]


def _mode_counts(spec: CubeSpec, units: Sequence[GapfillUnit]) -> dict[str, int]:
    planned = {(u.key, u.unit.time_index) for u in units}
    counts: dict[str, int] = {}
    for key, record in ledger.done_records(spec.url, spec.storage_options).items():
        if key in planned:
            mode = f"windows_{record['provenance'].get('mode', 'unknown')}"
            counts[mode] = counts.get(mode, 0) + 1
    return counts


def run_gapfill(cfg: GapfillConfig, *, progress: bool = True, beam_args: Sequence[str] = ()) -> RunReport:
    """Run ``copgen gapfill``.

    Raises
    ------
    JobError
        Bad request or unusable state/output (exit code 2: nothing written) or unavailable catalog (3).
    """
    t0 = time.perf_counter()
    try:
        windows = windows_for_bbox(cfg.bbox, overlap_m=cfg.overlap_m)
        model_ref = resolve_model_ref(cfg.model)
    except (PlanError, FileNotFoundError) as exc:
        raise JobError(str(exc)) from exc
    try:
        state = read_state(cfg.output, cfg.storage_options or None)
    except StateError as exc:
        raise JobError(str(exc)) from exc
    from copgen_core.bundle import model_hash

    mhash = model_hash(model_ref)
    rules = _rules(cfg)
    found = _acquisitions(cfg)
    # the temporal prior may come from acquisitions up to prior_days outside the period
    neighbours = ([d for _, d in _acquisitions(cfg, cfg.prior_days)] if cfg.prior_dates > 0 and cfg.prior_days > 0
                  else [d for _, d in found])
    image_conditions = [k for k in cfg.conditions if BY_KEY[k].is_image]
    items = _catalog(cfg, image_conditions, rules) if found and image_conditions else []
    todo, unchanged = select_acquisitions([a for a, _ in found], state, cfg.since)
    described = {a.item_id: d for a, d in found}
    spec = GapfillSpec(model=model_ref, conditions=tuple(cfg.conditions), members=cfg.members, steps=cfg.steps,
                       seed=cfg.seed, batch_size=cfg.batch_size, dilate_px=cfg.dilate_px, resample=cfg.resample,
                       prior_start=cfg.prior_start if cfg.prior_dates > 0 else 1.0)
    config = _provenance_config(cfg)
    plans: list[tuple[Acquisition, CubeSpec | None, list[GapfillUnit]]] = []
    for acq in todo:
        url = acq.cube_url(cfg.output)
        units = plan_gapfill_units(windows, described[acq.item_id], items, cfg.conditions, rules, url,
                                   others=neighbours, prior_dates=cfg.prior_dates)
        if not units:
            plans.append((acq, None, []))
            continue
        wins: list[Window] = sorted({u.unit.window for u in units}, key=lambda w: w.key)
        spec_of_acq = CubeSpec(url=url, storage_options=cfg.storage_options or None, modalities=S2L2A_GROUPS,
                               windows=tuple(wins), times=(acq.datetime,), members=cfg.members, stats=True,
                               attrs={"job": "gapfill", "acquisition": acq.item_id, "item_hash": acq.item_hash,
                                      "config": config, "model_hash": mhash})
        spec_of_acq = _create(spec_of_acq)
        plans.append((acq, spec_of_acq, units))

    report = RunReport("gapfill", cfg.output, engine=cfg.engine, config=config)
    pending: list[GapfillUnit] = []
    for _, cube, units in plans:
        if cube is not None:
            todo_units, skipped = _pending(cube, units)  # type: ignore[arg-type]
            pending.extend(todo_units)  # type: ignore[arg-type]
            report.skipped += skipped
    outcomes: list[Any] = []
    if pending:
        cubes = {cube.url: cube for _, cube, _ in plans if cube is not None}
        fn = functools.partial(gapfill_batch, spec=spec, cubes=cubes, model_hash=mhash,
                               item_hashes={a.item_id: a.item_hash for a in todo})
        options = EngineOptions(cfg.engine, cfg.workers, cfg.scheduler, progress=progress)
        runner = {"dask": run_dask, "beam": functools.partial(run_beam_batches, extra_args=beam_args)}.get(
            cfg.engine, run_local)
        outcomes = runner(_batches(pending, cfg.batch_size), fn, options)  # type: ignore[arg-type, operator]

    counters = {"acquisitions_found": len(found), "acquisitions_processed": len(todo),
                "acquisitions_unchanged": len(unchanged), "acquisitions_complete": 0}
    for acq, cube, units in plans:
        if cube is None:
            record_acquisition(state, acq, None, 0)
            counters["acquisitions_complete"] += 1
            continue
        part = RunReport("gapfill", cube.url)
        part.skipped = len(units) - sum(1 for u in pending if u.cube_url == cube.url)
        _finish(part, cube, units, [], t0)  # type: ignore[arg-type]
        report.planned += len(units)
        report.failed.extend({**f, "acquisition": acq.item_id} for f in part.failed)
        report.missing += part.missing
        for name, n in _mode_counts(cube, units).items():
            counters[name] = counters.get(name, 0) + n
        if part.ok:
            record_acquisition(state, acq, cube.url, len(units))
            counters["acquisitions_complete"] += 1
    report.done = report.planned - report.skipped - len(report.failed) - report.missing
    state["last_run"] = {"finished_utc": datetime.now(UTC).isoformat(timespec="seconds"), "ok": report.ok,
                         "since": cfg.since, "period": [d.isoformat() for d in cfg.period],
                         "processed": [a.item_id for a in todo]}
    write_state(cfg.output, state, cfg.storage_options or None)
    report.counters = counters
    stage: dict[str, float] = {}
    for o in outcomes:
        for name, s in o.seconds.items():
            stage[name] = stage.get(name, 0.0) + s
    report.stage_seconds = {k: round(v, 3) for k, v in stage.items()}
    report.elapsed_s = time.perf_counter() - t0
    return report


__all__ = ["run_gapfill"]
