"""The bundle stage's decoder work: synthesis refit and decoder-only fine-tunes of a bundle's VAEs.

Both change decoders only (the encoders, hence the latent space a backbone learned, stay the same
bytes), so they run after the backbone, in ``copgen train-bundled``'s bundle stage or on a finished
bundle (``--decoders-only``). What was done is recorded in the bundle provenance (``bundle.json`` →
``recipe.synthesis_refit``, ``recipe.decoder_finetune``, ``recipe.vaes.<key>``), so a rerun redoes only
what a changed setting needs. The work itself is :func:`copgen_core.vae.refit_synthesis` and
:func:`copgen_core.training.decoder_finetune.finetune_decoder`; this module wires them to a cube.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

SYNTHESIS_SMOOTH = 0.005
"""Smoothness of the shortcut synthesis refitted into the bundle's VAEs (``copgen_core.vae.refit_synthesis``),
with the weight of the pairs across cell edges tuned so that decodes of white-noise latents show no cell
grid (:data:`SYNTHESIS_EDGE_RATIO`). Training moves the synthesis and loses the start's smoothness; the
session-5 refit (``smooth`` 0.05, edges weighted like the rest) left S2 L2A 10 m decodes of generated
latents with a cell-edge ratio of 1.64 at 26.80 dB; this one gives 0.98 at 27.07 dB (docs/training.md)."""
SYNTHESIS_EDGE_RATIO = 1.0
SYNTHESIS_SAMPLES = 64
"""Training windows (whole, evenly spread) the synthesis is refitted on."""


DECODER_FINETUNE: dict[str, dict[str, Any]] = {
    "S2L2A_B02_B03_B04_B08": {"steps": 2000, "lr": 1e-3, "batch_size": 8, "crop": 64, "edge_penalty": 0.05},
}
"""Decoder-only fine-tunes of the bundle stage (:class:`copgen_core.training.decoder_finetune.DecoderFinetune`
settings; MSE on all training windows, Adam with cosine decay, a penalty that keeps the latent cell grid
out of decoded white noise). The encoder, hence the backbone's latent space, stays fixed. The S2 L2A
10 m VAE has the issue's PSNR target; its decoder network had learned little in the VAE stage
(docs/training.md, *Decoder fine-tune*)."""


def finetune_setting(key: str) -> dict[str, Any] | None:
    from copgen_core.training.decoder_finetune import DecoderFinetune

    kwargs = DECODER_FINETUNE.get(key)
    return None if kwargs is None else {**DecoderFinetune(**kwargs).to_dict(), "images": "train, whole windows"}


def decoder_settings() -> dict[str, Any]:
    return {k: finetune_setting(k) for k in sorted(DECODER_FINETUNE)}


def refit_setting() -> dict[str, Any]:
    """What the synthesis refit of :func:`apply_decoders` does (recorded as ``recipe.synthesis_refit``)."""
    return {"smooth": SYNTHESIS_SMOOTH, "noise_edge_ratio_target": SYNTHESIS_EDGE_RATIO,
            "samples": f"train, whole windows, {SYNTHESIS_SAMPLES} evenly spaced"}


def held_out_psnr(vae: Any, cube: Path, key: str) -> float | None:
    """Pooled [-1, 1] PSNR (dB) of ``vae`` on the held-out windows of ``cube`` (None: no held-out window)."""
    import numpy as np
    import torch

    from transforms.dataset import CubeDataset, DatasetError

    try:
        val = CubeDataset(str(cube), [key], split="val")
    except DatasetError:  # no held-out window (small worlds)
        return None
    with torch.no_grad():
        sq = [float(((vae.decode_unscaled(torch.chunk(vae.moments(x[None]), 2, dim=1)[0]) - x[None]) ** 2).sum())
              for x in (val[i][key] for i in range(len(val)))]
        count = sum(val[i][key].numel() for i in range(len(val)))
    return round(float(10 * np.log10(4.0 / (sum(sq) / count))), 2)


def apply_decoders(vaes: dict[str, Any], cube: Path, info: dict[str, Any]) -> list[str]:
    """The bundle stage's decoder work on ``vaes``, in place, recorded in the bundle provenance ``info``.

    1. Every shortcut VAE's synthesis is refitted (``copgen_core.vae.refit_synthesis``, edge weight tuned
       to :data:`SYNTHESIS_EDGE_RATIO`), unless ``info`` records the current setting already.
    2. The decoders of :data:`DECODER_FINETUNE` are fine-tuned (``finetune_decoder``), unless ``info``
       records their current setting and they were not refitted in step 1.
    3. Every changed VAE gets ``psnr_bundled`` (held out) and ``noise_edge_ratio`` in ``recipe.vaes``.

    So a rerun on a finished bundle changes nothing, and a new setting redoes only what depends on it.
    Returns the keys of the VAEs that changed.
    """
    import torch

    from copgen_core.training.decoder_finetune import DecoderFinetune, finetune_decoder
    from copgen_core.vae import noise_edge_ratio, refit_synthesis
    from transforms.dataset import CubeDataset, spread_images

    torch.set_num_threads(os.cpu_count() or 1)
    recipe = info.setdefault("recipe", {})
    table = recipe.setdefault("vaes", {})
    refit_current = recipe.get("synthesis_refit") == refit_setting()
    tuned = recipe.get("decoder_finetune") or {}
    refit = [k for k, v in sorted(vaes.items()) if v.shortcut_out is not None and not refit_current]
    finetune = [k for k in sorted(DECODER_FINETUNE) if k in vaes and (k in refit or tuned.get(k) != finetune_setting(k))]
    for key in refit:
        fit = refit_synthesis(vaes[key], spread_images(CubeDataset(str(cube), [key], split="train"), key,
                                                       SYNTHESIS_SAMPLES),
                              smooth=SYNTHESIS_SMOOTH, edge_weight=None, target=SYNTHESIS_EDGE_RATIO)
        table.setdefault(key, {})["edge_weight"] = round(fit.edge_weight, 3)
        click.echo(f"  {key}: synthesis refitted, edge weight {fit.edge_weight:.2f}, "
                   f"noise edge ratio {fit.noise_edge_ratio:.3f}")
    for key in finetune:
        ds = CubeDataset(str(cube), [key], split="train")
        images = torch.stack([ds[i][key] for i in range(len(ds))])
        cfg = DecoderFinetune(**DECODER_FINETUNE[key])
        t0 = time.perf_counter()
        stats = finetune_decoder(vaes[key], images, cfg)
        table.setdefault(key, {})["decoder_finetune_mse"] = [round(stats["mse_first"], 5), round(stats["mse_last"], 5)]
        click.echo(f"  {key}: decoder fine-tuned, {cfg.steps} steps on {len(ds)} windows in "
                   f"{time.perf_counter() - t0:.0f} s (batch MSE {stats['mse_first']:.4f} -> {stats['mse_last']:.4f})")
    for key in sorted({*refit, *finetune}):
        table[key]["noise_edge_ratio"] = round(noise_edge_ratio(vaes[key]), 3)
        psnr = held_out_psnr(vaes[key], cube, key)
        if psnr is not None:
            table[key]["psnr_bundled"] = psnr
    recipe["synthesis_refit"] = refit_setting()
    recipe["decoder_finetune"] = decoder_settings()
    return sorted({*refit, *finetune})
