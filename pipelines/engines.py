"""Execution engines: a local loop, Apache Beam and Dask, all running ``transforms.process`` functions.

Wiring only. Every engine receives the same batches of work units and calls the same batch function,
so the written bytes do not depend on the engine or the number of workers. Outcomes are also recorded
in the cube's ledger, which the run report reads, whatever the engine.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from transforms.process import Outcome
from transforms.tiles import WorkUnit

BatchFn = Callable[[Sequence[WorkUnit]], list[Outcome]]


@dataclass(frozen=True)
class EngineOptions:
    """How to execute: engine name, worker processes, Dask scheduler address, GPU resource tagging."""

    engine: str = "local"
    workers: int = 2
    scheduler: str | None = None
    gpu: bool = False
    progress: bool = True


def _progress(total: int, enabled: bool, desc: str):  # noqa: ANN202 - tqdm or a no-op
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="window", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)


def run_local(batches: Sequence[Sequence[WorkUnit]], fn: BatchFn, options: EngineOptions) -> list[Outcome]:
    """Run batches one after the other in this process, with a progress bar."""
    outcomes: list[Outcome] = []
    with _progress(sum(len(b) for b in batches), options.progress, "windows") as bar:
        for batch in batches:
            result = fn(batch)
            outcomes.extend(result)
            bar.update(len(batch))
            bar.set_postfix(failed=sum(o.status == "failed" for o in outcomes))
    return outcomes


def run_dask(batches: Sequence[Sequence[WorkUnit]], fn: BatchFn, options: EngineOptions) -> list[Outcome]:
    """Run batches as tasks on a Dask cluster (a local process cluster unless ``scheduler`` is given).

    Each worker process loads the model once (process-wide cache) and reuses it. With ``gpu``, tasks
    request the ``GPU`` resource through ``client.map(resources=...)`` (annotations on collections are
    dropped by graph optimisation; see docs). A task whose worker dies is retried on another worker by
    the scheduler; region writes are idempotent, so a retry writes the same bytes.
    """
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if options.scheduler:
        client = Client(options.scheduler, set_as_default=False)
    else:
        cluster = LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address="127.0.0.1:0",
                               resources={"GPU": 1} if options.gpu else None)
        client = Client(cluster, set_as_default=False)
    try:
        link = client.dashboard_link
        print(f"dask: scheduler {client.scheduler.address}, dashboard {link}", file=sys.stderr)
        resources = {"GPU": 1} if options.gpu else None
        futures = client.map(fn, list(batches), resources=resources, pure=False, retries=2)
        sizes = {f.key: len(b) for f, b in zip(futures, batches, strict=True)}
        outcomes: list[Outcome] = []
        with _progress(sum(sizes.values()), options.progress, "windows") as bar:
            for fut in as_completed(futures, loop=client.loop):
                outcomes.extend(fut.result())
                bar.update(sizes[fut.key])
        return outcomes
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def beam_options(options: EngineOptions, extra: Iterable[str] = ()) -> Any:
    """Pipeline options for an offline local run (FnApiRunner; never the Prism download)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    args = ["--runner=FnApiRunner"]
    if options.workers > 1:
        args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={options.workers}"]
    return PipelineOptions([*args, *extra])


def run_beam_batches(batches: Sequence[Sequence[WorkUnit]], fn: BatchFn, options: EngineOptions,
                     extra_args: Iterable[str] = ()) -> list[Outcome]:
    """Run batches through a Beam pipeline (``Create -> Reshuffle -> ParDo(batch fn)``).

    Used for the preprocess job; generation uses :func:`pipelines.beam_generate.run_beam_generate`,
    which splits read / RunInference / write. Outcomes come back through the ledger.
    """
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    class BatchDoFn(beam.DoFn):
        def __init__(self, fn: BatchFn) -> None:
            self.fn = fn
            self.done = Metrics.counter("copgen", "windows_done")
            self.failed = Metrics.counter("copgen", "windows_failed")

        def process(self, batch: Sequence[WorkUnit]) -> Iterable[dict[str, Any]]:
            for o in self.fn(batch):
                (self.done if o.status == "done" else self.failed).inc()
                yield o.to_dict()

    with beam.Pipeline(options=beam_options(options, extra_args)) as p:
        _ = (p | "Batches" >> beam.Create([list(b) for b in batches])
             | "Spread" >> beam.Reshuffle()
             | "Process" >> beam.ParDo(BatchDoFn(fn)))
    return []
