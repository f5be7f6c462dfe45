"""``copgen seamless`` driver: search -> plan -> canvas -> four waves through the engine -> report.

Wiring only: the per-window logic is in :mod:`transforms.seamless`. The waves run one after the other,
each as one engine run over batches of its windows (a Dask run keeps one cluster for all four). A wave
with a failed window stops the run (exit 1) before the next wave, so later windows never build on a
hole; a rerun skips finished windows (the canvas' ledger) and carries on with the same bytes.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pipelines.config import SeamlessConfig
from pipelines.engines import EngineOptions, run_beam_batches, run_dask, run_local
from pipelines.jobs import JobError, RunReport, _provenance_config, plan_generation
from transforms import ledger
from transforms.seamless import (
    CanvasError,
    CanvasSpec,
    SeamlessSpec,
    check_seamless_stride,
    create_canvas,
    seamless_batch,
    wave_of,
    wave_schedule,
)
from transforms.tiles import WorkUnit


@contextlib.contextmanager
def _engine(cfg: SeamlessConfig, progress: bool) -> Iterator[EngineOptions]:
    """Engine options for all waves; a local Dask cluster is started once and shared by the waves."""
    if cfg.engine != "dask" or cfg.scheduler:
        yield EngineOptions(cfg.engine, cfg.workers, cfg.scheduler, progress=progress)
        return
    from dask.distributed import LocalCluster

    cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0")
    try:
        yield EngineOptions("dask", cfg.workers, cluster.scheduler_address, progress=progress)
    finally:
        cluster.close()


def run_seamless(cfg: SeamlessConfig, *, progress: bool = True, beam_args: Sequence[str] = ()) -> RunReport:
    """Run ``copgen seamless``.

    Raises
    ------
    JobError
        Bad request or output (exit code 2: nothing written) or unavailable catalog (3).
    """
    t0 = time.perf_counter()
    windows, model_ref, mhash, when, units = plan_generation(cfg, check_seamless_stride)
    config = _provenance_config(cfg)
    so = cfg.storage_options or None
    try:
        canvas = CanvasSpec(url=cfg.output, storage_options=so, modalities=tuple(cfg.targets), windows=tuple(windows),
                            members=cfg.members, time=when, attrs={"job": "seamless", "config": config,
                                                                   "model_hash": mhash})
        create_canvas(canvas)
    except CanvasError as exc:
        raise JobError(str(exc)) from exc
    spec = SeamlessSpec(model=model_ref, targets=tuple(cfg.targets), conditions=tuple(cfg.conditions),
                        members=cfg.members, steps=cfg.steps, seed=cfg.seed, batch_size=cfg.batch_size, mode=cfg.mode,
                        feather_m=cfg.feather_m, resample=cfg.resample)
    report = RunReport("seamless", cfg.output, planned=len(units), engine=cfg.engine, config=config)
    fn = functools.partial(seamless_batch, spec=spec, canvas=canvas, model_hash=mhash)
    by_wave: list[list[WorkUnit]] = [[u for u in units if wave_of(u.key) == i] for i in range(len(wave_schedule(windows)))]
    outcomes: list[Any] = []
    counters: dict[str, int] = {}
    with _engine(cfg, progress) as options:
        runner = {"dask": run_dask, "beam": functools.partial(run_beam_batches, extra_args=beam_args)}.get(
            cfg.engine, run_local)
        for wave, wave_units in enumerate(by_wave):
            done = ledger.done_set(canvas.url, so)
            todo = [u for u in wave_units if (u.key, 0) not in done]
            report.skipped += len(wave_units) - len(todo)
            counters[f"wave{wave}_windows"] = len(wave_units)
            if todo:
                batches = [todo[i:i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
                outcomes.extend(runner(batches, fn, options))  # type: ignore[operator]
            done = ledger.done_set(canvas.url, so)
            if any((u.key, 0) not in done for u in wave_units):
                counters["stopped_after_wave"] = wave
                break
    planned = {(u.key, 0) for u in units}
    done = ledger.done_set(canvas.url, so) & planned
    failures = ledger.failures(canvas.url, so)
    report.failed = [{"window": str(k), "time_index": t, "reason": r}
                     for (k, t), r in sorted(failures.items()) if (k, t) in planned and (k, t) not in done]
    report.done = len(done) - report.skipped
    report.missing = len(planned) - len(done) - len(report.failed)
    report.counters = counters
    stage: dict[str, float] = {}
    for o in outcomes:
        for name, s in o.seconds.items():
            stage[name] = stage.get(name, 0.0) + s
    report.stage_seconds = {k: round(v, 3) for k, v in stage.items()}
    report.elapsed_s = time.perf_counter() - t0
    return report


__all__ = ["run_seamless"]
