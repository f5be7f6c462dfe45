"""``copgen world``: generate (or reuse) the embedded sample world."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sampleworld import default_terramesh_dir, generate_world
from sampleworld.config import PRESETS
from sampleworld.world import is_current


@click.command("world")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out/world"),
              show_default=True, help="World folder (assets/, stac/, manifest.json).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="default", show_default=True,
              help="'default': 12 cells over UTM zones 31/32, a year of acquisitions; 'small': for tests.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="World seed.")
@click.option("--terramesh", "terramesh_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="TerraMesh folder to register as well "
                                 "[default: ../shared/data/real/terramesh beside the repository, if present].")
@click.option("--no-terramesh", is_flag=True, help="Do not register the TerraMesh patches.")
@click.option("--force", is_flag=True, help="Regenerate even if a matching world is already there.")
def command(out_dir: Path, preset: str, seed: int, terramesh_dir: Path | None, no_terramesh: bool,
            force: bool) -> None:
    """Generate the deterministic synthetic Copernicus world (COGs + STAC) into --out.

    Reuses an existing world when its manifest matches (same preset, seed, generator version and
    TerraMesh input) unless --force. Exits 2 on bad arguments.
    """
    if terramesh_dir is not None and no_terramesh:
        raise click.UsageError("--terramesh and --no-terramesh exclude each other; pass one of them")
    if not no_terramesh and terramesh_dir is None:
        terramesh_dir = default_terramesh_dir()
    if no_terramesh:
        terramesh_dir = None
    try:
        reused = not force and is_current(out_dir, preset=preset, seed=seed, terramesh_dir=terramesh_dir)
        manifest = generate_world(out_dir, preset=preset, seed=seed, terramesh_dir=terramesh_dir, force=force)
    except FileNotFoundError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if reused:
        click.echo("reusing the existing world (same preset, seed and inputs); pass --force to regenerate")
    click.echo(manifest.summary())
    click.echo(f"STAC collections: {Path(manifest.out_dir) / manifest.stac['collections']}")
    click.echo(f"STAC items (ndjson): {Path(manifest.out_dir) / manifest.stac['items']}")
    main = manifest.main_area
    click.echo(f"main area: EPSG:{main['epsg']} bbox {[round(v, 5) for v in main['bbox']]} "
               f"({main['size_m']} m square, cells {', '.join(main['cells'])})")
    if manifest.terramesh:
        click.echo(f"TerraMesh locations: {', '.join(manifest.terramesh['locations'])}")
