"""Model bundles: a backbone and its VAEs in one directory, and the ``random:`` test models.

Layout of a bundle directory (all in our checkpoint format, see :mod:`copgen_core.checkpoints`)::

    <bundle>/backbone/{model.safetensors,config.json}
    <bundle>/vae/<modality key>/{model.safetensors,config.json}
    <bundle>/bundle.json            # name, description, training provenance (optional)

A model reference is a string: a bundle directory; an official ``.pth`` / converted backbone directory
(then the VAEs come from ``--vae-dir`` with the official folder names); or ``random:<preset>[:seed]``,
a randomly initialised model of a preset with tiny VAEs, for tests and smoke runs (its output is noise).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from copgen_core.backbone import CopgenBackbone
from copgen_core.checkpoints import load_backbone, save_backbone, save_vae, sha256_file
from copgen_core.generate import CopgenModel
from copgen_core.modalities import BY_KEY, resolve
from copgen_core.presets import backbone_preset, vae_preset
from copgen_core.vae import KLVAE

BUNDLE_FILE = "bundle.json"


class BundleError(ValueError):
    """A model reference cannot be resolved; the message says what was expected."""


def random_model(preset: str = "tiny", seed: int = 0, *, modalities: tuple[str, ...] | None = None,
                 vae_preset_name: str = "tiny") -> tuple[CopgenBackbone, dict[str, KLVAE]]:
    """A randomly initialised backbone and VAEs (deterministic in ``seed``): for tests and smoke runs."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        backbone = CopgenBackbone(backbone_preset(preset, modalities))
        vaes = {}
        for key in backbone.config.modalities:
            mod = BY_KEY[key]
            if mod.is_image:
                vaes[key] = KLVAE(vae_preset(vae_preset_name, key), scale_factor=mod.scale_factor)
    finally:
        torch.random.set_rng_state(gen_state)
    return backbone.eval(), {k: v.eval() for k, v in vaes.items()}


def save_bundle(directory: str | Path, backbone: CopgenBackbone, vaes: dict[str, KLVAE], *,
                info: dict[str, object] | None = None, dtype: torch.dtype | None = None,
                overwrite: bool = False) -> Path:
    """Write a bundle directory; returns it. ``dtype`` (e.g. ``torch.float16``) shrinks the files."""
    directory = Path(directory)
    save_backbone(backbone, directory / "backbone", dtype=dtype, overwrite=overwrite)
    for key, vae in vaes.items():
        save_vae(vae, directory / "vae" / key, key, dtype=dtype, overwrite=overwrite)
    meta = dict(info or {})
    meta["backbone_sha256"] = sha256_file(directory / "backbone" / "model.safetensors")
    meta["modalities"] = list(backbone.config.modalities)
    (directory / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def model_hash(ref: str) -> str:
    """A short content hash of a model reference, for provenance (weights sha256, or the random spec)."""
    if ref.startswith("random:"):
        return ref
    path = Path(ref)
    if (path / BUNDLE_FILE).is_file():
        return str(json.loads((path / BUNDLE_FILE).read_text()).get("backbone_sha256", ""))[:16]
    if path.is_file():
        return sha256_file(path)[:16]
    cfg = path / "config.json"
    if cfg.is_file():
        return str(json.loads(cfg.read_text()).get("sha256", ""))[:16]
    raise BundleError(f"model {ref!r} is neither a bundle directory, a checkpoint nor 'random:<preset>'")


def load_model(ref: str, *, device: str = "cpu", dtype: str = "fp32", compile: bool = False,
               vae_dir: str | Path | None = None) -> CopgenModel:
    """Resolve a model reference into a :class:`CopgenModel` (VAEs load lazily, on first use).

    Parameters
    ----------
    ref:
        ``random:<preset>[:seed]``; a bundle directory; or a backbone checkpoint (official ``.pth``,
        safetensors, or our directory), in which case ``vae_dir`` holds one VAE per modality, either
        in our format under ``<vae_dir>/<modality key>/`` or official ``<vae_dir>/<vae_name>/model-50-ema.pth``.

    Raises
    ------
    BundleError
        When the reference names nothing loadable; the message lists the accepted forms.
    """
    if ref.startswith("random:"):
        parts = ref.split(":")
        preset = parts[1] if len(parts) > 1 and parts[1] else "tiny"
        seed = int(parts[2]) if len(parts) > 2 else 0
        backbone, vaes = random_model(preset, seed)
        return CopgenModel(backbone, dict(vaes), device=device, dtype=dtype, compile=compile)  # type: ignore[arg-type]
    path = Path(ref)
    if (path / BUNDLE_FILE).is_file():
        backbone = load_backbone(path / "backbone", device=device)
        vae_sources: dict[str, object] = {}
        for sub in sorted((path / "vae").iterdir()) if (path / "vae").is_dir() else []:
            vae_sources[resolve(sub.name).key] = sub
        return CopgenModel(backbone, vae_sources, device=device, dtype=dtype, compile=compile)  # type: ignore[arg-type]
    if not path.exists():
        raise BundleError(
            f"model {ref!r} does not exist; use 'bundled', a bundle directory (backbone/ + vae/), a backbone "
            "checkpoint (.pth, .safetensors or a converted directory) with --vae-dir, or 'random:tiny'"
        )
    backbone = load_backbone(path, device=device)
    vae_sources = {}
    if vae_dir is not None:
        root = Path(vae_dir)
        for key in backbone.config.modalities:
            mod = BY_KEY[key]
            if not mod.is_image:
                continue
            ours, official = root / key, root / f"{mod.vae_name}_latent_8" / "model-50-ema.pth"
            if ours.is_dir():
                vae_sources[key] = ours
            elif official.is_file():
                vae_sources[key] = official
    return CopgenModel(backbone, vae_sources, device=device, dtype=dtype, compile=compile)  # type: ignore[arg-type]

