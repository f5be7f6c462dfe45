"""Generate (or reuse) a whole sample world: rasters, STAC catalog and manifest.

Layout under ``out_dir``::

    assets/<collection>/<item_id>/<asset>.tif    one COG per asset
    stac/collections/<collection>.json           STAC Collections
    stac/items/<collection>.ndjson               one Item per line, sorted by id
    manifest.json                                written last; its presence means "complete"

Scenes are independent units of work, run in up to ``workers`` processes; the output does not depend
on how many.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from sampleworld import terramesh
from sampleworld.config import GENERATOR_VERSION, WorldConfig, config_hash, preset_config
from sampleworld.geometry import SceneGrid
from sampleworld.manifest import MANIFEST_NAME, WorldManifest, load_manifest
from sampleworld.plan import WorldPlan, plan_world
from sampleworld.products import scene_items
from sampleworld.stac_items import COLLECTIONS, collection_dict


def default_terramesh_dir(repo: Path | None = None) -> Path | None:
    """``<repo>/../shared/data/real/terramesh`` if it exists (the CLI's default), else None."""
    root = repo if repo is not None else Path(__file__).resolve().parents[1]
    candidate = root.parent / "shared" / "data" / "real" / "terramesh"
    return candidate if candidate.is_dir() else None


def world_hash(preset: str, seed: int, terramesh_dir: Path | None) -> str:
    """The config hash a world generated with these arguments records in its manifest."""
    extra: dict[str, object] = {"terramesh": None}
    if terramesh_dir is not None:
        files = sorted(p for loc in terramesh.find_locations(terramesh_dir) for p in loc.files.values())
        extra["terramesh"] = {"dir": str(Path(terramesh_dir).resolve()),
                              "files": [[p.parent.name + "/" + p.name, p.stat().st_size] for p in files]}
    return config_hash(preset_config(preset), seed, extra)


def _assets_on_disk(out_dir: Path) -> tuple[int, int]:
    files = list((out_dir / "assets").rglob("*.tif")) if (out_dir / "assets").is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def _reusable(out_dir: Path, chash: str) -> WorldManifest | None:
    try:
        manifest = load_manifest(out_dir)
    except (FileNotFoundError, ValueError):
        return None
    if manifest.config_hash != chash or manifest.out_dir != str(out_dir):
        return None
    if _assets_on_disk(out_dir) != (manifest.n_assets, manifest.bytes_assets):
        return None
    return manifest


def is_current(out_dir: Path, *, preset: str = "default", seed: int = 0, terramesh_dir: Path | None = None
               ) -> bool:
    """True when ``out_dir`` already holds a complete world for these arguments (generation would reuse it)."""
    return _reusable(Path(out_dir).resolve(), world_hash(preset, seed, terramesh_dir)) is not None


def _clean(out_dir: Path) -> None:
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    for sub in ("assets", "stac"):
        if (out_dir / sub).exists():
            shutil.rmtree(out_dir / sub)


def _scene_job(args: tuple[WorldConfig, SceneGrid, int, Path]) -> list[dict[str, Any]]:
    config, grid, seed, out_dir = args
    return scene_items(config, grid, seed, out_dir)


def _auto_workers(plan: WorldPlan) -> int:
    pixels = sum(g.shape(10)[0] ** 2 for g in plan.scenes)
    if pixels < 600_000 or len(plan.scenes) < 2:
        return 1
    return max(1, min(2, os.cpu_count() or 1, len(plan.scenes)))


def _scene_record(g: SceneGrid) -> dict[str, Any]:
    return {
        "name": g.name, "kind": g.kind, "region": g.region, "epsg": g.epsg, "size_m": g.size_m,
        "proj_bbox": list(g.bounds), "bbox": list(g.bbox_lonlat()), "shape_10m": list(g.shape(10)),
        "transform_10m": list(tuple(g.transform(10))[:6]), "cells": list(g.cells),
    }


def generate_world(
    out_dir: Path,
    *,
    preset: str = "default",
    seed: int = 0,
    terramesh_dir: Path | None = None,
    force: bool = False,
    workers: int | None = None,
) -> WorldManifest:
    """Generate the sample world into ``out_dir`` (or return the existing one if it matches).

    Parameters
    ----------
    out_dir:
        World folder (created). Only its ``assets/``, ``stac/`` and ``manifest.json`` are touched.
    preset:
        ``"default"`` (about 12 cells, a year of acquisitions) or ``"small"`` (for tests).
    seed:
        World seed; the same seed gives byte-identical COGs.
    terramesh_dir:
        Folder of real TerraMesh patches to register as well, or None.
    force:
        Regenerate even when a matching world (same config hash, folder and files) is present.
    workers:
        Processes for scene generation; None picks 1 for small worlds, else up to 2.

    Returns
    -------
    WorldManifest

    Raises
    ------
    ValueError
        For an unknown preset or a negative seed.
    FileNotFoundError
        If ``terramesh_dir`` is given but is not a TerraMesh folder.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    chash = world_hash(preset, seed, terramesh_dir)
    if not force:
        existing = _reusable(out_dir, chash)
        if existing is not None:
            return existing
    plan = plan_world(preset, seed, terramesh_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clean(out_dir)

    jobs = [(plan.config, g, seed, out_dir) for g in plan.scenes]
    n_workers = workers if workers is not None else _auto_workers(plan)
    items: list[dict[str, Any]] = []
    if n_workers <= 1:
        for job in jobs:
            items += _scene_job(job)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
            for result in pool.map(_scene_job, jobs):
                items += result
    if terramesh_dir is not None:
        items += terramesh.terramesh_items(terramesh_dir, out_dir, plan.config.cog)

    by_coll: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in items:
        by_coll[it["collection"]].append(it)
    stac_bytes = 0
    for coll in COLLECTIONS:
        coll_items = sorted(by_coll.get(coll, []), key=lambda d: d["id"])
        if not coll_items:
            continue
        cpath = out_dir / "stac" / "collections" / f"{coll}.json"
        ipath = out_dir / "stac" / "items" / f"{coll}.ndjson"
        cpath.parent.mkdir(parents=True, exist_ok=True)
        ipath.parent.mkdir(parents=True, exist_ok=True)
        cpath.write_text(json.dumps(collection_dict(coll, coll_items), indent=2) + "\n")
        ipath.write_text("".join(json.dumps(it, separators=(",", ":")) + "\n" for it in coll_items))
        stac_bytes += cpath.stat().st_size + ipath.stat().st_size

    n_assets, bytes_assets = _assets_on_disk(out_dir)
    main = plan.main
    manifest = WorldManifest(
        generator_version=GENERATOR_VERSION,
        preset=preset,
        seed=seed,
        config_hash=chash,
        out_dir=str(out_dir),
        n_items=len(items),
        n_assets=n_assets,
        item_counts={c: len(by_coll[c]) for c in COLLECTIONS if by_coll.get(c)},
        asset_counts={c: sum(len(i["assets"]) for i in by_coll[c]) for c in COLLECTIONS if by_coll.get(c)},
        bytes_assets=bytes_assets,
        bytes_total=bytes_assets + stac_bytes,
        elapsed_s=round(time.perf_counter() - started, 2),
        cells=list(plan.cells),
        zones=list(plan.zones),
        epsg_codes=list(plan.epsg_codes),
        main_area=_scene_record(main),
        scenes=[_scene_record(g) for g in plan.scenes],
        dates={c: list(plan.dates(c)) for c in COLLECTIONS if plan.dates(c)},
        terramesh=None if terramesh_dir is None else {
            "dir": str(Path(terramesh_dir).resolve()),
            "locations": [loc.name for loc in terramesh.find_locations(terramesh_dir)],
        },
    )
    tmp = out_dir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(manifest.to_json())
    tmp.replace(out_dir / MANIFEST_NAME)
    return manifest

