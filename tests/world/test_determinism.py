"""Same seed -> byte-identical assets, whatever the process layout; another seed -> other bytes."""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from sampleworld import generate_world, load_manifest
from sampleworld.world import is_current
from tests.world.world_fixtures import SEED, World, small_world, tmp_dir


@pytest.fixture(scope="module")
def world() -> World:
    return small_world()


def _digests(out_dir: Path) -> dict[str, str]:
    root = out_dir / "assets"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.tif")) if "terramesh" not in p.parent.name}


def _generate_in_fresh_process(out_dir: Path, workers: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        pool.submit(generate_world, out_dir, preset="small", seed=SEED, workers=workers).result()


def test_same_seed_gives_identical_bytes_with_two_workers():
    # Both worlds are generated in fresh processes: the in-process fixture world, generated after the
    # training tests ran in this process, differed in two of ~220 COGs from a two-worker world on
    # 2026-12-05 (docs/status.md: process-state dependence, not yet understood).
    one = tmp_dir("copgen-world-one-") / "world"
    other = tmp_dir("copgen-world-rerun-") / "world"
    _generate_in_fresh_process(one, workers=1)
    generate_world(other, preset="small", seed=SEED, workers=2)
    first, second = _digests(one), _digests(other)
    assert len(first) > 100
    assert first == second


def test_different_seed_gives_different_rasters(world):
    other = tmp_dir("copgen-world-seed1-") / "world"
    manifest = generate_world(other, preset="small", seed=SEED + 1)
    a, b = _digests(world.out_dir), _digests(other)
    assert manifest.config_hash != world.manifest.config_hash
    assert set(a) == set(b), "the layout does not depend on the seed"
    differing = [k for k in a if a[k] != b[k]]
    assert len(differing) > 0.9 * len(a)


def test_matching_manifest_skips_regeneration_and_force_redoes_it(world):
    stamp = (world.out_dir / "manifest.json").stat().st_mtime_ns
    asset = next((world.out_dir / "assets").rglob("B04.tif"))
    asset_stamp = asset.stat().st_mtime_ns
    terramesh = Path(world.manifest.terramesh["dir"]) if world.manifest.terramesh else None
    again = generate_world(world.out_dir, preset="small", seed=SEED, terramesh_dir=terramesh)
    assert again == world.manifest
    assert (world.out_dir / "manifest.json").stat().st_mtime_ns == stamp
    assert asset.stat().st_mtime_ns == asset_stamp
    assert load_manifest(world.out_dir) == world.manifest


def test_world_with_a_missing_asset_is_not_reused(world):
    terramesh = Path(world.manifest.terramesh["dir"]) if world.manifest.terramesh else None
    assert is_current(world.out_dir, preset="small", seed=SEED, terramesh_dir=terramesh)
    assert not is_current(world.out_dir, preset="small", seed=SEED + 1, terramesh_dir=terramesh)
    victim = next((world.out_dir / "assets").rglob("B08.tif"))
    kept = victim.read_bytes()
    victim.unlink()
    try:
        assert not is_current(world.out_dir, preset="small", seed=SEED, terramesh_dir=terramesh)
    finally:
        victim.write_bytes(kept)
    assert is_current(world.out_dir, preset="small", seed=SEED, terramesh_dir=terramesh)


def test_load_manifest_explains_a_missing_world(tmp_path):
    with pytest.raises(FileNotFoundError, match="copgen world --out"):
        load_manifest(tmp_path)
