"""Click options shared by the job commands; every flag overrides the same-named config field."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pipelines.config import ConfigError, load_config


def _bbox(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not four comma-separated numbers: west,south,east,north") from None
    if len(parts) != 4:
        raise click.BadParameter(f"{value!r} has {len(parts)} numbers; give west,south,east,north in degrees")
    return parts


def _csv(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def job_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options common to every job (catalog, region, period, output, engine)."""
    opts = [
        click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
                     help="YAML job config; flags override its fields."),
        click.option("--stac-url", help="STAC API root, e.g. http://127.0.0.1:8081."),
        click.option("--bbox", callback=_bbox, help="west,south,east,north in degrees (WGS84)."),
        click.option("--start", help="first date, YYYY-MM-DD (UTC)."),
        click.option("--end", help="last date, YYYY-MM-DD (UTC); default: start."),
        click.option("--output", help="cube URL: a local path or gs://bucket/path.zarr."),
        click.option("--overlap-m", type=float, help="window overlap in metres (stride must be a multiple of 60)."),
        click.option("--engine", type=click.Choice(["local", "beam", "dask"]), help="execution engine."),
        click.option("--workers", type=int, help="worker processes for local Beam/Dask runs."),
        click.option("--scheduler", help="Dask scheduler address (default: a local cluster)."),
        click.option("--report", help="run report JSON path (default: <output>.report.json)."),
        click.option("--beam-arg", "beam_args", multiple=True,
                     help="extra Beam pipeline option, repeatable (e.g. --beam-arg=--runner=DataflowRunner)."),
        click.option("--quiet", is_flag=True, help="no progress bar."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def load_or_exit(cls: type, config_path: Path | None, overrides: dict[str, Any]) -> Any:
    """Validated config, or exit code 2 with every problem listed (nothing is written)."""
    try:
        return load_config(cls, config_path, overrides)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


csv_callback = _csv
