"""Gap-filling and seam evaluation, written to docs/gapfill.md.

1. **Gap filling.** On clear-enough windows of the default sample world that the model's training split
   held out (every scene, every S2 L2A date; the split parameters are read from the model's
   ``bundle.json``) and of the two real TerraMesh locations (never trained on), cloud-shaped masks (``transforms.masks.cloud_like_mask``, ``--coverage``
   of the 10 m window; the 20/60 m masks cover every coarse pixel touching a masked 10 m one) hide
   observed pixels. The hidden pixels are filled five ways and scored against the hidden truth, in
   reflectance, over the masked observed pixels only:

   * ``gapfill``: ``copgen gapfill``'s own per-window path with its defaults (``transforms.gapfill``):
     the temporal prior of the ``--prior-dates`` nearest other acquisitions, matched per band, then
     RePaint inpainting from ``--prior-start`` with the visible pixels imposed, conditioned on S1, DEM,
     land cover, location and date (the L1C of the same acquisition is left out: it would show the
     ground under the artificial cloud);
   * ``gapfill-no-prior``: the same with ``--prior-dates 0`` (RePaint from pure noise);
   * ``matched-prior``: the job's guess alone, no model (diagnostic: what the model adds to it);
   * ``nearest-in-time``: per pixel, the value of the temporally nearest other L2A acquisition of the
     window where that pixel is clear; pixels that are never clear elsewhere (and every pixel of the
     single-date TerraMesh locations) fall back to the band mean of the visible pixels (the share is
     reported);
   * ``no-S2-context``: the same model generating the three L2A groups whole from the same conditions.

   MAE and RMSE use the ensemble mean (pooled over pixels, bands and windows), SSIM the ensemble mean
   (per window, over windows centred on masked pixels, averaged), CRPS the members, coverage the share of
   hidden pixels inside the members' 5-95 % interval. A point baseline's CRPS is its MAE.
2. **Seams.** ``copgen seamless`` in both modes (``waves``, ``independent``: feathered blending only) on a
   5 x 5-window region (stride 1440 m) inside the default world's main area; seam ratio
   (``copgen_core.metrics.seam_ratio``) of the 10 m canvas at both border families, natively and after
   12 x 12 averaging (the feather width), averaged over members and bands (1.0 = invisible seams).

Usage::

    python bench/gapfill_eval.py [--model bundled|random:tiny] [--members 8] [--steps 20]
                                 [--coverage 0.3] [--no-seams] [--json OUT] [--no-docs]

``--model`` defaults to ``bundled`` when ``models/bundled`` exists, else ``random:tiny`` (whose numbers
only show that the evaluation runs: its outputs are noise).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MARK_BEGIN, MARK_END = "<!-- gapfill-eval:begin -->", "<!-- gapfill-eval:end -->"
GROUPS = ("S2L2A_B02_B03_B04_B08", "S2L2A_B05_B06_B07_B11_B12_B8A", "S2L2A_B01_B09")
EVAL_CONDITIONS = ("3d_cartesian_lat_lon", "DEM_DEM", "LULC_LULC", "S1RTC_vh_vv", "mean_timestamps")
METHODS = ("gapfill", "gapfill-no-prior", "matched-prior", "nearest-in-time", "no-S2-context")
PRIOR_START = 0.1
PRIOR_DATES = 2
"""Continuous time at which ``gapfill-temporal`` starts from its prior (the job's ``--prior-start`` default)."""
SEAM_BBOX = (6.005, 46.0571, 6.0865, 46.1038)  # 5 x 5 windows (EPSG:32632, stride 1440 m) in the main area


def _api(world: Path, state: Path) -> str:
    out = subprocess.run(["bash", str(REPO / "infra/local/stac-api.sh"), "start", "--load", str(world), "--state",
                          str(state), "--owner-pid", str(os.getpid())], capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)["STAC_API_URL"]


def _stop(state: Path) -> None:
    subprocess.run(["bash", str(REPO / "infra/local/stac-api.sh"), "stop", "--state", str(state)], capture_output=True)


@dataclasses.dataclass
class Sample:
    """One window of one acquisition: its tile, real roles, and the other acquisitions of the window."""

    name: str
    source: str
    when: Any
    tile: Any
    roles: Any
    others: list[tuple[Any, Any, Any]]  # (datetime, tile, roles) of the window's other L2A acquisitions


def collect(url: str, bbox: tuple[float, ...], source: str, min_observed: float,
            keep: Any = None) -> list[Sample]:
    """Windows of every L2A acquisition over ``bbox`` whose 10 m group is observed on >= ``min_observed``.

    ``keep``: optional predicate on a window key (e.g. the held-out side of the training split).
    """
    from transforms.gapfill import plan_gapfill_units, read_mask_band, window_roles
    from transforms.search import search_catalog_items
    from transforms.tiles import read_tile
    from transforms.windows import windows_for_bbox

    collections = ["sentinel-2-l2a", "sentinel-1-rtc", "cop-dem-glo-30", "io-lulc-annual-v02"]
    items = [i for c in collections for i in search_catalog_items(url, collections=[c], bbox=list(bbox))]
    windows = [w for w in windows_for_bbox(bbox) if keep is None or keep(w.key)]
    if not windows:
        return []
    per_window: dict[Any, list[tuple[Any, Any, Any, str]]] = {}
    for acq in sorted((i for i in items if i.collection == "sentinel-2-l2a"), key=lambda i: (i.datetime, i.id)):
        for u in plan_gapfill_units(windows, acq, items, EVAL_CONDITIONS, {}, ""):
            tile = read_tile(u.unit, [*GROUPS, *EVAL_CONDITIONS])
            scl = read_mask_band(u.scl, u.unit.window) if u.scl is not None else None
            roles = window_roles(tile, EVAL_CONDITIONS, scl=scl)
            per_window.setdefault(u.key, []).append((acq.datetime, tile, roles, acq.id))
    samples = []
    for key, acqs in sorted(per_window.items()):
        for when, tile, roles, item_id in acqs:
            if all(roles.missing[k].mean() <= 1.0 - min_observed for k in GROUPS) and not roles.targets:
                others = [(w, t, r) for w, t, r, i in acqs if i != item_id]
                samples.append(Sample(f"{key}@{item_id}", source, when, tile, roles, others))
    return samples


def _spread(samples: list[Sample], n: int) -> list[Sample]:
    """At most ``n`` samples, evenly spaced over the (window, date)-sorted list."""
    step = max(1, -(-len(samples) // n))
    return samples[::step][:n]


def _artificial(i: int, coverage: float, seed: int) -> dict[str, np.ndarray]:
    from transforms.masks import cloud_like_mask, to_grid

    m10 = cloud_like_mask((192, 192), (seed, i), coverage)
    return {"S2L2A_B02_B03_B04_B08": m10, "S2L2A_B05_B06_B07_B11_B12_B8A": to_grid(m10, 96, "any"),
            "S2L2A_B01_B09": to_grid(m10, 32, "any")}


def _nearest_in_time(sample: Sample, key: str, hidden: np.ndarray) -> tuple[np.ndarray, int]:
    """Per hidden pixel the nearest other acquisition's clear value; band-mean fallback; (C, H, W), #fallback."""
    truth = sample.tile.arrays[key]
    out = np.full(truth.shape, np.nan, dtype=np.float32)
    todo = hidden.copy()
    for _, tile, roles in sorted(sample.others, key=lambda o: abs((o[0] - sample.when).total_seconds())):
        if key not in tile.arrays:
            continue
        take = todo & ~roles.missing[key]
        out[:, take] = tile.arrays[key][:, take]
        todo &= ~take
    visible = ~sample.roles.missing[key] & ~hidden
    mean = np.nanmean(np.where(visible[None], truth, np.nan), axis=(1, 2))
    out[:, todo] = mean[:, None]
    return out, int(todo.sum())


class Tally:
    """Pooled sums of one (source, method, group)."""

    def __init__(self) -> None:
        self.abs = self.sq = self.crps = self.cover = 0.0
        self.n = self.n_cover = self.fallback = 0
        self.ssim: list[float] = []

    def add(self, key: str, truth: np.ndarray, members: np.ndarray, evaluated: np.ndarray, fallback: int = 0) -> None:
        from copgen_core.metrics import crps_ensemble, interval_coverage, ssim, to_eval_units

        t = to_eval_units(key, truth)
        x = to_eval_units(key, members)
        mean = x.mean(axis=0)
        err = mean[:, evaluated] - t[:, evaluated]
        self.abs += float(np.abs(err).sum())
        self.sq += float((err ** 2).sum())
        self.n += err.size
        self.crps += float(crps_ensemble(x[:, :, evaluated], t[:, evaluated], axis=0).sum())
        if members.shape[0] > 1:
            self.cover += float(interval_coverage(x[:, :, evaluated], t[:, evaluated], axis=0).sum())
            self.n_cover += err.size
        base = np.where(np.isfinite(t), t, np.where(np.isfinite(mean), mean, 0.0))
        pred = np.where(evaluated[None], mean, base)
        self.ssim.append(float(np.nanmean(ssim(pred[None], base[None], mask=evaluated[None]))))
        self.fallback += fallback

    def result(self, pixels_per_band: int) -> dict[str, Any]:
        return {"mae": self.abs / self.n, "rmse": (self.sq / self.n) ** 0.5, "ssim": float(np.nanmean(self.ssim)),
                "crps": self.crps / self.n, "coverage_5_95": self.cover / self.n_cover if self.n_cover else None,
                "pixels": pixels_per_band, "fallback_share": self.fallback / pixels_per_band if pixels_per_band else 0}


def evaluate(samples: list[Sample], model: Any, members: int, steps: int, coverage: float, seed: int,
             prior_start: float = PRIOR_START, prior_dates: int = PRIOR_DATES) -> dict:
    from transforms.gapfill import GapfillSpec, fill_windows, window_prior

    spec = GapfillSpec(model="eval", conditions=EVAL_CONDITIONS, members=members, steps=steps, seed=seed)
    tallies: dict[tuple[str, str, str], Tally] = {}
    pixels: dict[tuple[str, str], int] = {}
    counts: dict[str, int] = {}
    for i, s in enumerate(samples):
        hidden = _artificial(i, coverage, seed)
        evaluated = {k: hidden[k] & ~s.roles.missing[k] for k in GROUPS}
        missing = {k: s.roles.missing[k] | hidden[k] for k in GROUPS}
        keep = tuple(c for c in s.roles.conditions if not c.startswith("S2"))
        roles = dataclasses.replace(s.roles, conditions=keep, complete=(), partial=GROUPS, targets=(), missing=missing)
        blind = dataclasses.replace(s.roles, conditions=keep, complete=(), partial=(), targets=GROUPS,
                                    missing={k: np.ones_like(v) for k, v in missing.items()})
        filled, = fill_windows([s.tile], [roles], [(s.name, "eval")], spec, model)
        nearest = sorted(((abs((when - s.when).total_seconds()) / 86400, tile, r) for when, tile, r in s.others),
                         key=lambda o: o[0])
        prior = window_prior(s.tile, roles, nearest[:prior_dates])  # as the job: its --prior-dates nearest dates
        temporal, = fill_windows([s.tile], [roles], [(s.name, "eval")], dataclasses.replace(spec, prior_start=prior_start),
                                 model, [prior])
        generated, = fill_windows([s.tile], [blind], [(s.name, "eval")], spec, model)
        counts[s.source] = counts.get(s.source, 0) + 1
        for k in GROUPS:
            truth = s.tile.arrays[k]
            point, fallback = _nearest_in_time(s, k, evaluated[k])
            pixels[(s.source, k)] = pixels.get((s.source, k), 0) + int(evaluated[k].sum())
            guess = prior.get(k, point)
            for method, ens, fb in (("gapfill", temporal.arrays[k], 0), ("gapfill-no-prior", filled.arrays[k], 0),
                                    ("matched-prior", guess[None], 0),
                                    ("no-S2-context", generated.arrays[k], 0),
                                    ("nearest-in-time", point[None], fallback)):
                tallies.setdefault((s.source, method, k), Tally()).add(k, truth, ens, evaluated[k], fb)
        print(f"  [{i + 1}/{len(samples)}] {s.source} {s.name}", file=sys.stderr)
    out: dict[str, Any] = {"windows": counts, "results": {}}
    for (source, method, k), tally in sorted(tallies.items()):
        out["results"].setdefault(source, {}).setdefault(k, {})[method] = tally.result(pixels[(source, k)])
    return out


def seams(url: str, model: str, members: int, steps: int, tmp: Path) -> dict:
    from pipelines.config import SeamlessConfig
    from pipelines.seamless_job import run_seamless
    from transforms.seamless import canvas_seam_ratios, read_canvas_group

    out: dict[str, Any] = {"bbox": list(SEAM_BBOX)}
    for mode in ("waves", "independent"):
        cfg = SeamlessConfig(stac_url=url, bbox=SEAM_BBOX, start="2022-06-21", output=str(tmp / f"{mode}.zarr"),
                             model=model, members=members, steps=steps, mode=mode)
        report = run_seamless(cfg, progress=False)
        values, group = read_canvas_group(cfg.output, "S2L2A_B02_B03_B04_B08")
        out[mode] = {"windows": report.done, "elapsed_s": round(report.elapsed_s, 1),
                     "native": canvas_seam_ratios(values, group.block_px, group.footprint_px),
                     "coarse12": canvas_seam_ratios(values, group.block_px, group.footprint_px, coarsen=12)}
        print(f"  seamless {mode}: {out[mode]}", file=sys.stderr)
    return out


def _reproducible(argv: list[str]) -> list[str]:
    """The command-line arguments without the output-only ones (--json PATH, --no-docs)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--json":
            skip = True
        elif not a.startswith(("--json=", "--no-docs")):
            out.append(a)
    return out


def _f(v: Any, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def render(r: dict) -> str:
    lines = [MARK_BEGIN, "",
             f"Measured {r['date']} on {r['machine']} with `--model {r['model']}` (`{r['model_ref']}`), "
             f"{r['members']} members, {r['steps']} steps, {r['coverage']:.0%} artificial cloud cover, seed {r['seed']}.",
             f"Reproduce: `{r['command']}`.", ""]
    if r["model"] == "random:tiny":
        lines += ["**These numbers come from the random test model (noise outputs): they show that the "
                  "evaluation runs, not how good gap filling is.** Rerun with `--model bundled` once "
                  "`models/bundled` exists.", ""]
    for source, groups in r["gapfill"]["results"].items():
        lines += [f"**{source}** ({r['gapfill']['windows'][source]} windows)", "",
                  "| group | method | MAE | RMSE | SSIM | CRPS | 5-95 % coverage | fallback |",
                  "|---|---|---|---|---|---|---|---|"]
        for key in GROUPS:
            methods = groups[key]
            for method in METHODS:
                m = methods[method]
                lines.append(f"| {key} | {method} | {_f(m['mae'])} | {_f(m['rmse'])} | {_f(m['ssim'], 3)} | "
                             f"{_f(m['crps'])} | {_f(m['coverage_5_95'], 3)} | {m['fallback_share']:.0%} |")
        lines.append("")
    if "seams" in r:
        s = r["seams"]
        lines += [f"**Seams** (5 x 5 windows, bbox {s['bbox']}, default world, 2022-06-21)", "",
                  "| mode | seam ratio at stride | at overlap | mean | borders vs the other 8 px VAE cell edges | "
                  "mean after 12 x 12 averaging |",
                  "|---|---|---|---|---|---|"]
        for mode in ("waves", "independent"):
            n, c = s[mode]["native"], s[mode]["coarse12"]
            lines.append(f"| {mode} | {_f(n['at_stride'], 3)} | {_f(n['at_overlap'], 3)} | {_f(n['mean'], 3)} | "
                         f"{_f(n.get('cell_edges'), 3)} | {_f(c['mean'], 3)} |")
        lines.append("")
    lines.append(MARK_END)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bundled = (REPO / "models" / "bundled" / "bundle.json").is_file()
    ap.add_argument("--model", default="bundled" if bundled else "random:tiny")
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--coverage", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-observed", type=float, default=0.5, help="evaluate windows at least this observed")
    ap.add_argument("--max-windows", type=int, default=12, help="per source (sample world, each TerraMesh location)")
    ap.add_argument("--prior-start", type=float, default=PRIOR_START, help="gapfill's --prior-start")
    ap.add_argument("--prior-dates", type=int, default=PRIOR_DATES, help="gapfill's --prior-dates")
    ap.add_argument("--no-seams", action="store_true")
    ap.add_argument("--seam-members", type=int, default=2)
    ap.add_argument("--json", dest="json_out", default=None)
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/gapfill.md")
    args = ap.parse_args()
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import torch

    from copgen_core.bundle import load_model
    from sampleworld import generate_world
    from transforms.infer import resolve_model_ref

    torch.set_num_threads(1)
    model_ref = resolve_model_ref(args.model)
    model = load_model(model_ref)
    terramesh = REPO.parent / "shared" / "data" / "real" / "terramesh"
    tmp = Path(tempfile.mkdtemp(prefix="copgen-gapfill-eval-"))
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores, no GPU", "model": args.model,
        "model_ref": model_ref, "members": args.members, "steps": args.steps, "coverage": args.coverage,
        "seed": args.seed, "command": " ".join(["python bench/gapfill_eval.py", *_reproducible(sys.argv[1:])]),
    }
    states = []
    try:
        # the bundled model's own world (default preset, seed 0), scored on the windows its training
        # split held out (the split parameters are the model's, as in copgen evaluate)
        from pipelines.cmd_evaluate import model_split
        from transforms.dataset import split_of

        split = {"val_fraction": 0.1, "split_seed": 42, **model_split(model_ref)}
        results["split"] = split
        world = REPO / "out" / "world"
        manifest = generate_world(world, preset="default", terramesh_dir=terramesh if terramesh.is_dir() else None)
        states.append(tmp / "stac-default")
        url = _api(world, states[-1])

        def held_out(key: Any) -> bool:
            return bool(split_of(key, split["val_fraction"], split["split_seed"]) == "val")

        found: list[Sample] = []
        seen: set[str] = set()
        for scene in manifest.scenes:
            for sample in collect(url, tuple(scene["bbox"]), "sample world", args.min_observed, held_out):
                if sample.name not in seen:
                    seen.add(sample.name)
                    found.append(sample)
        samples = _spread(sorted(found, key=lambda x: x.name), args.max_windows)
        if terramesh.is_dir():
            tm_items = [json.loads(line) for line in (world / "stac" / "items" / "sentinel-2-l2a.ndjson").read_text()
                        .splitlines() if '"terramesh-' in line]
            for item in tm_items:
                samples += _spread(collect(url, tuple(item["bbox"]), "TerraMesh", 0.3), args.max_windows)
        print(f"evaluating {len(samples)} windows", file=sys.stderr)
        results["gapfill"] = evaluate(samples, model, args.members, args.steps, args.coverage, args.seed,
                                      args.prior_start, args.prior_dates)
        if not args.no_seams:
            results["seams"] = seams(url, model_ref, args.seam_members, args.steps, tmp)
    finally:
        for state in states:
            _stop(state)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_docs:
        doc = REPO / "docs" / "gapfill.md"
        text = doc.read_text()
        if MARK_BEGIN not in text:
            raise SystemExit(f"{doc} has no {MARK_BEGIN} ... {MARK_END} block to update")
        doc.write_text(text[:text.index(MARK_BEGIN)] + render(results) + text[text.index(MARK_END) + len(MARK_END):])


if __name__ == "__main__":
    main()
