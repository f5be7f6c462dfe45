"""How much a trained backbone uses its conditions: S2 L2A ε error with conditions given vs marginalised.

For every held-out sample of a training cube (through its latent cache) and a few noise levels, the
three S2 L2A latents are noised to step ``n`` and the backbone predicts their ε twice: with DEM,
LULC, location and date given clean at t = 0 (and, optionally, S1 or the S2 L1C groups too), and
with every other modality marginalised (pure noise at t = 1000). A ratio below 1 says the conditions
help; 1.000 says the backbone ignores them. Targets and condition sets are cut to the modalities
the backbone has (so it also checks backbones over a subset of the modalities). It is the quick check of a backbone recipe (seconds),
before the full ``copgen evaluate``.

    python bench/condition_gain.py --model runs/backbone --cube train.zarr --cache latents.safetensors
"""

from __future__ import annotations

import argparse
import json

import torch

from copgen_core.bundle import load_model
from copgen_core.schedule import copgen_schedule
from transforms.dataset import CubeDataset

TARGETS = ("S2L2A_B01_B09", "S2L2A_B02_B03_B04_B08", "S2L2A_B05_B06_B07_B11_B12_B8A")
STATIC = ("DEM_DEM", "LULC_LULC", "3d_cartesian_lat_lon", "mean_timestamps")
SETS = {
    "static": STATIC,
    "static+s1": STATIC + ("S1RTC_vh_vv",),
    "static+s1+l1c": STATIC + ("S1RTC_vh_vv", "S2L1C_B01_B09_B10", "S2L1C_B02_B03_B04_B08",
                               "S2L1C_B05_B06_B07_B11_B12_B8A", "S2L1C_cloud_mask"),
}


@torch.no_grad()
def condition_gain(model_ref: str, cube: str, cache: str, steps: tuple[int, ...] = (250, 500, 750),
                   split: str = "val", seed: int = 0) -> dict[str, object]:
    """Per noise step and condition set: mean S2 L2A ε-MSE given / marginalised (see the module notes)."""
    model = load_model(model_ref)
    backbone = model.backbone
    keys = list(backbone.config.modalities)
    targets = tuple(k for k in TARGETS if k in keys)
    sets = {name: tuple(k for k in given if k in keys) for name, given in SETS.items()}
    ds = CubeDataset(cube, keys, split=split, latent_cache=cache)  # type: ignore[arg-type]
    schedule = copgen_schedule()
    gen = torch.Generator().manual_seed(seed)
    sums: dict[str, dict[int, float]] = {name: dict.fromkeys(steps, 0.0) for name in ("none", *sets)}
    for i in range(len(ds)):
        item = ds[i]
        clean = {}
        for m in backbone.modalities:
            x = item[m.key].unsqueeze(0)
            clean[m.key] = x if m.is_scalar else x[:, :m.latent_shape[0]] * model.vae(m.key).scale_factor
        noise = {k: torch.randn(v.shape, generator=gen) for k, v in clean.items()}
        for n in steps:
            nt = torch.tensor([n])
            for name in sums:
                given = () if name == "none" else sets[name]
                lat, ts = [], []
                for m in backbone.modalities:
                    if m.key in targets:
                        lat.append(schedule.add_noise(clean[m.key], noise[m.key], nt))
                        ts.append(float(n))
                    elif m.key in given:
                        lat.append(clean[m.key])
                        ts.append(0.0)
                    else:
                        lat.append(noise[m.key])
                        ts.append(1000.0)
                out = backbone(lat, ts)
                err = sum(float(((out[keys.index(k)] - noise[k]) ** 2).mean()) for k in targets) / len(targets)
                sums[name][n] += err / len(ds)
    ratios = {name: {n: sums[name][n] / sums["none"][n] for n in steps} for name in sets}
    return {"samples": len(ds), "mse": sums, "ratio_vs_marginalised": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--cube", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    result = condition_gain(args.model, args.cube, args.cache, split=args.split)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
