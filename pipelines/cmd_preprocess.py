"""``copgen preprocess``: a cube of aligned real tiles for training or analysis."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pipelines.cmd_options import csv_callback, job_options, load_or_exit
from pipelines.config import PreprocessConfig


@click.command("preprocess")
@job_options
@click.option("--modalities", callback=csv_callback, help="comma-separated image modalities to read.")
@click.option("--latents", help="also encode VAE latents with this model bundle (local cubes): "
              "<output>.latents.safetensors for 'copgen train --latent-cache'.")
def command(config_path: Path | None, beam_args: tuple[str, ...], quiet: bool, **flags: Any) -> None:
    """Read every requested modality on its native grid for every window and acquisition date.

    Exit codes: 0 complete; 1 some windows failed (see the report); 2 bad config or request; 3 the STAC
    API is unavailable.
    """
    from pipelines.jobs import JobError, exit_with, run_preprocess

    cfg = load_or_exit(PreprocessConfig, config_path, flags)
    try:
        report = run_preprocess(cfg, progress=not quiet, beam_args=beam_args)
    except JobError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.code)
    exit_with(report, cfg.report)
