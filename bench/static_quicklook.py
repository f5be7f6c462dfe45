"""Look at generation from the static conditions: real window | members | ensemble mean, true colour.

``bench/static_generation.py`` scores; this draws. For ``--samples`` held-out samples of the training
cube (evenly spaced), S2 L2A 10 m is generated ``--members`` times from {DEM, LULC, location, date}
(conditions from the latent cache, as the quick measure does) and a JPEG/PNG grid is written: one row per
sample, columns = the real window, the first three members, the ensemble mean (B04/B03/B02 reflectance
times ``--gain``, clipped to [0, 1]).

    python bench/static_quicklook.py --model models/bundled --out out/static.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.static_generation import STATIC, held_out_samples, member_noise  # noqa: E402
from copgen_core.bundle import load_model  # noqa: E402
from copgen_core.generate import sample_latents  # noqa: E402
from copgen_core.normalize import denormalize  # noqa: E402

TARGET = "S2L2A_B02_B03_B04_B08"
WORK = Path(__file__).resolve().parents[1] / "out" / "train-bundled"


def true_colour(normalised: np.ndarray, gain: float) -> np.ndarray:
    """(4, H, W) normalised S2 10 m bands (B02, B03, B04, B08) -> (H, W, 3) uint8 true colour."""
    reflectance = np.asarray(denormalize(TARGET, normalised[None]))[0] / 10000.0
    return (np.clip(reflectance[[2, 1, 0]].transpose(1, 2, 0) * gain, 0, 1) * 255).astype(np.uint8)


@torch.no_grad()
def static_quicklook(model_ref: str, cube: str, cache: str, samples: int = 6, members: int = 4, steps: int = 20,
                     seed: int = 0, gain: float = 2.5) -> np.ndarray:
    """The (rows * 192, 5 * 192, 3) uint8 grid described in the module notes."""
    model = load_model(model_ref)
    backbone = model.backbone
    keys = list(backbone.config.modalities)
    chosen, clean, pixels = held_out_samples(model, cube, cache, samples)
    noise = member_noise(backbone, seed, chosen, members)

    given = [k for k in STATIC if k in keys]
    out = sample_latents(backbone, {TARGET: noise(TARGET, "noise")},
                         {k: clean[k].repeat_interleave(members, dim=0) for k in given},
                         {k: noise(k, "marginal") for k in keys if k not in given and k != TARGET}, steps=steps)
    gen = model.vae(TARGET).decode(out[TARGET]).float().numpy()
    gen = gen.reshape(len(chosen), members, *gen.shape[1:])
    grid = []
    for s, i in enumerate(chosen):
        tiles = [pixels[i][TARGET].numpy(), *gen[s, : min(3, members)], gen[s].mean(axis=0)]
        grid.append(np.concatenate([true_colour(t, gain) for t in tiles], axis=1))
    return np.concatenate(grid, axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/bundled")
    ap.add_argument("--cube", default=str(WORK / "train.zarr"))
    ap.add_argument("--cache", default=str(WORK / "backbone-only" / "latents.safetensors"),
                    help="the cube's latent cache for this model's VAEs (copgen train-bundled --backbone-only)")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--gain", type=float, default=2.5)
    ap.add_argument("--out", type=Path, required=True, help="image file (.png or .jpg)")
    args = ap.parse_args()
    if not Path(args.cache).is_file():
        raise SystemExit(f"no latent cache at {args.cache}: run `copgen train-bundled --backbone-only` once first")
    grid = static_quicklook(args.model, args.cube, args.cache, args.samples, args.members, args.steps, gain=args.gain)
    Image.fromarray(grid).save(args.out)
    print(f"wrote {args.out} ({len(grid) // 192} samples)")


if __name__ == "__main__":
    main()
