"""``copgen stac``: serve a sample world through a local STAC API, and search STAC APIs.

* ``copgen stac serve --world DIR`` starts PostgreSQL + pgstac + stac-fastapi (``infra/local/stac-api.sh``)
  loaded with ``DIR/stac``, prints ``STAC_API_URL=...`` and stays up until Ctrl-C or ``copgen stac stop``
  (``--detach`` returns at once and leaves it running).
* ``copgen stac load --world DIR`` upserts another world (or a grown one) into the running API.
* ``copgen stac stop`` stops it; ``copgen stac status`` says whether it runs.
* ``copgen stac search --url URL --collections ... [--bbox] [--datetime] [--filter]`` prints a table.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

STAC_API_SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "local" / "stac-api.sh"


def _parse_env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            env[key] = value
    return env


def _run_script(*args: str, state: Path | None) -> tuple[int, dict[str, str]]:
    """Run stac-api.sh; its stderr goes straight to the user. Returns (exit code, printed env)."""
    if not STAC_API_SCRIPT.is_file():
        raise click.ClickException(
            f"{STAC_API_SCRIPT} not found: 'copgen stac' runs services from a source checkout of copgen "
            "(pip install -e .), not from an installed wheel."
        )
    cmd = ["bash", str(STAC_API_SCRIPT), *args]
    if state is not None:
        cmd += ["--state", str(state)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    return proc.returncode, _parse_env(proc.stdout)


def _exit_on_failure(rc: int, what: str) -> None:
    if rc != 0:
        click.echo(f"copgen stac: {what} failed (see the messages above)", err=True)
        sys.exit(rc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_state_lock(state: Path, timeout_s: float = 60.0) -> bool:
    """Wait until no start/load/stop of the script holds the state directory's lock.

    Returns False (after ``timeout_s`` seconds) when something still holds it, so a foreground
    ``serve`` never hangs on a lock a stray process kept; True once the lock was free (or gone).
    """
    try:
        fd = os.open(state / ".lock", os.O_RDONLY)
    except FileNotFoundError:
        return True
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.1)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
    finally:
        os.close(fd)


_state_option = click.option(
    "--state", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="State directory of the API (default: $COPGEN_STATE/stac-api, else <repo>/.services/stac-api).",
)
_world_option = click.option(
    "--world", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A sample world directory (holding stac/collections/*.json and stac/items/*.ndjson).",
)


@click.group(name="stac")
def command() -> None:
    """Run a local STAC API over a sample world, and search STAC APIs."""


@command.command()
@_world_option
@_state_option
@click.option("--detach", is_flag=True, help="Start, print the URL and return; stop with 'copgen stac stop'.")
def serve(world: Path, state: Path | None, detach: bool) -> None:
    """Start a local STAC API loaded with WORLD and print STAC_API_URL.

    Stays in the foreground until Ctrl-C (which stops the API) or 'copgen stac stop'. Starting it
    again while it runs loads WORLD again and prints the same URL.
    """
    if not detach:
        # Python leaves SIGINT ignored when it starts with it ignored, as every '&' job of a
        # non-interactive shell (nohup scripts, CI runners) does; Ctrl-C / SIGINT must stop the API
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        rc, env = _run_script("start", "--load", str(world), state=state)
        _exit_on_failure(rc, "starting the STAC API")
        click.echo(f"STAC_API_URL={env['STAC_API_URL']}")
        if detach:
            return
        click.echo("Serving; press Ctrl-C to stop (or run 'copgen stac stop').", err=True)
        api_pid = int(env["STAC_API_PID"])
        env_file = Path(env["STAC_API_STATE"]) / "env"
        while env_file.exists() and _pid_alive(api_pid):
            time.sleep(1.0)
    except KeyboardInterrupt:
        click.echo("Stopping the STAC API.", err=True)
        rc, _ = _run_script("stop", state=state)
        _exit_on_failure(rc, "stopping the STAC API")
        return
    if not _wait_for_state_lock(env_file.parent):  # a 'copgen stac stop' elsewhere may still be stopping it
        click.echo(f"copgen stac: {env_file.parent / '.lock'} is still held after 60 s; not waiting for it",
                   err=True)
    if env_file.exists():  # the server died on its own: show its log, clean up
        log = env_file.parent / "api.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else "(no log)"
        _run_script("stop", state=state)
        raise click.ClickException(f"the STAC API exited unexpectedly; last lines of {log}:\n{tail}")
    click.echo("The STAC API was stopped.", err=True)


@command.command()
@_world_option
@_state_option
def load(world: Path, state: Path | None) -> None:
    """Upsert WORLD's collections and items into the running local STAC API."""
    rc, _ = _run_script("load", str(world), state=state)
    _exit_on_failure(rc, "loading the world")


@command.command()
@_state_option
def stop(state: Path | None) -> None:
    """Stop the local STAC API (no-op when it is not running)."""
    rc, _ = _run_script("stop", state=state)
    _exit_on_failure(rc, "stopping the STAC API")


@command.command()
@_state_option
def status(state: Path | None) -> None:
    """Print the running API's URL; exit 3 when it is not running."""
    rc, env = _run_script("status", state=state)
    if rc != 0:
        sys.exit(rc)
    click.echo(f"STAC_API_URL={env['STAC_API_URL']}")


def _bbox(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        w, s, e, n = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not 'west,south,east,north' (four numbers, degrees)") from None
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise click.BadParameter(f"{value!r} needs west < east in [-180, 180] and south < north in [-90, 90]")
    return (w, s, e, n)


def _query(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc}); e.g. '{{\"eo:cloud_cover\": {{\"lt\": 20}}}}'") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"eo:cloud_cover\": {\"lt\": 20}}'")
    return parsed


def _collections(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    names = [name.strip() for chunk in value for name in chunk.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("give at least one collection id, e.g. --collections sentinel-2-l2a")
    return names


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


@command.command()
@click.option("--url", envvar="STAC_API_URL", required=True, help="STAC API root URL (default: $STAC_API_URL).")
@click.option("--collections", "-c", multiple=True, callback=_collections,
              help="Collection ids, comma-separated or repeated.")
@click.option("--bbox", callback=_bbox, help="west,south,east,north in degrees.")
@click.option("--datetime", "datetime_", metavar="TEXT", help="Date-time or interval, e.g. 2024-04-01/2024-04-30.")
@click.option("--filter", "filter_", metavar="CQL2", help="CQL2-text filter, e.g. 'eo:cloud_cover < 20'.")
@click.option("--query", callback=_query, metavar="JSON", help="STAC query, e.g. '{\"eo:cloud_cover\": {\"lt\": 20}}'.")
@click.option("--max-items", type=click.IntRange(min=1), default=None, help="Stop after this many items.")
@click.option("--retries", type=click.IntRange(min=0, max=10), default=3, show_default=True,
              help="Retries of transient failures.")
def search(url: str, collections: list[str], bbox: tuple[float, float, float, float] | None, datetime_: str | None,
           filter_: str | None, query: dict[str, Any] | None, max_items: int | None, retries: int) -> None:
    """Search a STAC API and print item id, collection, date and cloud cover."""
    from transforms.search import CatalogRequestError, CatalogUnavailableError, search_items

    try:
        items = search_items(url, collections=collections, bbox=bbox, datetime=datetime_, filter=filter_,
                             query=query, max_items=max_items, retries=retries)
    except CatalogRequestError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except CatalogUnavailableError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = []
    for item in items:
        props = item.properties
        when = props.get("datetime") or props.get("start_datetime") or ""
        cloud = props.get("eo:cloud_cover")
        rows.append((item.id, item.collection_id or "", str(when), "" if cloud is None else f"{float(cloud):.2f}"))
    click.echo(_table(rows, ("id", "collection", "datetime", "cloud_cover")))
    click.echo(f"{len(items)} item(s)", err=True)
