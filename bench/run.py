"""`make bench`: pipeline benchmarks measured side by side in one run, written to docs/performance.md.

1. generate: pipeline efficiency = model (infer) time / end-to-end time, local engine.
2. read stage vs plain rasterio windowed reads of the same windows and bands.
3. write stage (template + validated region writes + ledger) vs plain xarray ``to_zarr`` of the same arrays.
4. peak memory (max RSS) of preprocess over a region and over a region 4x larger (must stay flat).

Everything runs on the default sample world behind a real local STAC API. Usage:
``python bench/run.py [--preset default|small] [--model random:tiny] [--json OUT] [--no-docs]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MARK_BEGIN, MARK_END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _api(world: Path, state: Path) -> str:
    out = subprocess.run(["bash", str(REPO / "infra/local/stac-api.sh"), "start", "--load", str(world), "--state",
                          str(state), "--owner-pid", str(os.getpid())], capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)["STAC_API_URL"]


def _bbox_of(manifest, frac: float) -> tuple[float, float, float, float]:  # noqa: ANN001
    w, s, e, n = manifest.main_area["bbox"]
    return (w, n - (n - s) * frac, w + (e - w) * frac, n)


def bench_generate(url: str, bbox, when: str, model: str, tmp: Path) -> dict:  # noqa: ANN001
    from pipelines.config import GenerateConfig
    from pipelines.jobs import run_generate

    cfg = GenerateConfig(stac_url=url, bbox=bbox, start=when, output=str(tmp / "gen.zarr"), model=model,
                         members=2, steps=10, batch_size=4)
    report = run_generate(cfg, progress=False)
    infer = report.stage_seconds.get("infer", 0.0)
    return {"windows": report.done, "end_to_end_s": round(report.elapsed_s, 2), "infer_s": round(infer, 2),
            "read_s": report.stage_seconds.get("read", 0.0), "write_s": report.stage_seconds.get("write", 0.0),
            "efficiency": round(infer / report.elapsed_s, 3)}


def bench_read_write(url: str, bbox, when: str, tmp: Path) -> tuple[dict, dict]:  # noqa: ANN001
    import rasterio
    import xarray as xr
    from rasterio.windows import from_bounds

    from pipelines.config import PreprocessConfig
    from pipelines.jobs import _anchor_collection, _catalog, _rules
    from transforms.cube import create_cube, write_window
    from transforms.cube_spec import CubeSpec
    from transforms.select import SelectionRule
    from transforms.tiles import plan_units, read_tile
    from transforms.windows import windows_for_bbox

    mods = ["S2L2A_B02_B03_B04_B08", "S2L2A_B05_B06_B07_B11_B12_B8A", "S2L2A_B01_B09"]
    cfg = PreprocessConfig(stac_url=url, bbox=bbox, start=when, modalities=mods)
    rules = _rules(cfg)
    rules["sentinel-2-l2a"] = SelectionRule("sentinel-2-l2a", max_days=0.999)
    assert _anchor_collection(mods) == "sentinel-2-l2a"
    items = _catalog(cfg, mods, rules)
    windows = [w for w in windows_for_bbox(bbox) if w.epsg == items[0].epsg]
    units = [u for u in plan_units(windows, [cfg.period[0]], items, mods, rules) if u.sources]
    # ours: the read step
    t0 = time.perf_counter()
    tiles = [read_tile(u, mods) for u in units]
    ours = time.perf_counter() - t0
    # plain rasterio: open each band file and read the window's bounds at the file's own resolution
    t0 = time.perf_counter()
    for u in units:
        for _, channels in u.sources:
            for options in channels:
                href = options[0].href.removeprefix("file://")
                with rasterio.open(href) as src:
                    src.read(1, window=from_bounds(*u.window.bounds, transform=src.transform), boundless=True)
    plain = time.perf_counter() - t0
    px = sum(a.size for t in tiles for a in t.arrays.values())
    read = {"windows": len(units), "ours_s": round(ours, 3), "plain_rasterio_s": round(plain, 3),
            "ratio": round(ours / plain, 2), "mpix_per_s": round(px / ours / 1e6, 2)}
    # write: our validated region writes + ledger vs one plain to_zarr of the same arrays
    spec = CubeSpec(url=str(tmp / "w.zarr"), modalities=tuple(mods), windows=tuple(windows),
                    times=(cfg.period[0],), members=None)
    t0 = time.perf_counter()
    create_cube(spec)
    for t in tiles:
        write_window(spec, t.unit.key, 0, t.arrays, {"bench": True})
    ours_w = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, t in enumerate(tiles):
        ds = xr.Dataset({k: ((f"{k}_b", f"{k}_y", f"{k}_x"), v) for k, v in t.arrays.items()})
        ds.to_zarr(str(tmp / "plain.zarr"), group=f"w{i}", mode="w", zarr_format=3, consolidated=False)
    plain_w = time.perf_counter() - t0
    write = {"windows": len(tiles), "ours_s": round(ours_w, 3), "plain_to_zarr_s": round(plain_w, 3),
             "ratio": round(ours_w / plain_w, 2)}
    return read, write


def bench_memory(url: str, manifest, when: str, tmp: Path) -> dict:  # noqa: ANN001
    out = {}
    for label, frac in (("1x", 0.5), ("4x", 1.0)):
        bbox = ",".join(str(v) for v in _bbox_of(manifest, frac))
        cmd = [sys.executable, str(REPO / "bench" / "maxrss.py"), "preprocess", "--stac-url", url, "--bbox", bbox,
               "--start", when, "--modalities", "s2l2a_10m,s2l2a_20m,s1,dem,lulc",
               "--output", str(tmp / f"mem{label}.zarr"), "--quiet"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        rss = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("MAXRSS")]
        report = json.loads(Path(f"{tmp / f'mem{label}.zarr'}.report.json").read_text())
        out[label] = {"windows": report["done"], "peak_rss_mb": round(rss[0] / 1024, 1) if rss else None,
                      "seconds": round(time.perf_counter() - t0, 1)}
    out["rss_ratio_4x_over_1x"] = round(out["4x"]["peak_rss_mb"] / out["1x"]["peak_rss_mb"], 2)
    return out


def render(results: dict) -> str:
    g, r, w, m = results["generate"], results["read"], results["write"], results["memory"]
    return "\n".join([
        MARK_BEGIN,
        f"Measured by `make bench` on {results['machine']} ({results['date']}, preset `{results['preset']}`, "
        f"model `{results['model']}`).",
        "",
        "| benchmark | ours | baseline | ratio |",
        "|---|---|---|---|",
        f"| generate, {g['windows']} windows, 2 members x 10 steps | {g['end_to_end_s']} s end to end, "
        f"{g['infer_s']} s in the model | — | efficiency {g['efficiency']:.0%} |",
        f"| read {r['windows']} windows (S2 10/20/60 m, native grids) | {r['ours_s']} s ({r['mpix_per_s']} Mpx/s) | "
        f"plain rasterio windowed reads {r['plain_rasterio_s']} s | {r['ratio']}x |",
        f"| write {w['windows']} windows (validated region writes + ledger) | {w['ours_s']} s | "
        f"plain `to_zarr` {w['plain_to_zarr_s']} s | {w['ratio']}x |",
        f"| preprocess peak RSS, {m['1x']['windows']} vs {m['4x']['windows']} windows | "
        f"{m['1x']['peak_rss_mb']} MB vs {m['4x']['peak_rss_mb']} MB | — | {m['rss_ratio_4x_over_1x']}x |",
        MARK_END,
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", choices=["default", "small"])
    ap.add_argument("--model", default="random:tiny")
    ap.add_argument("--json", "--out", dest="json_out", default=None)
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    args = ap.parse_args()
    from sampleworld import generate_world

    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    tmp = Path(tempfile.mkdtemp(prefix="copgen-bench-"))
    world_dir = REPO / "out" / f"bench-world-{args.preset}"
    manifest = generate_world(world_dir, preset=args.preset)
    state = tmp / "stac"
    url = _api(world_dir, state)
    try:
        dates = manifest.dates["sentinel-2-l2a"]
        when = dates[len(dates) // 2][:10]
        results = {"preset": args.preset, "model": args.model, "date": time.strftime("%Y-%m-%d"),
                   "machine": f"{os.cpu_count()} CPU cores, no GPU"}
        results["generate"] = bench_generate(url, _bbox_of(manifest, 0.5), when, args.model, tmp)
        results["read"], results["write"] = bench_read_write(url, _bbox_of(manifest, 1.0), when, tmp)
        results["memory"] = bench_memory(url, manifest, when, tmp)
    finally:
        subprocess.run(["bash", str(REPO / "infra/local/stac-api.sh"), "stop", "--state", str(state)],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_docs:
        doc = REPO / "docs" / "performance.md"
        text = doc.read_text() if doc.exists() else "# Performance\n\n"
        block = render(results)
        if MARK_BEGIN in text:
            text = text[:text.index(MARK_BEGIN)] + block + text[text.index(MARK_END) + len(MARK_END):]
        else:
            text = text.rstrip() + "\n\n## Pipeline (`make bench`)\n\n" + block + "\n"
        doc.write_text(text)


if __name__ == "__main__":
    main()
