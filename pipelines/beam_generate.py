"""Beam wiring of ``copgen generate``: read -> RunInference(COP-GEN handler) -> write, with dead letters.

Wiring only: the DoFns call ``transforms.tiles.read_tile``, ``transforms.infer.infer_tiles`` and
``transforms.cube.write_window``. Locally the pipeline runs on Beam's FnApiRunner (offline; the default
DirectRunner first tries to download the Prism binary). For Dataflow, pass
``--runner=DataflowRunner --project=... --region=... --temp_location=gs://... --sdk_container_image=...``
through ``--beam-arg`` (see docs/operations.md); the model is loaded once per SDK worker process.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from pipelines.engines import EngineOptions, beam_options
from transforms import ledger
from transforms.cube import write_window
from transforms.cube_spec import CubeSpec
from transforms.infer import InferSpec, TileResult, get_model, infer_tiles
from transforms.process import generation_provenance
from transforms.raster_read import ReadError
from transforms.tiles import Tile, WorkUnit, read_tile

FAILED_TAG = "failed"


class CopgenModelHandler(ModelHandler[Tile, TileResult, Any]):
    """RunInference handler: one CopgenModel per worker process, batches of tiles -> ensembles.

    Tiles in a batch may have different conditioning signatures; ``infer_tiles`` splits them into
    homogeneous model calls. Results do not depend on batch composition (noise is keyed per tile).
    """

    def __init__(self, spec: InferSpec) -> None:
        super().__init__()
        self.spec = spec

    def load_model(self) -> Any:
        return get_model(self.spec)

    def run_inference(self, batch: Sequence[Tile], model: Any,
                      inference_args: dict[str, Any] | None = None) -> Iterable[TileResult]:
        return infer_tiles(batch, self.spec, model)

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"min_batch_size": 1, "max_batch_size": max(1, self.spec.batch_size)}

    def get_metrics_namespace(self) -> str:
        return "copgen"


class ReadTile(beam.DoFn):
    """WorkUnit -> Tile; unreadable windows go to the ``failed`` output with their reason."""

    def __init__(self, modalities: Sequence[str]) -> None:
        self.modalities = list(modalities)
        self.read = Metrics.counter("copgen", "windows_read")

    def process(self, unit: WorkUnit) -> Iterable[Any]:
        try:
            tile = read_tile(unit, self.modalities)
        except ReadError as exc:
            yield beam.pvalue.TaggedOutput(FAILED_TAG, (unit, str(exc)))
            return
        self.read.inc()
        yield tile


class WriteWindow(beam.DoFn):
    """TileResult -> region writes + ledger record (idempotent)."""

    def __init__(self, cube: CubeSpec, spec: InferSpec, model_hash: str) -> None:
        self.cube, self.spec, self.model_hash = cube, spec, model_hash
        self.done = Metrics.counter("copgen", "windows_done")

    def process(self, result: TileResult) -> Iterable[str]:
        write_window(self.cube, result.unit.key, result.unit.time_index, result.outputs,
                     generation_provenance(result, self.spec, self.model_hash))
        self.done.inc()
        yield result.unit.name


class RecordFailure(beam.DoFn):
    """(unit, reason) -> ledger failure record (the dead-letter sink)."""

    def __init__(self, cube: CubeSpec) -> None:
        self.cube = cube
        self.failed = Metrics.counter("copgen", "windows_failed")

    def process(self, item: tuple[WorkUnit, str]) -> Iterable[str]:
        unit, reason = item
        ledger.mark_failed(self.cube.url, unit.key, unit.time_index, reason,
                           storage_options=self.cube.storage_options)
        self.failed.inc()
        yield unit.name


def _inference_failures(failure: Any) -> Iterable[tuple[WorkUnit, str]]:
    """RunInference's dead letter ``(tile or batch of tiles, exception info)`` -> (unit, reason) per tile."""
    element, info = failure[0], failure[1]
    exc = info[1] if isinstance(info, tuple) and len(info) > 1 else info
    reason = f"generation failed: {type(exc).__name__}: {exc}" if isinstance(exc, BaseException) \
        else f"generation failed: {exc}"
    for tile in element if isinstance(element, list | tuple) else [element]:
        yield tile.unit, reason


def build_generate_pipeline(p: beam.Pipeline, units: Sequence[WorkUnit], spec: InferSpec, cube: CubeSpec,
                            model_hash: str) -> None:
    """Attach the generate graph to ``p``."""
    read = (p | "Units" >> beam.Create(list(units))
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadTile(spec.conditions)).with_outputs(FAILED_TAG, main="tiles"))
    results, errors = read.tiles | "Generate" >> RunInference(CopgenModelHandler(spec)).with_exception_handling()
    _ = results | "Write" >> beam.ParDo(WriteWindow(cube, spec, model_hash))
    failed_inference = errors.failed_inferences | "Describe" >> beam.FlatMap(_inference_failures)
    _ = ((read[FAILED_TAG], failed_inference) | "Failures" >> beam.Flatten()
         | "Dead letters" >> beam.ParDo(RecordFailure(cube)))


def run_beam_generate(units: Sequence[WorkUnit], spec: InferSpec, cube: CubeSpec, model_hash: str,
                      options: EngineOptions, extra_args: Iterable[str] = ()) -> dict[str, int]:
    """Run the generate pipeline; returns the Beam counters (windows_read/done/failed)."""
    p = beam.Pipeline(options=beam_options(options, extra_args))
    build_generate_pipeline(p, units, spec, cube, model_hash)
    result = p.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace == "copgen":
            counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + int(c.committed or c.attempted or 0)
    return counters
