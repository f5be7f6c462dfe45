"""``copgen demo``: the whole flow on the embedded default world, offline.

sample world (COGs + STAC items) -> local STAC API (pgstac) -> preprocess (real aligned tiles) ->
generate (ensembles from DEM + land cover + location + date) -> gap-fill (the clouds of that date's S2
L2A acquisition) -> seamless (a 5 x 5-window ensemble of the main area in waves) -> quicklooks.
Prints where everything is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
DEMO_OUTPUTS = ("preprocess", "generate", "gapfill", "seamless", "quicklook")
"""What the demo writes under ``<out>/demo`` (cubes, their reports, quicklooks); a rerun replaces them."""


def _start_api(world: Path, state: Path) -> str:
    cmd = ["bash", str(REPO / "infra" / "local" / "stac-api.sh"), "start", "--load", str(world),
           "--state", str(state), "--owner-pid", str(os.getpid())]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise click.ClickException(f"the local STAC API did not start:\n{proc.stderr.strip()}\n"
                                   "Run `make setup` (it installs PostgreSQL + PostGIS) and retry.")
    env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return env["STAC_API_URL"]


def _stop_api(state: Path) -> None:
    subprocess.run(["bash", str(REPO / "infra" / "local" / "stac-api.sh"), "stop", "--state", str(state)],
                   capture_output=True, stdin=subprocess.DEVNULL)


def _summer_date(dates: list[str]) -> str:
    """The optical acquisition closest to mid-July (green season: the most telling quicklooks)."""
    def distance(d: str) -> int:
        day = date.fromisoformat(d[:10])
        return abs((day - date(day.year, 7, 15)).days)

    return min(dates, key=distance)[:10]


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("out"), show_default=True,
              help="where the world, cubes, reports and quicklooks go.")
@click.option("--preset", type=click.Choice(["default", "small"]), default="default", show_default=True,
              help="sample-world preset.")
@click.option("--model", default="bundled", show_default=True,
              help="'bundled' (the model trained on the sample world), a bundle directory, or 'random:tiny'.")
@click.option("--members", type=int, default=4, show_default=True)
@click.option("--steps", type=int, default=10, show_default=True, help="solver steps (CPU-friendly default).")
@click.option("--engine", type=click.Choice(["local", "beam", "dask"]), default="local", show_default=True)
def command(out_dir: Path, preset: str, model: str, members: int, steps: int, engine: str) -> None:
    """Run the demo end to end and print where its outputs are."""
    from pipelines.config import GapfillConfig, GenerateConfig, PreprocessConfig, SeamlessConfig
    from pipelines.gapfill_job import run_gapfill
    from pipelines.jobs import JobError, run_generate, run_preprocess
    from pipelines.seamless_job import run_seamless
    from sampleworld import generate_world
    from transforms.infer import resolve_model_ref
    from transforms.quicklook_cube import render_cube

    out_dir = out_dir.resolve()
    if model == "bundled":
        try:
            resolve_model_ref("bundled")
        except FileNotFoundError:
            click.echo("warning: no bundled model in models/bundled yet; the demo generates with a RANDOM "
                       "tiny model (outputs are noise). Train it with `make train-bundled`.", err=True)
            model = "random:tiny"
    shared_terramesh = REPO.parent / "shared" / "data" / "real" / "terramesh"
    # every cube of a demo records the URL of that run's private STAC API, whose port is new each run, so its
    # jobs would refuse to resume into a previous run's cubes: the demo's own outputs are made again (same bytes)
    previous = sorted(p for p in (out_dir / "demo").glob("*") if p.name.split(".")[0] in DEMO_OUTPUTS)
    if previous:
        click.echo(f"[0/7] removing the previous demo's outputs in {out_dir / 'demo'}")
        for path in previous:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    click.echo(f"[1/7] sample world ({preset}) -> {out_dir / 'world'}")
    manifest = generate_world(out_dir / "world", preset=preset,
                              terramesh_dir=shared_terramesh if shared_terramesh.is_dir() else None)
    state = out_dir / ".services" / "stac-api"
    click.echo("[2/7] local STAC API (PostgreSQL + pgstac + stac-fastapi)")
    url = _start_api(out_dir / "world", state)
    try:
        bbox = tuple(float(v) for v in manifest.main_area["bbox"])
        when = _summer_date(manifest.dates["sentinel-2-l2a"])
        click.echo(f"      {url}  main area {bbox}, date {when}")
        click.echo("[3/7] preprocess: aligned real tiles of every modality")
        pre = run_preprocess(PreprocessConfig(
            stac_url=url, bbox=bbox, start=when, output=str(out_dir / "demo" / "preprocess.zarr"),
            modalities=["s2l2a_10m", "s2l2a_20m", "s2l2a_60m", "s2l1c_10m", "cloud_mask", "s1", "dem", "lulc"],
            engine=engine), progress=True)
        click.echo("      " + pre.summary().splitlines()[0])
        click.echo(f"[4/7] generate: S2 L2A + S1 ensembles ({members} members, {steps} steps, model {model})")
        gen = run_generate(GenerateConfig(
            stac_url=url, bbox=bbox, start=when, output=str(out_dir / "demo" / "generate.zarr"),
            conditions=["dem", "lulc", "latlon", "date"], targets=["s2l2a_10m", "s1"], members=members,
            steps=steps, model=model, engine=engine), progress=True)
        click.echo("      " + gen.summary().splitlines()[0])
        click.echo(f"[5/7] gap-fill: clouds, shadows and no-data of the {when} S2 L2A acquisition")
        fill = run_gapfill(GapfillConfig(
            stac_url=url, bbox=bbox, start=when, output=str(out_dir / "demo" / "gapfill"), members=members,
            steps=steps, model=model, engine=engine), progress=True)
        click.echo("      " + fill.summary().splitlines()[0])
        click.echo("[6/7] seamless: S2 L2A ensemble over the main area in four waves of overlapping windows")
        seam = run_seamless(SeamlessConfig(
            stac_url=url, bbox=bbox, start=when, output=str(out_dir / "demo" / "seamless.zarr"),
            conditions=["dem", "lulc", "latlon", "date"], targets=["s2l2a_10m"], members=members, steps=steps,
            model=model, engine=engine), progress=True)
        click.echo("      " + seam.summary().splitlines()[0])
    except JobError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        _stop_api(state)
    click.echo("[7/7] quicklooks")
    looks = {}
    for name in ("preprocess", "generate", "seamless"):
        cube = out_dir / "demo" / f"{name}.zarr"
        looks[name] = render_cube(str(cube), out_dir / "demo" / "quicklook" / name)
        for report in (pre, gen, seam):
            if report.output == str(cube):
                report.write(f"{cube}.report.json")
    filled = sorted((out_dir / "demo" / "gapfill").glob("*.zarr"))
    looks["gapfill"] = [p for cube in filled
                        for p in render_cube(str(cube), out_dir / "demo" / "quicklook" / "gapfill" / cube.stem)]
    click.echo("\nDone. Outputs:")
    click.echo(f"  world (COGs + STAC)   {out_dir / 'world'}  ({manifest.n_items} items)")
    click.echo(f"  real tiles cube       {out_dir / 'demo' / 'preprocess.zarr'}")
    click.echo(f"  ensemble cube         {out_dir / 'demo' / 'generate.zarr'}")
    click.echo(f"  gap-filled cubes      {out_dir / 'demo' / 'gapfill'}  ({len(filled)} acquisitions)")
    click.echo(f"  seamless canvas       {out_dir / 'demo' / 'seamless.zarr'}")
    for name, paths in looks.items():
        click.echo(f"  quicklooks ({name:<10}) {out_dir / 'demo' / 'quicklook' / name}  ({len(paths)} PNGs)")
    if not (pre.ok and gen.ok and fill.ok and seam.ok):
        sys.exit(1)
