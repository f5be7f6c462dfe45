"""Job drivers: config -> search -> plan -> cube template -> engine -> finalise -> run report.

Everything that decides the output bytes is fixed here before any engine starts (items, windows, work
units, the cube spec), so all engines receive identical work. Completed windows (from the cube's ledger)
are skipped, which makes a rerun after a crash resume where it stopped.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from copgen_core.modalities import BY_KEY
from pipelines.config import ConfigError, GenerateConfig, JobConfig, PreprocessConfig
from pipelines.engines import EngineOptions, run_beam_batches, run_dask, run_local
from transforms import ledger
from transforms.catalog import CatalogItem
from transforms.cube import create_or_resume, finalize_cube
from transforms.cube_spec import CubeError, CubeSpec
from transforms.infer import InferSpec, get_model, resolve_model_ref
from transforms.process import generate_batch, preprocess_batch
from transforms.search import search_catalog_items
from transforms.select import SelectionRule
from transforms.tiles import WorkUnit, plan_units
from transforms.windows import PlanError, Window, windows_for_bbox

EXECUTION_FIELDS = {"engine", "workers", "scheduler", "report", "storage_options", "batch_size", "retries", "device"}
"""Config fields that change how a job runs, not what it writes (left out of the cube's spec hash)."""


class JobError(RuntimeError):
    """A job could not start (bad request, unavailable catalog); exit code ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class RunReport:
    """The run report (JSON): windows done/failed/skipped with reasons, timings and settings."""

    job: str
    output: str
    planned: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    missing: int = 0
    elapsed_s: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    engine: str = "local"
    counters: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and self.missing == 0

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "output": self.output, "ok": self.ok, "planned": self.planned,
                "done": self.done, "skipped": self.skipped, "failed": self.failed, "missing": self.missing,
                "elapsed_s": round(self.elapsed_s, 3), "stage_seconds": self.stage_seconds,
                "engine": self.engine, "counters": self.counters, "config": self.config}

    def write(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str) + "\n")

    def summary(self) -> str:
        lines = [f"{self.job}: {self.done} window(s) written, {self.skipped} already done, "
                 f"{len(self.failed)} failed, {self.missing} missing of {self.planned} planned "
                 f"in {self.elapsed_s:.1f} s ({self.engine})"]
        for f in self.failed[:20]:
            lines.append(f"  failed {f['window']} t={f['time_index']}: {f['reason']}")
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more in the report")
        return "\n".join(lines)


def _rules(cfg: JobConfig) -> dict[str, SelectionRule]:
    rules = {}
    for collection, sel in cfg.selection.items():
        static = collection in ("cop-dem-glo-30", "cop-dem-glo-90") or collection.startswith("io-lulc")
        rules[collection] = SelectionRule(collection, max_days=sel.max_days, prefer=sel.prefer,
                                          max_cloud=sel.max_cloud, static=static)
    return rules


def _search(cfg: JobConfig, modalities: Sequence[str], rules: dict[str, SelectionRule]) -> list[CatalogItem]:
    """Every item that may feed the request: time-varying collections within max_days of the period."""
    start, end = cfg.period
    items: list[CatalogItem] = []
    collections = sorted({c for k in modalities if (c := BY_KEY[k].collection) is not None})
    for collection in collections:
        rule = rules.get(collection)
        static = collection.startswith(("cop-dem", "io-lulc"))
        pad = timedelta(days=rule.max_days if rule else 30.0)
        dt = None if static else f"{(start - pad).isoformat()}/{(end + pad).isoformat()}"
        for bbox in cfg.bboxes:
            items.extend(search_catalog_items(cfg.stac_url, collections=[collection], bbox=list(bbox),
                                              datetime=dt, retries=cfg.retries))
    items = list({i.id: i for i in items}.values())  # regions may overlap
    return items


def plan_windows(cfg: JobConfig) -> list[Window]:
    """Lattice windows of the union of the job's boxes, sorted by key (raises PlanError)."""
    seen: dict[Any, Window] = {}
    for bbox in cfg.bboxes:
        for win in windows_for_bbox(bbox, overlap_m=cfg.overlap_m):
            seen[win.key] = win
    return [seen[k] for k in sorted(seen)]


def _batches(units: Sequence[WorkUnit], size: int) -> list[list[WorkUnit]]:
    return [list(units[i:i + size]) for i in range(0, len(units), size)]


def _provenance_config(cfg: JobConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.model_dump(mode="json").items() if k not in EXECUTION_FIELDS}


def _finish(report: RunReport, spec: CubeSpec, units: Sequence[WorkUnit], outcomes: list[Any],
            t0: float) -> RunReport:
    """Publish provenance, then count done / failed / missing over the planned units from the ledger."""
    finalize_cube(spec)
    planned = {(u.key, u.time_index) for u in units}
    done = ledger.done_set(spec.url, spec.storage_options) & planned
    failures = ledger.failures(spec.url, spec.storage_options)
    report.failed = [{"window": str(k), "time_index": t, "reason": r}
                     for (k, t), r in sorted(failures.items()) if (k, t) in planned and (k, t) not in done]
    report.done = len(done) - report.skipped
    report.missing = len(planned) - len(done) - len(report.failed)
    stage: dict[str, float] = {}
    for o in outcomes:
        for name, s in o.seconds.items():
            stage[name] = stage.get(name, 0.0) + s
    report.stage_seconds = {k: round(v, 3) for k, v in stage.items()}
    report.elapsed_s = time.perf_counter() - t0
    return report


def _pending(spec: CubeSpec, units: list[WorkUnit]) -> tuple[list[WorkUnit], int]:
    done = ledger.done_set(spec.url, spec.storage_options)
    todo = [u for u in units if (u.key, u.time_index) not in done]
    return todo, len(units) - len(todo)


def plan_generation(cfg: GenerateConfig, check_overlap: Callable[[float], Any] | None = None
                    ) -> tuple[list[Window], str, str, datetime, list[WorkUnit]]:
    """Windows, resolved model reference, model hash, target time and work units of a generation job.

    ``check_overlap`` validates the overlap first (e.g. the seamless job's stricter rule).

    Raises
    ------
    JobError
        Bad bbox/overlap or missing model (code 2), unavailable catalog (code 3).
    """
    from copgen_core.bundle import model_hash

    try:
        if check_overlap is not None:
            check_overlap(cfg.overlap_m)
        windows = plan_windows(cfg)
        model_ref = resolve_model_ref(cfg.model)
    except (PlanError, FileNotFoundError) as exc:
        raise JobError(str(exc)) from exc
    rules = _rules(cfg)
    items = _catalog(cfg, cfg.conditions, rules)
    when = cfg.period[0]
    return windows, model_ref, model_hash(model_ref), when, plan_units(windows, [when], items, cfg.conditions, rules)


def run_generate(cfg: GenerateConfig, *, progress: bool = True, beam_args: Sequence[str] = ()) -> RunReport:
    """Run ``copgen generate``.

    Raises
    ------
    JobError
        Bad request (exit code 2: nothing written) or unavailable catalog (exit code 3).
    """
    t0 = time.perf_counter()
    image_targets = [k for k in cfg.targets if BY_KEY[k].is_image]
    if len(image_targets) != len(cfg.targets):
        raise JobError(f"targets {[k for k in cfg.targets if k not in image_targets]} are scalar modalities; "
                       "the cube stores image modalities only: generate them with the Python API")
    windows, model_ref, mhash, when, units = plan_generation(cfg)
    spec = CubeSpec(url=cfg.output, storage_options=cfg.storage_options or None, modalities=tuple(image_targets),
                    windows=tuple(windows), times=(when,), members=cfg.members, stats=True,
                    attrs={"job": "generate", "config": _provenance_config(cfg), "model_hash": mhash})
    spec = _create(spec)
    infer_spec = InferSpec(model=model_ref, targets=tuple(image_targets), conditions=tuple(cfg.conditions),
                           members=cfg.members, steps=cfg.steps, seed=cfg.seed, batch_size=cfg.batch_size,
                           device=cfg.device, dtype=cfg.precision, guidance=cfg.guidance)
    todo, skipped = _pending(spec, units)
    report = RunReport("generate", cfg.output, planned=len(units), skipped=skipped, engine=cfg.engine,
                       config=_provenance_config(cfg))
    options = EngineOptions(cfg.engine, cfg.workers, cfg.scheduler, gpu=cfg.device.startswith("cuda"),
                            progress=progress)
    outcomes: list[Any] = []
    if todo:
        if cfg.engine == "beam":
            from pipelines.beam_generate import run_beam_generate

            report.counters = run_beam_generate(todo, infer_spec, spec, mhash, options, beam_args)
        else:
            fn = functools.partial(generate_batch, spec=infer_spec, cube=spec, model_hash=mhash)
            runner = run_dask if cfg.engine == "dask" else run_local
            outcomes = runner(_batches(todo, cfg.batch_size), fn, options)
    return _finish(report, spec, units, outcomes, t0)


def plan_acquisition_units(cfg: JobConfig, image_mods: Sequence[str]
                           ) -> tuple[list[Window], list[datetime], list[WorkUnit]]:
    """Windows, acquisition days and work units as ``copgen preprocess`` plans them.

    The time axis is the anchor collection's acquisition days in the period (S2 L2A, else L1C, else S1);
    L1C of the same acquisition joins L2A; every other collection follows the job's selection rules.
    Units without an anchor acquisition are left out.

    Raises
    ------
    JobError
        Bad bbox/overlap (code 2) or an unavailable catalog (code 3).
    """
    try:
        windows = plan_windows(cfg)
    except PlanError as exc:
        raise JobError(str(exc)) from exc
    rules = _rules(cfg)
    items = _catalog(cfg, image_mods, rules)
    start, end = cfg.period
    anchor = _anchor_collection(image_mods)
    anchored = [i for i in items if i.collection == anchor and start <= i.datetime <= end]
    days = sorted({datetime(i.datetime.year, i.datetime.month, i.datetime.day, tzinfo=i.datetime.tzinfo)
                   for i in anchored}) or [start]
    if anchor is not None:
        rules.setdefault(anchor, SelectionRule(anchor, max_days=0.999))
        if anchor == "sentinel-2-l2a":  # L1C of the same acquisition
            rules.setdefault("sentinel-2-l1c", SelectionRule("sentinel-2-l1c", max_days=0.999))
    units = [u for u in plan_units(windows, days, items, image_mods, rules)
             if anchor is None or any(BY_KEY[k].collection == anchor for k in dict(u.sources))]
    return windows, days, units


def run_preprocess(cfg: PreprocessConfig, *, progress: bool = True, beam_args: Sequence[str] = ()) -> RunReport:
    """Run ``copgen preprocess``: real tiles of every requested modality at each acquisition date."""
    t0 = time.perf_counter()
    image_mods = [k for k in cfg.modalities if BY_KEY[k].is_image]
    windows, days, units = plan_acquisition_units(cfg, image_mods)
    spec = CubeSpec(url=cfg.output, storage_options=cfg.storage_options or None, modalities=tuple(image_mods),
                    windows=tuple(windows), times=tuple(days), members=None, stats=False,
                    attrs={"job": "preprocess", "config": _provenance_config(cfg)})
    spec = _create(spec)
    todo, skipped = _pending(spec, units)
    report = RunReport("preprocess", cfg.output, planned=len(units), skipped=skipped, engine=cfg.engine,
                       config=_provenance_config(cfg))
    options = EngineOptions(cfg.engine, cfg.workers, cfg.scheduler, progress=progress)
    fn = functools.partial(preprocess_batch, modalities=image_mods, cube=spec)
    runners: dict[str, Callable[..., list[Any]]] = {
        "local": run_local, "dask": run_dask, "beam": functools.partial(run_beam_batches, extra_args=beam_args)}
    runner = runners[cfg.engine]
    outcomes = runner(_batches(todo, 8), fn, options) if todo else []
    report = _finish(report, spec, units, outcomes, t0)
    if cfg.latents and "://" not in cfg.output:
        report.counters["latent_samples"] = encode_cube_latents(cfg.output, image_mods, cfg.latents)
    return report


def encode_cube_latents(url: str, modalities: Sequence[str], model_ref: str) -> int:
    """Encode every complete sample of a preprocess cube with the VAEs of ``model_ref``; returns the count.

    Writes ``<url>.latents.safetensors`` (see ``transforms.dataset.encode_latents``), which
    ``copgen train --latent-cache`` reads instead of running the VAEs every epoch.
    """
    from transforms.dataset import CubeDataset, encode_latents

    model = get_model(InferSpec(model=resolve_model_ref(model_ref), targets=(), conditions=()))
    with_vae = [k for k in modalities if k in model.modalities]
    dataset = CubeDataset(url, with_vae, split="all")
    encode_latents(dataset, {k: model.vae(k) for k in with_vae}, f"{url.rstrip('/')}.latents.safetensors")
    return len(dataset)


def _anchor_collection(modalities: Sequence[str]) -> str | None:
    """The time-varying collection whose acquisition dates become the cube's time axis.

    Sentinel-2 L2A if requested, else L1C, else Sentinel-1; other time-varying collections are matched
    to each anchor date by their selection rules (nearest within max_days). None for static-only jobs.
    """
    wanted = {BY_KEY[k].collection for k in modalities}
    for collection in ("sentinel-2-l2a", "sentinel-2-l1c", "sentinel-1-rtc"):
        if collection in wanted:
            return collection
    return None


def _catalog(cfg: JobConfig, modalities: Sequence[str], rules: dict[str, SelectionRule]) -> list[CatalogItem]:
    from transforms.search import CatalogRequestError, CatalogUnavailableError

    try:
        return _search(cfg, [k for k in modalities if BY_KEY[k].is_image], rules)
    except CatalogUnavailableError as exc:
        raise JobError(str(exc), code=3) from exc
    except CatalogRequestError as exc:
        raise JobError(f"the STAC API refused the search: {exc}") from exc


def _create(spec: CubeSpec) -> CubeSpec:
    """The cube's spec to write with: ``spec``, or the stored one when the cube was started by the same job
    through another STAC API URL (:func:`transforms.cube.create_or_resume`)."""
    try:
        adopted = create_or_resume(spec)
        if adopted is not spec:
            print(f"resuming {spec.url}: started by the same job through another STAC API URL or output path",
                  file=sys.stderr)
        return adopted
    except CubeError as exc:
        raise JobError(str(exc)) from exc


def exit_with(report: RunReport, report_path: str | None) -> None:
    """Write the report, print the summary, exit 0 when complete and 1 when windows failed."""
    path = report_path or f"{report.output.rstrip('/')}.report.json"
    if "://" in path and not path.startswith("file://"):
        path = f"out/{Path(report.output).name}.report.json"
    report.write(path)
    print(report.summary(), file=sys.stderr)
    print(f"report: {path}", file=sys.stderr)
    sys.exit(0 if report.ok else 1)


__all__ = ["ConfigError", "JobError", "RunReport", "exit_with", "run_generate", "run_preprocess"]
