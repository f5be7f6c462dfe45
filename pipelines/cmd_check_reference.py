"""``copgen check-reference DIR``: compare this implementation with official golden vectors."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from copgen_core.refcheck import SECTIONS, run_all


@click.command("check-reference")
@click.argument("ref_dir", type=click.Path(path_type=Path))
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(SECTIONS),
    help="Run only these sections (repeatable). Default: every section present in REF_DIR.",
)
def command(ref_dir: Path, only: tuple[str, ...]) -> None:
    """Run every golden comparison under REF_DIR (layout of shared/reference/copgen/).

    Prints one line per check with the worst error and its tolerance, then a summary. Exits 1 when
    any check is beyond tolerance, 2 when REF_DIR is not a reference directory.
    """
    if not ref_dir.is_dir():
        click.echo(f"error: {ref_dir} is not a directory; pass the reference folder, "
                   "e.g. ../shared/reference/copgen", err=True)
        sys.exit(2)
    try:
        results = run_all(ref_dir, tuple(only) or SECTIONS)
    except FileNotFoundError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    for r in results:
        click.echo(r.line())
    failed = [r for r in results if not r.ok]
    worst: dict[str, float] = {}
    for r in results:
        worst[r.section] = max(worst.get(r.section, 0.0), r.worst)
    summary = ", ".join(f"{s} worst {w:.2e}" for s, w in worst.items())
    click.echo(f"{len(results) - len(failed)}/{len(results)} checks passed ({summary})")
    if failed:
        sys.exit(1)
