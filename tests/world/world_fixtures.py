"""The small sample world shared by the tests in this folder, generated once per session.

Each test module wraps :func:`small_world` in its own module fixture; the generation itself is cached
here, in a temporary folder removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from sampleworld import WorldManifest, generate_world
from tests.paths import REAL

TERRAMESH = REAL / "terramesh"
SEED = 0


@dataclass(frozen=True)
class World:
    """A generated world and helpers to read it."""

    out_dir: Path
    manifest: WorldManifest

    def items(self, collection: str) -> list[dict[str, Any]]:
        path = self.out_dir / "stac" / "items" / f"{collection}.ndjson"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def synthetic(self, collection: str, scene: str | None = None) -> list[dict[str, Any]]:
        return [i for i in self.items(collection) if i["properties"]["copgen:source"] == "sampleworld"
                and (scene is None or i["properties"]["copgen:scene"] == scene)]


def read_asset(asset: dict[str, Any]) -> np.ndarray:
    """Band 1 of an asset's COG."""
    with rasterio.open(asset["href"].removeprefix("file://")) as src:
        return src.read(1)


def tmp_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def small_world() -> World:
    """The ``small`` preset, seed 0, with the TerraMesh items when ../shared is present."""
    out = tmp_dir("copgen-world-") / "world"
    terramesh = TERRAMESH if TERRAMESH.is_dir() else None
    manifest = generate_world(out, preset="small", seed=SEED, terramesh_dir=terramesh)
    return World(out, manifest)
