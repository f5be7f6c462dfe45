"""Quick check of generation from the static conditions: S2 L2A from {DEM, LULC, location, date} vs none.

``copgen evaluate`` takes ~20 minutes; this takes a few and answers the question a backbone recipe
change is about: do the static conditions make the generated S2 L2A closer to the truth, and is the
ensemble still spread around it? For ``--samples`` held-out samples of a training cube (conditions
from its latent cache, truth from its pixels), the three S2 L2A groups are generated ``--members``
times with the static conditions given and with nothing given, decoded, and scored in the cube's
normalised pixel space (an affine map of reflectance, the same for every S2 band):

``mae_mean``
    MAE of the ensemble mean; ``ratio`` is static over unconditional (the issue asks for <= 0.7);
``mae_members``
    mean MAE of single members;
``spread``
    per-pixel standard deviation across members, averaged;
``coverage``
    share of true pixels inside the members' 5-95 % interval (needs >= 8 members to mean much);
``latent_std`` / ``latent_corr``
    std and horizontal neighbour correlation of the generated first latent channel of the 10 m group
    (real latents: ``real_latent_std`` / ``real_latent_corr``), i.e. whether samples have structure.

``--guidance`` lists classifier-free guidance weights to score for the static set (1 = none).

    python bench/static_generation.py --model models/bundled --cube out/train-bundled/train.zarr \\
        --cache out/train-bundled/backbone-only/latents.safetensors --guidance 1,2 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from copgen_core.backbone import CopgenBackbone  # noqa: E402
from copgen_core.bundle import load_model  # noqa: E402
from copgen_core.generate import CopgenModel, sample_latents  # noqa: E402
from copgen_core.seeding import sample_noise  # noqa: E402
from transforms.dataset import CubeDataset  # noqa: E402

TARGETS = ("S2L2A_B02_B03_B04_B08", "S2L2A_B05_B06_B07_B11_B12_B8A", "S2L2A_B01_B09")
STATIC = ("DEM_DEM", "LULC_LULC", "3d_cartesian_lat_lon", "mean_timestamps")
FIRST = TARGETS[0]


def _corr(z: np.ndarray) -> float:
    """Horizontal neighbour correlation of (N, H, W) fields, each centred on its own mean."""
    a = z - z.mean(axis=(1, 2), keepdims=True)
    return float((a[:, :, 1:] * a[:, :, :-1]).mean() / (a**2).mean())


def held_out_samples(model: CopgenModel, cube: str, cache: str, samples: int,
                     split: str = "val") -> tuple[list[int], dict[str, torch.Tensor], CubeDataset]:
    """``samples`` evenly spaced samples of ``split``: (their indices, clean latents per modality, the pixel dataset).

    The clean latents (R, C, H, W) are the cache's posterior means times each VAE's scale factor (scalars as
    they are), in ``model.backbone``'s modality order; ``pixels[i][key]`` is sample ``i``'s normalised truth.

    Raises
    ------
    SystemExit
        If the cache does not hold this cube's samples, or the split has no sample complete in every modality.
    """
    backbone = model.backbone
    keys = list(backbone.config.modalities)
    latents_ds = CubeDataset(cube, keys, split=split, latent_cache=cache)  # type: ignore[arg-type]
    # the same modality list gives the same samples (complete in all of them), in the same order
    pixels_ds = CubeDataset(cube, keys, split=split)  # type: ignore[arg-type]
    if [r.name for r in pixels_ds.refs] != [r.name for r in latents_ds.refs]:
        raise SystemExit(f"{cache} does not hold the latents of {cube}'s held-out samples; encode it again "
                         "(copgen train-bundled --until cache, or --backbone-only)")
    # evenly spaced, so a training split's first windows (all dates of a few windows) do not dominate
    chosen = sorted({int(i) for i in np.linspace(0, len(latents_ds) - 1, min(samples, len(latents_ds)))})
    if not chosen:
        raise SystemExit(f"{cube} has no held-out sample complete in {keys}; preprocess the training cube first")
    clean: dict[str, torch.Tensor] = {}
    for m in backbone.modalities:
        rows = []
        for i in chosen:
            x = latents_ds[i][m.key].unsqueeze(0)
            rows.append(x if m.is_scalar else x[:, : m.latent_shape[0]] * model.vae(m.key).scale_factor)
        clean[m.key] = torch.cat(rows)
    return chosen, clean, pixels_ds


def member_noise(backbone: CopgenBackbone, seed: int, chosen: list[int],
                 members: int) -> Callable[[str, str], torch.Tensor]:
    """``noise(key, stream)``: keyed noise (R, C, H, W) for ``members`` rows per chosen sample, sample-major."""
    row_keys = [i for i in chosen for _ in range(members)]
    row_members = [j for _ in chosen for j in range(members)]

    def noise(key: str, stream: str) -> torch.Tensor:
        m = next(m for m in backbone.modalities if m.key == key)
        return sample_noise(m.latent_shape, seed, row_keys, row_members, key, stream)

    return noise


@torch.no_grad()
def static_generation(model_ref: str, cube: str, cache: str, samples: int = 16, members: int = 4,
                      steps: int = 20, guidance: tuple[float, ...] = (1.0,), seed: int = 0,
                      split: str = "val") -> dict[str, object]:
    """Scores per run (``unconditional``, ``static w=...``) and group; see the module notes.

    ``split="train"`` scores training samples instead: a model much better there than on held-out
    samples has memorised its training windows rather than learned the conditions.
    """
    model = load_model(model_ref)
    backbone = model.backbone
    keys = list(backbone.config.modalities)
    targets = [k for k in TARGETS if k in keys]
    static = [k for k in STATIC if k in keys]
    chosen, clean, pixels_ds = held_out_samples(model, cube, cache, samples, split)
    truth = {k: np.stack([pixels_ds[i][k].numpy() for i in chosen]) for k in targets}
    noise = member_noise(backbone, seed, chosen, members)

    def run(given: list[str], w: float) -> dict[str, object]:
        conditions = {k: clean[k].repeat_interleave(members, dim=0) for k in given}
        marginal = {k: noise(k, "marginal") for k in keys if k not in given and k not in targets}
        unguided = {k: noise(k, "guidance") for k in given} if w != 1.0 else None
        out = sample_latents(backbone, {k: noise(k, "noise") for k in targets}, conditions, marginal,
                             steps=steps, guidance=w, unconditional=unguided)
        scores: dict[str, object] = {}
        for k in targets:
            pix = model.vae(k).decode(out[k]).float().numpy()
            pix = pix.reshape(len(chosen), members, *pix.shape[1:])
            t = truth[k]
            lo, hi = np.quantile(pix, [0.05, 0.95], axis=1)
            scores[k] = {
                "mae_mean": float(np.abs(pix.mean(axis=1) - t).mean()),
                "mae_members": float(np.abs(pix - t[:, None]).mean()),
                "spread": float(pix.std(axis=1).mean()),
                "coverage": float(((t >= lo) & (t <= hi)).mean()),
            }
        z = out[FIRST][:, 0].numpy()
        scores["latent_std"] = float(z.std())
        scores["latent_corr"] = _corr(z)
        return scores

    results: dict[str, object] = {"split": split, "samples": len(chosen), "members": members, "steps": steps}
    z = clean[FIRST][:, 0].numpy()
    results["real_latent_std"], results["real_latent_corr"] = float(z.std()), _corr(z)
    results["unconditional"] = run([], 1.0)
    for w in guidance:
        results[f"static w={w:g}"] = run(static, w)
    base = results["unconditional"]
    for name in [n for n in results if n.startswith("static")]:
        r = results[name]
        for k in targets:
            r[k]["ratio"] = r[k]["mae_mean"] / base[k]["mae_mean"]  # type: ignore[index]
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/bundled")
    ap.add_argument("--cube", required=True, help="the training cube (copgen train-bundled --until preprocess)")
    ap.add_argument("--cache", required=True, help="its latent cache for this model's VAEs")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", default="1", help="comma-separated guidance weights for the static set")
    ap.add_argument("--split", choices=("val", "train"), default="val",
                    help="score held-out samples (default) or training ones (memorisation check)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    weights = tuple(float(w) for w in args.guidance.split(","))
    res = static_generation(args.model, args.cube, args.cache, args.samples, args.members, args.steps, weights,
                            split=args.split)
    print(f"real first-channel latent std {res['real_latent_std']:.3f} corr {res['real_latent_corr']:.3f}")
    for name, r in res.items():
        if not isinstance(r, dict):
            continue
        groups = " | ".join(
            f"{k.split('_', 1)[1][:11]}: mean {v['mae_mean']:.3f}" + (f" ratio {v['ratio']:.3f}" if "ratio" in v else "")
            + f" members {v['mae_members']:.3f} spread {v['spread']:.3f} cover {v['coverage']:.2f}"
            for k, v in r.items() if isinstance(v, dict))
        print(f"{name:>14}: latent std {r['latent_std']:.3f} corr {r['latent_corr']:.3f} | {groups}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
