"""`copgen preprocess` end to end: cube pixels equal independent rasterio reads; broken assets fail only
their windows; the run report says why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds

from tests.pipelines.helpers import copy_world, items, run_cli
from transforms.catalog import describe_item
from transforms.cube import load_spec, read_window

pytestmark = pytest.mark.slow

MODS = "s2l2a_10m,s2l2a_20m,dem,lulc,s1"


def _main_epsg_bbox(world: Any) -> tuple[int, str]:
    """A bbox inside the main area, west of 6 deg E so its windows share the scene's UTM zone (exact reads)."""
    w, s, e, n = world.main_area["bbox"]
    east = min(e, 5.9999)
    assert east > w, "the small world's main area must reach west of 6 E for this test"
    return int(world.main_area["epsg"]), f"{w},{s},{east},{n}"


@pytest.fixture(scope="module")
def pp_cube(stac_api_world: Any, small_world: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pp") / "pp.zarr"
    _, bbox = _main_epsg_bbox(small_world)
    start, end = "2021-01-01", "2022-12-31"
    proc = run_cli("preprocess", "--stac-url", stac_api_world.url, "--bbox", bbox, "--start", start, "--end", end,
                   "--modalities", MODS, "--output", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


def test_s2_pixels_equal_an_independent_rasterio_read(pp_cube: Path, small_world: Any, small_world_dir: Path) -> None:
    epsg, _ = _main_epsg_bbox(small_world)
    spec = load_spec(str(pp_cube))
    compared = 0
    for key in (w.key for w in spec.windows if w.epsg == epsg):
        for ti, when in enumerate(spec.times):
            block = read_window(str(pp_cube), key, "S2L2A_B02_B03_B04_B08", ti)
            inside = np.isfinite(block).all(axis=0)
            if inside.sum() < 1000:
                continue  # window (almost) outside the scene
            record = json.loads((pp_cube / "_ledger" / "done" / f"{key}__t{ti}.json").read_text())
            [item_id] = record["provenance"]["source_items"]["S2L2A_B02_B03_B04_B08"]
            [item] = [it for it in items(small_world_dir, "sentinel-2-l2a") if it["id"] == item_id]
            assert item["properties"]["datetime"][:10] == when.date().isoformat()
            desc = describe_item(item)
            win = spec.window(key)
            for c, band in enumerate(("B04", "B03", "B02", "B08")):
                href = desc.band(band).href.removeprefix("file://")
                with rasterio.open(href) as src:
                    raw = src.read(1, window=from_bounds(*win.bounds, transform=src.transform), boundless=True,
                                   fill_value=0).astype(np.float64)
                offset = 1000.0 if desc.s2_dn_offset_applies else 0.0
                expected = np.where(raw > 0, raw - offset, np.nan).astype(np.float32)
                np.testing.assert_array_equal(block[c], expected)
            compared += 1
    assert compared >= 1, "no window inside the scene was compared"


def test_dem_and_lulc_are_on_their_native_grids(pp_cube: Path) -> None:
    spec = load_spec(str(pp_cube))
    key = spec.windows[0].key
    assert read_window(str(pp_cube), key, "DEM_DEM", 0).shape == (1, 64, 64)
    assert read_window(str(pp_cube), key, "S2L2A_B05_B06_B07_B11_B12_B8A", 0).shape == (6, 96, 96)
    lulc = read_window(str(pp_cube), key, "LULC_LULC", 0)
    assert lulc.dtype == np.uint8 and set(np.unique(lulc)) <= {1, 2, 4, 5, 7, 8, 9, 10, 11, 255}


def test_broken_assets_fail_only_their_windows(services: Any, small_world_dir: Path, small_world: Any,
                                               tmp_path: Path) -> None:
    world = copy_world(small_world_dir, tmp_path / "world")
    l2a = sorted(items(world, "sentinel-2-l2a"), key=lambda it: it["properties"]["datetime"])
    epsg, bbox = _main_epsg_bbox(small_world)
    w, s, e, n = (float(v) for v in bbox.split(","))
    in_zone = [it for it in l2a if it["bbox"][0] < e and w < it["bbox"][2] and it["bbox"][1] < n and s < it["bbox"][3]]
    assert len(in_zone) >= 2
    corrupt = Path(describe_item(in_zone[0]).band("B04").href.removeprefix("file://"))
    corrupt.write_bytes(corrupt.read_bytes()[:2000])  # truncated COG
    missing = Path(describe_item(in_zone[1]).band("B08").href.removeprefix("file://"))
    missing.unlink()
    api = services.stac_api(load=world)
    out = tmp_path / "broken.zarr"
    proc = run_cli("preprocess", "--stac-url", api.url, "--bbox", bbox, "--start", "2021-01-01", "--end",
                   "2022-12-31", "--modalities", MODS, "--output", str(out), "--quiet")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(Path(f"{out}.report.json").read_text())
    reasons = " ".join(f["reason"] for f in report["failed"])
    assert corrupt.name in reasons and str(missing) in reasons
    assert report["done"] >= 1, "windows of the intact dates must still be written"
    bad_days = {in_zone[0]["properties"]["datetime"][:10], in_zone[1]["properties"]["datetime"][:10]}
    spec = load_spec(str(out))
    failed_days = {spec.times[f["time_index"]].date().isoformat() for f in report["failed"]}
    assert failed_days == bad_days
    assert "failed" in proc.stderr and "report:" in proc.stderr


def test_optional_vae_latents_are_encoded_for_complete_samples(stac_api_world: Any, small_world: Any,
                                                               tmp_path: Path) -> None:
    from safetensors import safe_open

    _, bbox = _main_epsg_bbox(small_world)
    out = tmp_path / "lat.zarr"
    proc = run_cli("preprocess", "--stac-url", stac_api_world.url, "--bbox", bbox, "--start", "2021-01-01",
                   "--end", "2022-12-31", "--modalities", "s2l2a_10m,dem", "--latents", "random:tiny",
                   "--output", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(Path(f"{out}.report.json").read_text())
    n = report["counters"]["latent_samples"]
    assert n >= 1
    with safe_open(f"{out}.latents.safetensors", "pt") as f:
        s2 = f.get_tensor("moments/S2L2A_B02_B03_B04_B08")
        dem = f.get_tensor("moments/DEM_DEM")
    assert tuple(s2.shape) == (n, 16, 24, 24) and tuple(dem.shape) == (n, 16, 8, 8)
    assert bool(s2.isfinite().all())
