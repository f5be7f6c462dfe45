"""Helpers for end-to-end job tests: run the real CLI, hash cubes, copy worlds."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.paths import REPO


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m pipelines.cli ARGS`` in a fresh process (as a user would run ``copgen``)."""
    full_env = {**os.environ, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def data_digests(cube: Path) -> dict[str, str]:
    """sha256 of every stored object of a local cube except the root metadata (which names the output URL)."""
    out = {}
    for path in sorted(cube.rglob("*")):
        if path.is_file() and path.relative_to(cube).as_posix() != "zarr.json":
            out[path.relative_to(cube).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def chunk_digests(cube: Path) -> dict[str, str]:
    """sha256 of the data chunks only (``.../c/...``)."""
    return {k: v for k, v in data_digests(cube).items() if "/c/" in k}


def main_area_bbox(manifest: Any, shrink: float = 0.0) -> str:
    """The small world's main area as a ``--bbox`` string (optionally shrunk by a fraction per side)."""
    w, s, e, n = manifest.main_area["bbox"]
    dx, dy = (e - w) * shrink, (n - s) * shrink
    return f"{w + dx},{s + dy},{e - dx},{n - dy}"


def copy_world(src: Path, dst: Path) -> Path:
    """Copy a world and point its items' file:// hrefs at the copy (so tests can break assets safely)."""
    shutil.copytree(src, dst)
    old, new = f"file://{src.resolve()}", f"file://{dst.resolve()}"
    for nd in (dst / "stac" / "items").glob("*.ndjson"):
        nd.write_text(nd.read_text().replace(old, new))
    return dst


def items(world: Path, collection: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (world / "stac" / "items" / f"{collection}.ndjson").read_text().splitlines()
            if line.strip()]
