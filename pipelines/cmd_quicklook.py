"""``copgen quicklook CUBE``: PNGs of a cube (RGB, LULC palette, hillshade, S1, members, mean, spread)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("quicklook")
@click.argument("cube")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="folder for the PNGs (default: <cube>.quicklook next to a local cube, else out/quicklook).")
@click.option("--members", "max_members", type=int, default=8, show_default=True, help="members per sheet.")
def command(cube: str, out_dir: Path | None, max_members: int) -> None:
    """Render every modality of CUBE: ensemble mean, member sheet and spread map per window group."""
    from transforms.quicklook_cube import render_cube

    if out_dir is None:
        out_dir = Path(f"{cube.rstrip('/')}.quicklook") if "://" not in cube else Path("out/quicklook")
    try:
        paths = render_cube(cube, out_dir, max_members=max_members)
    except FileNotFoundError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{len(paths)} quicklook(s) in {out_dir}")
