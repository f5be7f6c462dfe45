"""Loading, saving and converting backbone and VAE weights.

Two formats:

- **Official**: a plain PyTorch state dict (``500000_nnet_ema.pth``, ``model-50-ema.pth``) with the
  official key names, or the same keys in a ``.safetensors`` file. ``.pth`` files are read with
  ``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickled
  objects, so a file that tries to run code is refused (:class:`CheckpointError` naming the file).
  A ``module.`` prefix (DataParallel/DDP) is stripped.
- **Ours**: a directory with ``model.safetensors`` and ``config.json``. The config records the
  architecture, the modality list and scale factors, the stored dtype, the official key order (so
  :func:`export_official` reproduces the source exactly) and the sha256 of ``model.safetensors``,
  which is verified on load.

Weights may be stored in fp16/bf16; loaders cast floating tensors to ``dtype`` (float32 by default).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from copgen_core.backbone import BackboneConfig, CopgenBackbone
from copgen_core.modalities import KEYS, resolve
from copgen_core.presets import BACKBONE_PRESETS, OFFICIAL_PARAMETER_COUNTS, backbone_preset
from copgen_core.vae import KLVAE, VAEConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "copgen"
FORMAT_VERSION = 1
HASH_CHUNK_BYTES = 1 << 24

Kind = Literal["backbone", "vae"]
ModelT = TypeVar("ModelT", bound=nn.Module)
KINDS: tuple[str, ...] = ("backbone", "vae")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the requested model; the message says why."""


# --------------------------------------------------------------------------------------- reading


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a plain state dict from ``.pth``/``.pt``/``.ckpt``/``.bin`` (torch) or ``.safetensors``.

    Parameters
    ----------
    path:
        The file. Torch files are loaded with ``map_location="cpu", weights_only=True``.

    Returns
    -------
    dict[str, Tensor]
        Keys in file order, with a leading ``module.`` stripped from every key that has it.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    CheckpointError
        If the file holds anything but tensors and plain containers (e.g. a pickle that would run
        code), is corrupt, or is not a flat ``{str: Tensor}`` mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (or is not a file)")
    if path.suffix == ".safetensors":
        try:
            raw: object = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"refused to load {path}: it holds objects other than tensors and plain containers, which "
                f"could run code when unpickled ({_first_line(exc)}). Only load checkpoints from sources you "
                "trust; re-save the plain state_dict (torch.save(model.state_dict(), ...)) or use safetensors"
            ) from exc
        except (RuntimeError, EOFError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {_first_line(exc)}") from exc
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in raw.items()
    ):
        raise CheckpointError(
            f"{path} does not hold a flat state dict {{str: Tensor}} (got {type(raw).__name__}); "
            "pass the file that torch.save(model.state_dict()) wrote"
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in raw.items()}


def _first_line(exc: BaseException) -> str:
    """The informative line of a torch.load error (``WeightsUnpickler error: ...`` when present)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].split(". Please use", 1)[0].strip()
    return lines[0] if lines else type(exc).__name__


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], *, source: str, hint: str) -> None:
    """Check that ``state`` has exactly the keys and shapes of ``model.state_dict()``.

    Raises
    ------
    CheckpointError
        Naming the missing and unexpected keys and every shape mismatch (expected vs got), followed
        by ``hint`` (what to do next).
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k}: expected {expected[k]}, got {got[k]}" for k in expected if k in got and expected[k] != got[k]]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_preview(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
    if wrong:
        parts.append(f"shape mismatches ({len(wrong)}): {_preview(wrong)}")
    raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts) + f". {hint}")


def _preview(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def _cast(state: Mapping[str, Tensor], dtype: torch.dtype | None) -> dict[str, Tensor]:
    if dtype is None:
        return dict(state)
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}


def _dtype_name(state: Mapping[str, Tensor]) -> str:
    names = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    return names[0] if len(names) == 1 else "mixed:" + ",".join(names)


# ------------------------------------------------------------------------------ config inference


def _block_count(state: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    return len({int(m.group(1)) for k in state if (m := pattern.match(k))})


def _require(state: Mapping[str, Tensor], key: str, what: str) -> Tensor:
    if key not in state:
        raise CheckpointError(f"this does not look like a {what} state dict: key {key!r} is missing")
    return state[key]


def infer_backbone_config(
    state: Mapping[str, Tensor],
    *,
    preset: str | None = None,
    num_heads: int | None = None,
    modalities: Sequence[str] | None = None,
) -> BackboneConfig:
    """Reconstruct the backbone architecture from an official state dict.

    Width, depth, MLP ratio and qkv bias follow from the shapes; the number of heads does not, so it
    comes from ``num_heads``, else from ``preset``, else from the one official preset (base, large,
    huge) with the same width and depth. With fewer than 12 patch embeddings the modality list
    cannot be told from the shapes either and must be given.

    Raises
    ------
    CheckpointError
        If the state dict is not a backbone, disagrees with ``preset``, or the heads or modalities
        cannot be determined (the message says which flag to pass).
    """
    embed_dim = int(_require(state, "pos_embed", "COP-GEN backbone").shape[-1])
    fc1 = _require(state, "mid_block.mlp.fc1.weight", "COP-GEN backbone")
    n_in, n_out = _block_count(state, "in_blocks"), _block_count(state, "out_blocks")
    if n_in != n_out:
        raise CheckpointError(f"backbone state dict has {n_in} in_blocks but {n_out} out_blocks; it is damaged")
    depth = 2 * n_in if n_in else 1
    n_mod = _block_count(state, "patch_embeds")
    if modalities is None:
        if n_mod != len(KEYS):
            raise CheckpointError(
                f"the checkpoint has {n_mod} patch embeddings, not {len(KEYS)}: pass the modality keys it was "
                "trained on (modalities=... / --modalities)"
            )
        modalities = KEYS
    if preset is not None:
        ref = backbone_preset(preset)
        if (ref.embed_dim, ref.depth) != (embed_dim, depth):
            raise CheckpointError(
                f"the checkpoint has embed_dim {embed_dim} and depth {depth}, but preset {preset!r} has "
                f"embed_dim {ref.embed_dim} and depth {ref.depth}; pick the matching preset or pass num_heads"
            )
    if num_heads is None:
        if preset is not None:
            num_heads = backbone_preset(preset).num_heads
        else:
            matches = [
                name
                for name in OFFICIAL_PARAMETER_COUNTS
                if (BACKBONE_PRESETS[name].embed_dim, BACKBONE_PRESETS[name].depth) == (embed_dim, depth)
            ]
            if len(matches) != 1:
                raise CheckpointError(
                    f"cannot tell the number of attention heads from the weights (embed_dim {embed_dim}, depth "
                    f"{depth} match no official preset); pass preset=... (--preset) or num_heads=... (--num-heads)"
                )
            num_heads = BACKBONE_PRESETS[matches[0]].num_heads
    try:
        return BackboneConfig(
            modalities=tuple(modalities),
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=fc1.shape[0] / embed_dim,
            qkv_bias="mid_block.attn.qkv.bias" in state,
        )
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"the inferred backbone config is invalid: {exc}") from exc


def infer_vae_config(state: Mapping[str, Tensor]) -> VAEConfig:
    """Reconstruct the VAE architecture from an official state dict (every size follows from shapes).

    Raises
    ------
    CheckpointError
        If the state dict is not a KL-VAE.
    """
    what = "KL-VAE"
    conv_in = _require(state, "encoder.conv_in.weight", what)
    ch = int(conv_in.shape[0])
    levels = _block_count(state, "encoder.down")
    mult = tuple(
        int(_require(state, f"encoder.down.{i}.block.0.conv1.weight", what).shape[0]) // ch for i in range(levels)
    )
    try:
        return VAEConfig(
            in_channels=int(conv_in.shape[1]),
            out_channels=int(_require(state, "decoder.conv_out.weight", what).shape[0]),
            ch=ch,
            ch_mult=mult,
            num_res_blocks=_block_count(state, "encoder.down.0.block"),
            z_channels=int(_require(state, "encoder.conv_out.weight", what).shape[0]) // 2,
            embed_dim=int(_require(state, "post_quant_conv.weight", what).shape[1]),
            shortcut="shortcut_in.weight" in state,
        )
    except ValueError as exc:
        raise CheckpointError(f"the inferred VAE config is invalid: {exc}") from exc


# ------------------------------------------------------------------------------ our format


def _resolve_pair(path: Path) -> tuple[Path, Path]:
    """(weights, config) paths for a directory or a weights file of our format."""
    if path.is_dir():
        return path / WEIGHTS_FILE, path / CONFIG_FILE
    if path.name == WEIGHTS_FILE:
        return path, path.with_name(CONFIG_FILE)
    return path, path.with_suffix(".json")


def is_copgen_checkpoint(path: str | Path) -> bool:
    """True if ``path`` is one of our checkpoints (a directory or weights file with its config.json)."""
    weights, config = _resolve_pair(Path(path))
    if not (weights.is_file() and config.is_file()):
        return False
    try:
        return json.loads(config.read_text()).get("format") == FORMAT_NAME
    except (json.JSONDecodeError, OSError, AttributeError):
        return False


def read_checkpoint(path: str | Path, *, verify: bool = True) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read one of our checkpoints: its config dict and its tensors (stored dtype, official key order).

    Parameters
    ----------
    path:
        The checkpoint directory, or its ``model.safetensors``.
    verify:
        Check the sha256 of the weights file against the config (reads the file twice).

    Raises
    ------
    FileNotFoundError
        If the weights or config file is missing.
    CheckpointError
        If the config is not ours, the hash does not match (the file was changed or truncated), or
        the weights cannot be read.
    """
    weights, config_path = _resolve_pair(Path(path))
    for p in (weights, config_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} is missing; a copgen checkpoint is a directory with {WEIGHTS_FILE} and {CONFIG_FILE} "
                "(write one with save_backbone/save_vae or `copgen convert`)"
            )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{config_path} is not a copgen checkpoint config (no \"format\": \"{FORMAT_NAME}\")")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} has format_version {config.get('format_version')}; this code reads {FORMAT_VERSION}"
        )
    if verify:
        digest = sha256_file(weights)
        if digest != config.get("sha256"):
            raise CheckpointError(
                f"{weights} has sha256 {digest}, but {config_path} records {config.get('sha256')}: the weights "
                "were modified or truncated; re-convert or re-download them"
            )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from exc
    order = config.get("key_order") or sorted(tensors)
    if set(order) != set(tensors):
        raise CheckpointError(f"{config_path} key_order does not list the keys of {weights}; re-convert it")
    return config, {k: tensors[k] for k in order}


def _write_checkpoint(
    state: Mapping[str, Tensor],
    out_dir: Path,
    meta: dict[str, Any],
    *,
    overwrite: bool,
) -> Path:
    out_dir = Path(out_dir)
    weights, config_path = out_dir / WEIGHTS_FILE, out_dir / CONFIG_FILE
    if not overwrite and (weights.exists() or config_path.exists()):
        raise FileExistsError(f"{out_dir} already holds a checkpoint; pass overwrite=True (--force) to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(weights))
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        **meta,
        "dtype": _dtype_name(tensors),
        "num_parameters": int(sum(v.numel() for v in tensors.values())),
        "weights": WEIGHTS_FILE,
        "sha256": sha256_file(weights),
        "key_order": list(tensors),
    }
    config_path.write_text(json.dumps(config, indent=1) + "\n")
    return out_dir


def _backbone_meta(config: BackboneConfig, source: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "kind": "backbone",
        "config": config.to_dict(),
        "modalities": list(config.modalities),
        "scale_factors": {k: resolve(k).scale_factor for k in config.modalities},
        **({"source": dict(source)} if source else {}),
    }


def _vae_meta(
    config: VAEConfig, modality: str, scale_factor: float, source: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "kind": "vae",
        "config": config.to_dict(),
        "modality": modality,
        "scale_factor": scale_factor,
        **({"source": dict(source)} if source else {}),
    }


def save_backbone(
    model: CopgenBackbone, out_dir: str | Path, *, dtype: torch.dtype | None = None, overwrite: bool = False
) -> Path:
    """Write ``model`` as one of our checkpoints (``model.safetensors`` + ``config.json``).

    Parameters
    ----------
    dtype:
        Store floating weights in this dtype (e.g. ``torch.bfloat16`` halves the size); ``None``
        keeps the model's dtype.
    overwrite:
        Replace an existing checkpoint in ``out_dir``.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    FileExistsError
        If ``out_dir`` already holds a checkpoint and ``overwrite`` is False.
    """
    return _write_checkpoint(
        _cast(model.state_dict(), dtype), Path(out_dir), _backbone_meta(model.config, None), overwrite=overwrite
    )


def save_vae(
    model: KLVAE,
    out_dir: str | Path,
    modality: str,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a VAE as one of our checkpoints, recording its modality and ``model.scale_factor``.

    Raises
    ------
    KeyError
        On an unknown modality.
    FileExistsError
        If ``out_dir`` already holds a checkpoint and ``overwrite`` is False.
    """
    meta = _vae_meta(model.config, resolve(modality).key, model.scale_factor, None)
    return _write_checkpoint(_cast(model.state_dict(), dtype), Path(out_dir), meta, overwrite=overwrite)


# ---------------------------------------------------------------------------------- loading


def _expect_kind(config: Mapping[str, Any], kind: str, path: Path) -> None:
    if config.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {config.get('kind')!r} checkpoint, not a {kind!r} one")


def _finish(
    model: ModelT,
    state: Mapping[str, Tensor],
    dtype: torch.dtype | None,
    source: str,
    hint: str,
    device: str | torch.device,
) -> ModelT:
    """Check ``state``, then give a meta-device ``model`` fresh copies of its tensors; move and eval.

    The copies matter: tensors viewed out of a safetensors buffer are not SIMD-aligned, which changes
    the last bits of CPU matmuls; fresh allocations give the same numbers whatever the file format.
    """
    check_state_dict(model, state, source=source, hint=hint)
    owned = {
        k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype, copy=True)
        for k, v in state.items()
    }
    model.load_state_dict(owned, strict=True, assign=True)
    rebuild = getattr(model, "rebuild_buffers", None)
    if rebuild is not None:  # buffers that are not in state dicts are still on the meta device
        rebuild(device)
    return model.to(device).eval()


def load_backbone(
    path: str | Path,
    *,
    preset: str | None = None,
    num_heads: int | None = None,
    modalities: Sequence[str] | None = None,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device = "cpu",
    verify: bool = True,
) -> CopgenBackbone:
    """Build a :class:`CopgenBackbone` from our checkpoint or an official state dict.

    Parameters
    ----------
    path:
        Our checkpoint directory (architecture from its config.json), or an official ``.pth`` /
        ``.safetensors`` state dict (architecture inferred; see :func:`infer_backbone_config` for
        ``preset``, ``num_heads`` and ``modalities``, which only apply to official files).
    dtype:
        Cast floating weights to this dtype (float32 by default); ``None`` keeps the stored dtype.
    device:
        Where the model ends up.
    verify:
        Check our checkpoint's sha256.

    Returns
    -------
    CopgenBackbone
        In eval mode, SDPA attention.

    Raises
    ------
    FileNotFoundError, CheckpointError
        If the file is missing or unreadable, or its keys/shapes do not fit (naming them).
    """
    path = Path(path)
    if is_copgen_checkpoint(path):
        meta, state = read_checkpoint(path, verify=verify)
        _expect_kind(meta, "backbone", path)
        config = BackboneConfig.from_dict(meta["config"])
        hint = f"{path}/{CONFIG_FILE} does not describe these weights; re-convert the checkpoint"
    else:
        state = read_state_dict(path)
        config = infer_backbone_config(state, preset=preset, num_heads=num_heads, modalities=modalities)
        hint = "check --preset/--num-heads/--modalities against the model that wrote the checkpoint"
    with torch.device("meta"):
        model = CopgenBackbone(config)
    return _finish(model, state, dtype, str(path), hint, device)


def load_vae(
    path: str | Path,
    modality: str | None = None,
    *,
    scale_factor: float | None = None,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device = "cpu",
    verify: bool = True,
) -> KLVAE:
    """Build a :class:`KLVAE` from our checkpoint or an official state dict.

    Parameters
    ----------
    path:
        Our checkpoint directory, or an official ``.pth``/``.safetensors`` VAE state dict
        (architecture inferred from shapes).
    modality:
        The modality the VAE serves. For our checkpoints it is optional and, if given, must match
        the recorded one. For official files it sets the scale factor (registry value) and is
        checked against the input channels.
    scale_factor:
        Override the scale factor (otherwise from our config or the modality registry).
    dtype, device, verify:
        As in :func:`load_backbone`.

    Raises
    ------
    FileNotFoundError, CheckpointError
        If the file is missing or unreadable, does not fit, or belongs to another modality.
    ValueError
        If an official file is given with neither ``modality`` nor ``scale_factor``.
    """
    path = Path(path)
    want = resolve(modality) if modality is not None else None
    if is_copgen_checkpoint(path):
        meta, state = read_checkpoint(path, verify=verify)
        _expect_kind(meta, "vae", path)
        if want is not None and meta.get("modality") != want.key:
            raise CheckpointError(f"{path} is the VAE of {meta.get('modality')!r}, not of {want.key!r}")
        config = VAEConfig.from_dict(meta["config"])
        scale = float(meta["scale_factor"]) if scale_factor is None else scale_factor
        hint = f"{path}/{CONFIG_FILE} does not describe these weights; re-convert the checkpoint"
    else:
        state = read_state_dict(path)
        config = infer_vae_config(state)
        if want is not None and want.vae_channels != config.in_channels:
            raise CheckpointError(
                f"{path} encodes {config.in_channels} channels, but {want.key} has {want.vae_channels}; "
                "pass the modality this VAE was trained for"
            )
        if scale_factor is not None:
            scale = scale_factor
        elif want is not None:
            scale = want.scale_factor
        else:
            raise ValueError(
                f"{path} is an official VAE state dict, which does not record its modality: pass modality=... "
                "(--modality) or scale_factor=..."
            )
        hint = "the file is not a COP-GEN KL-VAE state dict"
    with torch.device("meta"):
        model = KLVAE(config, scale)
    return _finish(model, state, dtype, str(path), hint, device)


# ------------------------------------------------------------------------------- conversion


def convert_official(
    src: str | Path,
    out_dir: str | Path,
    *,
    kind: Kind = "backbone",
    preset: str | None = None,
    num_heads: int | None = None,
    modalities: Sequence[str] | None = None,
    modality: str | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert an official state dict into our checkpoint format.

    The tensors are stored unchanged (same dtype and values, unless ``dtype`` is given) and the
    source key order is recorded, so :func:`export_official` gives back the same state dict.

    Parameters
    ----------
    src:
        Official ``.pth`` (or ``.safetensors``) file.
    out_dir:
        Directory to write ``model.safetensors`` and ``config.json`` into.
    kind:
        ``"backbone"`` or ``"vae"``.
    preset, num_heads, modalities:
        Backbone only; see :func:`infer_backbone_config`.
    modality:
        VAE only, required: which modality the VAE serves (sets the scale factor).
    dtype:
        Store floating weights in this dtype; ``None`` keeps the source dtype (bit-exact).
    overwrite:
        Replace an existing checkpoint in ``out_dir``.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    FileNotFoundError, FileExistsError, CheckpointError, ValueError, KeyError
        On a missing source, an occupied destination, weights that do not fit, or missing
        arguments (the message names the flag to pass).
    """
    src = Path(src)
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; use one of {list(KINDS)}")
    state = read_state_dict(src)
    source = {"path": src.name, "sha256": sha256_file(src)}
    hint = f"{src} is not a COP-GEN {kind} state dict for this configuration"
    if kind == "backbone":
        config = infer_backbone_config(state, preset=preset, num_heads=num_heads, modalities=modalities)
        with torch.device("meta"):
            check_state_dict(CopgenBackbone(config), state, source=str(src), hint=hint)
        meta = _backbone_meta(config, source)
    else:
        if modality is None:
            raise ValueError("converting a VAE needs its modality (modality=... / --modality)")
        mod = resolve(modality)
        vae_config = infer_vae_config(state)
        if vae_config.in_channels != mod.vae_channels:
            raise CheckpointError(
                f"{src} encodes {vae_config.in_channels} channels, but {mod.key} has {mod.vae_channels}; "
                "pass the modality this VAE was trained for"
            )
        with torch.device("meta"):
            check_state_dict(KLVAE(vae_config), state, source=str(src), hint=hint)
        meta = _vae_meta(vae_config, mod.key, mod.scale_factor, source)
    return _write_checkpoint(_cast(state, dtype), Path(out_dir), meta, overwrite=overwrite)


def export_official(src_dir: str | Path, dst: str | Path, *, overwrite: bool = False) -> Path:
    """Write one of our checkpoints back as an official ``.pth`` state dict (official key order).

    Raises
    ------
    FileExistsError
        If ``dst`` exists and ``overwrite`` is False.
    FileNotFoundError, CheckpointError
        If ``src_dir`` is not a valid checkpoint of ours (hash verified).
    """
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True (--force) to replace it")
    _, state = read_checkpoint(src_dir)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    return dst
