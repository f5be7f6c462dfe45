"""``copgen seamless``: large-area ensembles without seams (four waves of overlapping windows)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pipelines.cmd_options import csv_callback, job_options, load_or_exit
from pipelines.config import SeamlessConfig


@click.command("seamless")
@job_options
@click.option("--conditions", callback=csv_callback,
              help="comma-separated modalities read from the catalog and fixed (may be empty: '').")
@click.option("--targets", callback=csv_callback, help="comma-separated S2/S1/DEM modalities to generate.")
@click.option("--members", type=int, help="ensemble members (each one a seamless canvas of its own).")
@click.option("--steps", type=int, help="solver steps (NFE).")
@click.option("--seed", type=int, help="run seed; the noise of (window, member) derives from it.")
@click.option("--model", help="'bundled', a bundle directory, a converted checkpoint, or 'random:tiny'.")
@click.option("--batch-size", type=int, help="windows per batch.")
@click.option("--mode", type=click.Choice(["waves", "independent"]),
              help="'waves': inpaint around earlier windows (default); 'independent': feathered blending only.")
@click.option("--feather-m", type=float, help="width in metres of the blend band inside the known pixels.")
@click.option("--resample", type=int, help="RePaint resampling (1 = off).")
def command(config_path: Path | None, beam_args: tuple[str, ...], quiet: bool, **flags: Any) -> None:
    """Generate one seamless canvas per member over the bbox at the start date.

    Windows overlap by --overlap-m (default 480 m, stride 1440 m; 0 < overlap < 960) and run in four waves
    by the parity of their lattice row and column; a later window inpaints around the pixels its
    neighbours already wrote. Output: a georeferenced Zarr canvas (<epsg>/<gsd>m groups).

    Exit codes: 0 all windows written; 1 some windows failed (the run stops after that wave; rerun to
    continue); 2 bad config or request (nothing written); 3 the STAC API is unavailable.
    """
    from pipelines.jobs import JobError, exit_with
    from pipelines.seamless_job import run_seamless

    cfg = load_or_exit(SeamlessConfig, config_path, flags)
    try:
        report = run_seamless(cfg, progress=not quiet, beam_args=beam_args)
    except JobError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.code)
    exit_with(report, cfg.report)
