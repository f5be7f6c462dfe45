"""How much of S2 L2A do the static conditions explain? Simple look-up predictors as a reference.

``copgen evaluate`` scores S2 L2A generated from {DEM, LULC, location, date} by the ratio of its
ensemble-mean MAE to that of unconditional generation (issue 5 asks for <= 0.7). This script asks what
that ratio is for plain look-up predictors built from the same information on the training windows of
a training cube, scored on its held-out windows (the split of ``transforms.dataset``):

``unconditional``
    the per-band median of every training pixel (the best constant under MAE);
``class``
    the per-band median of the training pixels of the same land-cover class;
``class x date``
    ... of the same class and acquisition (time slot);
``class x date x zone``
    ... of the same class, acquisition and UTM zone (the sample world's zones are its regions);
``class x date x zone x elevation``
    ... and elevation band (``ELEVATION_BANDS`` quantile bands of the training pixels' DEM): what the
    DEM adds through snow lines and altitude.

The ratio of each to ``unconditional`` is a reference for what the conditions can buy, not a bound: a
model can also use slope and aspect (sunlit slopes), spatial context and the class mixture around a pixel.
Pixels of the three S2 L2A groups are compared in the normalised space, an affine map of reflectance
that is the same for every S2 band, so the ratios equal those in reflectance. ``--clear`` restricts the
scoring to pixels the cube's L1C cloud mask calls clear (clouds are not predictable from the
static conditions).

    python bench/static_reference.py --cube out/train-bundled/train.zarr [--json OUT]

Runs in about a minute on the default world's training cube (``copgen train-bundled --until preprocess``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transforms.dataset import CubeDataset  # noqa: E402

GROUPS = ("S2L2A_B02_B03_B04_B08", "S2L2A_B05_B06_B07_B11_B12_B8A", "S2L2A_B01_B09")
LULC = "LULC_LULC"
CLOUD = "S2L1C_cloud_mask"
DEM = "DEM_DEM"
ELEVATION_BANDS = 6
CLEAR_CODE_PLANE = 0
"""Plane of the cloud mask's one-hot encoding that holds 'clear' (``copgen_core.normalize_classes``)."""
PREDICTORS = ("class", "class x date", "class x date x zone", "class x date x zone x elevation")


def _samples(cube: str, split: str, group: str
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """(values (N, C, H, W), class index (N, H, W) at the group's grid, clear (N, H, W), normalised
    elevation (N, H, W) at the group's grid (nearest DEM pixel), [(time, zone)])."""
    ds = CubeDataset(cube, [group, LULC, CLOUD, DEM], split=split)
    values, classes, clear, elevation, keys = [], [], [], [], []
    for i, ref in enumerate(ds.refs):
        item = ds[i]
        x = item[group].numpy()
        f = item[LULC].shape[-1] // x.shape[-1]  # LULC is at 10 m; coarser groups take the top-left pixel
        classes.append(item[LULC].numpy().argmax(0)[::f, ::f])
        g = item[CLOUD].shape[-1] // x.shape[-1]
        clear.append(item[CLOUD].numpy().argmax(0)[::g, ::g] == CLEAR_CODE_PLANE)
        dem = item[DEM].numpy()[0]
        rows = np.arange(x.shape[-2]) * dem.shape[-2] // x.shape[-2]
        cols = np.arange(x.shape[-1]) * dem.shape[-1] // x.shape[-1]
        elevation.append(dem[np.ix_(rows, cols)])
        values.append(x)
        name = ref.name
        keys.append((name.rsplit("__t", 1)[-1], name.split("_", 1)[0]))
    return np.stack(values), np.stack(classes), np.stack(clear), np.stack(elevation), keys


def _medians(values: np.ndarray, classes: np.ndarray, keys: list[tuple[str, ...]]) -> dict[tuple[object, ...], np.ndarray]:
    """Per (key..., class): the per-band median of the training pixels."""
    pools: dict[tuple[object, ...], list[np.ndarray]] = defaultdict(list)
    for x, c, k in zip(values, classes, keys, strict=True):
        for cls in np.unique(c):
            pools[(*k, int(cls))].append(x[:, c == cls])
    return {k: np.median(np.concatenate(v, axis=1), axis=1) for k, v in pools.items()}


def group_reference(cube: str, group: str, clear_only: bool) -> dict[str, float]:
    """MAE of each predictor on the held-out windows and its ratio to the unconditional one."""
    xt, ct, _, et, kt = _samples(cube, "train", group)
    xv, cv, clv, ev, kv = _samples(cube, "val", group)
    edges = np.quantile(et, np.linspace(0, 1, ELEVATION_BANDS + 1)[1:-1])
    # class and elevation band in one index, so the per-class machinery serves both
    cet, cev = ct * ELEVATION_BANDS + np.digitize(et, edges), cv * ELEVATION_BANDS + np.digitize(ev, edges)
    band_median = np.median(xt.transpose(1, 0, 2, 3).reshape(xt.shape[1], -1), axis=1)
    weight = clv if clear_only else np.ones_like(clv)
    preds = {"unconditional": np.broadcast_to(band_median[None, :, None, None], xv.shape)}
    by_class = _medians(xt, ct, [() for _ in kt])
    by_date = _medians(xt, ct, [(t,) for t, _ in kt])
    by_zone = _medians(xt, ct, list(kt))
    by_band = _medians(xt, cet, list(kt))
    for name in PREDICTORS[:-1]:
        pred = np.empty_like(xv)
        for i, (t, z) in enumerate(kv):
            for cls in (int(c) for c in np.unique(cv[i])):
                chain = {"class": [(by_class, (cls,))],
                         "class x date": [(by_date, (t, cls)), (by_class, (cls,))],
                         "class x date x zone": [(by_zone, (t, z, cls)), (by_date, (t, cls)), (by_class, (cls,))]}
                # the finest look-up that has training pixels, else a coarser one, else the band median
                value = next((table[key] for table, key in chain[name] if key in table), band_median)
                pred[i][:, cv[i] == cls] = value[:, None]
        preds[name] = pred
    pred = preds["class x date x zone"].copy()
    for i, (t, z) in enumerate(kv):
        for code in (int(c) for c in np.unique(cev[i])):
            if (t, z, code) in by_band:
                pred[i][:, cev[i] == code] = by_band[(t, z, code)][:, None]
    preds[PREDICTORS[-1]] = pred
    out: dict[str, float] = {"held_out_samples": float(len(kv)), "scored_pixel_fraction": float(weight.mean())}
    for name, pred in preds.items():
        err = np.abs(xv - pred).mean(axis=1)  # (N, H, W), mean over bands
        out[f"mae {name}"] = float((err * weight).sum() / weight.sum())
    for name in PREDICTORS:
        out[f"ratio {name}"] = out[f"mae {name}"] / out["mae unconditional"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cube", required=True, help="a training cube (copgen preprocess / train-bundled)")
    ap.add_argument("--clear", action="store_true", help="score only pixels the L1C cloud mask calls clear")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    results = {"clear_only": args.clear, "groups": {}}
    for group in GROUPS:
        results["groups"][group] = group_reference(args.cube, group, args.clear)
        r = results["groups"][group]
        print(f"{group}: " + ", ".join(f"{p} {r[f'ratio {p}']:.3f}" for p in PREDICTORS)
              + f" (unconditional MAE {r['mae unconditional']:.4f}, {int(r['held_out_samples'])} held-out samples)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
