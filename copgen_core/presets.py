"""Named model sizes: the official backbones (base, large, huge), a CPU-trainable ``tiny``, and VAEs.

The official sizes have exactly the published parameter counts (:data:`OFFICIAL_PARAMETER_COUNTS`);
:func:`count_backbone_parameters` computes a count from the config alone, without building the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from copgen_core.backbone import BackboneConfig
from copgen_core.local_path import LocalPath
from copgen_core.modalities import resolve
from copgen_core.vae import VAEConfig

BACKBONE_PRESETS: dict[str, BackboneConfig] = {
    # 1.68 M parameters over all 12 modalities: trainable on a 2-core CPU (used for the bundled model).
    "tiny": BackboneConfig(embed_dim=128, depth=6, num_heads=4),
    "base": BackboneConfig(embed_dim=1024, depth=20, num_heads=16),
    "large": BackboneConfig(embed_dim=1152, depth=28, num_heads=16),
    "huge": BackboneConfig(embed_dim=1536, depth=30, num_heads=24),
}
"""Backbone presets over all 12 modalities (mlp_ratio 4, no qkv bias)."""

OFFICIAL_PARAMETER_COUNTS: dict[str, int] = {
    "base": 286_986_562,
    "large": 501_092_674,
    "huge": 951_274_306,
}
"""Parameter counts of the released official backbones."""

VAE_PRESETS: dict[str, VAEConfig] = {
    "official": VAEConfig(in_channels=1, ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2),
    "tiny": VAEConfig(in_channels=1, ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1),
}
"""VAE presets; ``in_channels``/``out_channels`` are filled per modality by :func:`vae_preset`."""


def backbone_preset(name: str, modalities: Sequence[str] | None = None) -> BackboneConfig:
    """The named backbone config, optionally over a subset of modalities.

    Parameters
    ----------
    name:
        One of :data:`BACKBONE_PRESETS` (``tiny``, ``base``, ``large``, ``huge``).
    modalities:
        Modality keys or aliases, in canonical order; ``None`` for all 12.

    Raises
    ------
    KeyError
        On an unknown preset name (the message lists the valid ones) or modality.
    ValueError
        On a non-canonical modality order.
    """
    if name not in BACKBONE_PRESETS:
        raise KeyError(f"unknown backbone preset {name!r}; use one of {sorted(BACKBONE_PRESETS)}")
    config = BACKBONE_PRESETS[name]
    if modalities is None:
        return config
    return dataclasses.replace(config, modalities=tuple(modalities))


def vae_preset(name: str, modality: str) -> VAEConfig:
    """The named VAE config sized for one image modality's channels.

    Raises
    ------
    KeyError
        On an unknown preset or modality.
    ValueError
        If the modality is a scalar (scalars have no VAE).
    """
    if name not in VAE_PRESETS:
        raise KeyError(f"unknown VAE preset {name!r}; use one of {sorted(VAE_PRESETS)}")
    mod = resolve(modality)
    if not mod.is_image:
        raise ValueError(f"{mod.key} is a scalar modality and has no VAE; scalars are diffused as raw values")
    return dataclasses.replace(VAE_PRESETS[name], in_channels=mod.vae_channels, out_channels=mod.vae_channels)


def count_backbone_parameters(config: BackboneConfig) -> int:
    """Number of parameters of ``CopgenBackbone(config)``, computed from the config alone.

    A block with width D and MLP hidden width M has 2 LayerNorms (4D), qkv (3D² + 3D if biased),
    proj (D² + D), fc1 (DM + M) and fc2 (MD + D); a skip block adds norm1 (2D) and skip_linear
    (2D² + D). Each modality adds a patch embedding (C p² D + D), a head (D p² C + p² C) and its
    tokens' rows of ``pos_embed`` (plus one time-token row); with ``final_conv`` each image modality
    adds a k x k convolution (k² C² + C); each ``local_path`` modality adds its
    :meth:`~copgen_core.local_path.LocalPath.count_parameters`.
    """
    d, hidden = config.embed_dim, config.mlp_hidden_dim
    block = 4 * d + 3 * d * d + (3 * d if config.qkv_bias else 0) + d * d + d + 2 * d * hidden + hidden + d
    skip_block = block + 2 * d + 2 * d * d + d
    total = config.num_tokens * d  # pos_embed
    for key in config.modalities:
        m = resolve(key)
        patch_dim = config.patch_size(m) ** 2 * m.latent_shape[0]
        total += patch_dim * d + d  # patch_embeds.i.proj
        total += d * patch_dim + patch_dim  # decoder_preds.i
        if config.final_conv and m.is_image:
            c = m.latent_shape[0]
            total += c * c * config.final_conv_kernel**2 + c  # final_convs.i
        if key in config.local_path:
            sources = [resolve(k) for k in config.modalities if k != key]
            total += LocalPath.count_parameters(m, sources, config.local_width, own=config.local_self,
                                             depth=config.local_depth)
    total += config.num_in_blocks * (block + skip_block) + block  # in, out and mid blocks
    total += 2 * d  # final norm
    return total

