"""``copgen gapfill``: fill the clouds, shadows and no-data of every S2 L2A acquisition of a period."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pipelines.cmd_options import csv_callback, job_options, load_or_exit
from pipelines.config import GapfillConfig


@click.command("gapfill")
@job_options
@click.option("--conditions", callback=csv_callback,
              help="comma-separated modalities that condition a window when available and complete "
                   "(default: S1, DEM, land cover, L1C, location, date).")
@click.option("--members", type=int, help="ensemble members per window.")
@click.option("--steps", type=int, help="solver steps (NFE).")
@click.option("--seed", type=int, help="run seed; the noise of (window, acquisition, member) derives from it.")
@click.option("--model", help="'bundled', a bundle directory, a converted checkpoint, or 'random:tiny'.")
@click.option("--batch-size", type=int, help="windows per batch and model call.")
@click.option("--since", type=click.Choice(["last"]),
              help="'last': only acquisitions new or updated since the last run (<output>/_runs/state.json).")
@click.option("--dilate-px", type=int, help="grow the SCL cloud mask by this many 10 m pixels.")
@click.option("--resample", type=int, help="RePaint resampling (1 = off).")
@click.option("--prior-dates", type=int,
              help="other acquisitions whose clear pixels form a window's temporal prior (0 = none) [2].")
@click.option("--prior-days", type=float,
              help="the prior's acquisitions may lie this many days outside the period [120].")
@click.option("--prior-start", type=float,
              help="continuous time (0-1] at which sampling starts from the prior; 1 ignores it [0.1].")
def command(config_path: Path | None, beam_args: tuple[str, ...], quiet: bool, **flags: Any) -> None:
    """Gap-fill every Sentinel-2 L2A acquisition of the period over the bbox (one cube per acquisition).

    Observed pixels are kept bit for bit; cloudy, shadowed and no-data pixels are inpainted, absent band
    groups generated, conditioned on every other available modality. --end accepts 'today'. Output:
    <output>/<item id>.zarr (members, statistics, <key>__filled masks) and <output>/_runs/state.json.

    Exit codes: 0 all windows written; 1 some windows failed (see the report); 2 bad config, request or
    state (nothing written); 3 the STAC API is unavailable.
    """
    from pipelines.gapfill_job import run_gapfill
    from pipelines.jobs import JobError, exit_with

    cfg = load_or_exit(GapfillConfig, config_path, flags)
    try:
        report = run_gapfill(cfg, progress=not quiet, beam_args=beam_args)
    except JobError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.code)
    exit_with(report, cfg.report)
