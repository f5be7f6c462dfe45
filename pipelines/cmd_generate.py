"""``copgen generate``: ensembles of target modalities from conditions, over a region and date."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pipelines.cmd_options import csv_callback, job_options, load_or_exit
from pipelines.config import GenerateConfig


@click.command("generate")
@job_options
@click.option("--conditions", callback=csv_callback,
              help="comma-separated modalities read from the catalog and fixed (may be empty: '').")
@click.option("--targets", callback=csv_callback, help="comma-separated modalities to generate.")
@click.option("--members", type=int, help="ensemble members per window.")
@click.option("--steps", type=int, help="solver steps (NFE), 50 in the paper.")
@click.option("--guidance", type=float, help="classifier-free guidance weight on the conditions [1: none, as the paper].")
@click.option("--seed", type=int, help="run seed; the noise of (window, member) derives from it.")
@click.option("--model", help="'bundled', a bundle directory, a converted checkpoint, or 'random:tiny'.")
@click.option("--batch-size", type=int, help="samples per model call.")
@click.option("--device", help="'cpu' or 'cuda[:N]' (Dask: cuda tasks request the GPU worker resource).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), help="backbone autocast dtype (GPU).")
def command(config_path: Path | None, beam_args: tuple[str, ...], quiet: bool, **flags: Any) -> None:
    """Generate per-member ensembles into a Zarr cube (any subset of conditions; missing ones marginalised).

    Exit codes: 0 all windows written; 1 some windows failed (see the report); 2 bad config or request
    (nothing written); 3 the STAC API is unavailable.
    """
    from pipelines.jobs import JobError, exit_with, run_generate

    cfg = load_or_exit(GenerateConfig, config_path, flags)
    try:
        report = run_generate(cfg, progress=not quiet, beam_args=beam_args)
    except JobError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.code)
    exit_with(report, cfg.report)
