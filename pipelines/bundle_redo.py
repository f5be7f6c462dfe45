"""Work on a finished bundle of ``copgen train-bundled``, in place: ``--decoders-only`` and ``--backbone-only``.

Both check that the training cube under ``--work`` is the one the bundle was trained on
(:func:`bundle_info_for_cube`) and write the new bundle with the recipe's size check and atomic swap.
Engine-neutral functions; the CLI is :mod:`pipelines.cmd_train_bundled`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from pipelines.bundle_decoders import apply_decoders
from pipelines.cmd_train_bundled import (
    IMAGE_KEYS,
    LATENT_STD,
    Recipe,
    WorkPaths,
    backbone_arguments,
    build_cache,
    recipe_config,
    save_checked,
    train_backbone,
)


def bundle_info_for_cube(out: Path, cube: Path) -> dict[str, Any]:
    """``bundle.json`` of the recipe's bundle at ``out``, after checking that ``cube`` is its training cube.

    The cube's :attr:`~transforms.cube_spec.CubeSpec.content_hash` must be the one ``bundle.json``
    records (bundles from before that hash: the count of complete training samples; the hash is then
    added to the returned info).

    Raises
    ------
    click.ClickException
        If ``out`` is not a bundle of this recipe, or ``cube`` is another cube.
    """
    from copgen_core.bundle import BUNDLE_FILE
    from transforms.cube import load_spec
    from transforms.dataset import CubeDataset

    meta_path = out / BUNDLE_FILE
    info = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if not info.get("recipe"):
        raise click.ClickException(f"{out} is not a bundle written by train-bundled; nothing to redo")
    data = info.setdefault("data", {})
    spec = load_spec(str(cube))
    want = data.get("cube_content_hash")
    if want is not None and want != spec.content_hash:
        raise click.ClickException(f"{cube} is not the cube {out} was trained on (content hash "
                                   f"{spec.content_hash[:12]}..., bundle {str(want)[:12]}...); run `copgen "
                                   "train-bundled --until preprocess` with the bundle's world first")
    if want is None:  # bundles written before content hashes: the windows are the check
        samples = len(CubeDataset(str(cube), IMAGE_KEYS, split="all"))
        if data.get("samples") is not None and samples != int(data["samples"]):
            raise click.ClickException(f"{cube} has {samples} complete training samples, the bundle was trained on "
                                       f"{data['samples']}: not its cube; run `copgen train-bundled --until "
                                       "preprocess` with the bundle's world first")
        data["cube_content_hash"] = spec.content_hash
    return info


def redo_decoders(out: Path, cube: Path) -> dict[str, dict[str, float]]:
    """Redo the bundle stage's decoder work on the bundle at ``out``, in place, with the current settings.

    The decoder fine-tunes of :data:`pipelines.bundle_decoders.DECODER_FINETUNE` that ``bundle.json`` does not record yet run
    on the bundle's decoders, then every shortcut VAE's synthesis is refitted. Only decoders change (fp16
    weights are loaded to fp32 and written back as fp16): the encoders, hence the backbone's latent
    space, are the same bytes. ``cube`` must be the
    training cube the bundle was trained on: its :attr:`~transforms.cube_spec.CubeSpec.content_hash` is
    checked against ``bundle.json`` (bundles from before that hash: the count of complete training samples).

    Raises
    ------
    click.ClickException
        If ``out`` is not a bundle of this recipe, or ``cube`` is another cube.
    """
    from copgen_core.checkpoints import load_backbone, load_vae

    info = bundle_info_for_cube(out, cube)
    backbone = load_backbone(out / "backbone")
    vaes = {k: load_vae(out / "vae" / k, k) for k in sorted(p.name for p in (out / "vae").iterdir())}
    changed = apply_decoders(vaes, cube, info)
    if not changed:
        return {}
    for key in ("size_bytes", "backbone_sha256"):
        info.pop(key, None)
    save_checked(out, backbone, vaes, info)
    return {k: info["recipe"]["vaes"][k] for k in changed}


def redo_backbone(out: Path, work: Path, *, steps: int, batch_size: int, seed: int) -> dict[str, Any] | None:
    """Train the backbone of the recipe's bundle at ``out`` again with the current settings, in place.

    The bundle's VAEs stay as they are (same weights) except for their scale factors, which move to
    :data:`LATENT_STD` (from the ``latent_std`` its ``bundle.json`` records, 1 when absent). Their
    latents are encoded from the training cube ``<work>/train.zarr`` (checked to be the bundle's by
    :func:`bundle_info_for_cube`) into ``<work>/backbone-only/``, where ``copgen train`` runs with
    :func:`backbone_arguments` (resumable like the full recipe's backbone stage). Returns the new
    ``recipe.backbone_only`` record, or None when the bundle already has these settings.

    Raises
    ------
    click.ClickException
        As :func:`bundle_info_for_cube`; when training fails.
    """
    from copgen_core.checkpoints import load_backbone, load_vae, save_vae

    cube = WorkPaths(work).cube
    info = bundle_info_for_cube(out, cube)
    keys = tuple(k for k in IMAGE_KEYS if (out / "vae" / k).is_dir())
    identity = {"steps": steps, "batch_size": batch_size, "seed": seed, "latent_std": LATENT_STD,
                "settings": backbone_arguments(steps, keys)}
    if (info["recipe"].get("backbone_only") or {}).get("identity") == identity:
        return None
    t0 = time.perf_counter()
    paths = WorkPaths(work / "backbone-only", cube_path=cube)
    factor = LATENT_STD / float(info.get("config", {}).get("latent_std", 1.0))
    vaes = {}
    for key in keys:
        vae = load_vae(out / "vae" / key, key).float()
        vae.scale_factor = vae.scale_factor * factor
        save_vae(vae, paths.vaes / key, key, overwrite=True)
        vaes[key] = vae
    samples = build_cache(paths, keys, batch_size)
    train_backbone(paths, Recipe(paths.work), identity, steps=steps, batch_size=batch_size, seed=seed,
                    modalities=keys)
    training = json.loads((paths.run / "bundle.json").read_text())
    record = {"identity": identity, "seconds": round(time.perf_counter() - t0, 1), "samples": samples,
              "scale_factor_change": factor}
    info["config"] = {**info.get("config", {}), **recipe_config(batch_size, int(info.get("config", {}).get("jobs", 2)))}
    info["recipe"]["backbone_training"] = training
    info["recipe"]["backbone_only"] = record
    info["evaluation"] = training.get("evaluation")
    info["steps"] = steps
    for key in ("size_bytes", "backbone_sha256"):
        info.pop(key, None)
    save_checked(out, load_backbone(paths.run / "backbone"), vaes, info)
    return record
