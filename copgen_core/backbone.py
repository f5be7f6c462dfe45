"""The COP-GEN diffusion backbone: a post-LN multimodal U-ViT with one timestep per modality.

Each modality's latent is patchified by its own ``PatchEmbed``; each modality's timestep enters as
one extra token (a sinusoidal embedding, no MLP). The sequence ``[time tokens] + [patch tokens of
modality 0..n-1]`` plus a learned positional embedding runs through ``depth // 2`` in-blocks, one
mid-block and ``depth // 2`` out-blocks with long skips (LIFO), then a final LayerNorm; a linear
head per modality predicts the noise ε, unpatchified back to the latent's shape.

Module and parameter names follow the official ``libs/copgen_multi_post_ln.py::COPGEN`` exactly, so
official state dicts load with ``strict=True``: ``pos_embed``, ``patch_embeds.{i}.proj``,
``in_blocks.{i}.{norm2,attn.qkv,attn.proj,norm3,mlp.fc1,mlp.fc2}``, ``mid_block.*``,
``out_blocks.{i}.{norm1,skip_linear,...}``, ``norm`` and ``decoder_preds.{i}``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import einops
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from copgen_core.local_path import TIME_DIM as LOCAL_TIME_DIM
from copgen_core.local_path import LocalPath
from copgen_core.modalities import KEYS, Modality, TokenLayout, layout, resolve

Prediction = Literal["eps", "v"]
AttentionMode = Literal["sdpa", "math"]
ATTENTION_MODES: tuple[AttentionMode, ...] = ("sdpa", "math")

TIME_MAX_PERIOD = 10000.0
LAYERNORM_EPS = 1e-5


@dataclass(frozen=True)
class BackboneConfig:
    """Architecture of a :class:`CopgenBackbone`.

    Attributes
    ----------
    modalities:
        Official modality keys in canonical (alphabetical) order; defaults to all 12. Short aliases
        (``"s2l2a_10m"``) are resolved to keys. A subset builds the matching smaller architecture
        (fewer tokens, patch embeddings and heads).
    embed_dim:
        Token width D. Must be even (the time embedding has D/2 cosines and D/2 sines) and divisible
        by ``num_heads``.
    depth:
        Official depth: the model has ``depth // 2`` in-blocks, one mid-block and ``depth // 2``
        out-blocks (``depth + 1`` blocks for even depth).
    num_heads:
        Attention heads; head dim is ``embed_dim // num_heads``.
    mlp_ratio:
        MLP hidden width over ``embed_dim`` (hidden = ``int(embed_dim * mlp_ratio)``).
    qkv_bias:
        Whether the fused qkv projection has a bias (False in every official model).
    ground_heads:
        Heads per block whose attention logits get a fixed ground-distance bias (0, the official
        architecture, disables it; not in the official model). See :func:`ground_attention_bias`:
        such a head reads, from the first training step, the tokens of every image modality over
        the same ground, which a small model on a short budget does not learn to do from uniform
        attention. The bias is a buffer, not a parameter: state dicts are unchanged.
    ground_sigma:
        Width of the first ground head's Gaussian bias in window units (1/12 = one 10 m token);
        ground head ``h`` uses ``ground_sigma * 2**h``.
    max_grid:
        0 (the official architecture) patches every image latent 2 x 2. Otherwise the largest token
        lattice per side: latents wider than ``2 * max_grid`` get larger patches
        (:func:`copgen_core.modalities.patch_size_for`). With 6, the 10 m modalities have 36
        tokens instead of 144 and share the 20 m lattice: the sequence is ~3x shorter, a step ~3x
        cheaper, and every 10/20 m token has exactly one co-located token per modality. Not in the
        official model; changes the shapes of ``patch_embeds``/``decoder_preds`` and ``pos_embed``.
    prediction:
        What the network's heads predict: ``"eps"`` (official) the noise, or ``"v"`` the velocity
        ``v = alpha eps - sigma x0`` (Salimans & Ho 2022). Either way :meth:`CopgenBackbone.forward`
        returns ε̂ (for ``"v"``: ``sigma x_t + alpha v̂``, exact algebra), so samplers, inpainting and
        metrics are unchanged. With ``"v"`` the x0 estimate at high noise is the head's output itself
        (``alpha x_t - sigma v̂``), not ``(x_t - sigma ε̂) / alpha`` with its 1/alpha ≈ 15x error
        amplification at n = 1000: what a small, briefly trained model needs to produce sane samples
        and to profit from its conditions (docs/training.md). Train it with the v loss (the trainer
        weights ε-MSE by 1/abar).
    final_conv:
        False (the official architecture) returns each image modality's unpatchified head output as
        it is. True adds ``final_convs``: per image modality a 3 x 3 convolution over that output,
        added to it, zero-initialised (so a new model starts as without it). With large patches
        (``max_grid``) each token's head writes its patch alone and neighbouring patches need not
        join up; the convolution sees across patch borders (as U-ViT's optional final conv layer).
        Not in the official model; adds parameters ``final_convs.{i}.*`` for image modalities.
    final_conv_kernel:
        Kernel size of the ``final_conv`` convolutions (odd; 3 by default, 7 reaches across most of a
        4 x 4-cell token to its neighbours).
    local_path:
        Image modalities (keys or aliases, stored in canonical order) that get a local conditioning
        path (:class:`copgen_core.local_path.LocalPath`): a small per-latent-cell network reading
        every other modality at the same place, each weighted by its signal share ``alpha(t)**2``,
        whose output is added to the modality's head output (before ``final_conv``). Zero-initialised,
        so a new path starts as the model without it. Empty (the official architecture) by default;
        adds parameters ``local_paths.<key>.*``.
    local_width:
        Hidden channels of every local path.
    local_depth:
        Number of 3 x 3 convolutions in every local path (1 by default).
    local_self:
        Whether each local path also reads its target's own noisy latent (a small convolutional
        denoiser next to the transformer: cell-scale structure that token heads write cell by cell).

    Raises
    ------
    ValueError
        On a non-canonical or duplicated modality list, or on inconsistent sizes.
    KeyError
        On an unknown modality name.
    """

    modalities: tuple[str, ...] = field(default=KEYS)
    embed_dim: int = 1024
    depth: int = 20
    num_heads: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    ground_heads: int = 0
    ground_sigma: float = 1.0 / 12.0
    max_grid: int = 0
    prediction: Prediction = "eps"
    final_conv: bool = False
    final_conv_kernel: int = 3
    local_path: tuple[str, ...] = ()
    local_width: int = 48
    local_self: bool = False
    local_depth: int = 1

    def __post_init__(self) -> None:
        keys = tuple(resolve(name).key for name in self.modalities)
        if not keys:
            raise ValueError("BackboneConfig.modalities is empty; give at least one modality key")
        if len(set(keys)) != len(keys):
            raise ValueError(f"BackboneConfig.modalities has duplicates: {list(keys)}")
        ordered = tuple(k for k in KEYS if k in set(keys))
        if keys != ordered:
            raise ValueError(
                f"BackboneConfig.modalities must be in canonical (alphabetical key) order: got {list(keys)}, "
                f"expected {list(ordered)}; build it with copgen_core.modalities.canonical(...)"
            )
        object.__setattr__(self, "modalities", keys)
        if self.embed_dim <= 0 or self.embed_dim % 2:
            raise ValueError(f"embed_dim must be a positive even number, got {self.embed_dim}")
        if self.num_heads <= 0 or self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}; "
                "pick num_heads that divides embed_dim"
            )
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.mlp_ratio <= 0 or int(self.embed_dim * self.mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio must give a positive hidden width, got {self.mlp_ratio}")
        if not 0 <= self.ground_heads <= self.num_heads:
            raise ValueError(f"ground_heads must be in [0, num_heads={self.num_heads}], got {self.ground_heads}")
        if not self.ground_sigma > 0:
            raise ValueError(f"ground_sigma must be positive (window units), got {self.ground_sigma}")
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' (official) or 'v', got {self.prediction!r}")
        if self.final_conv_kernel < 1 or self.final_conv_kernel % 2 == 0:
            raise ValueError(f"final_conv_kernel must be an odd size >= 1, got {self.final_conv_kernel}")
        local = {resolve(name).key for name in self.local_path}
        if local - set(keys):
            raise ValueError(f"local_path names {sorted(local - set(keys))}, which are not among the backbone's "
                             f"modalities {list(keys)}")
        scalars = sorted(k for k in local if not resolve(k).is_image)
        if scalars:
            raise ValueError(f"local_path takes image modalities only; {scalars} are scalars")
        object.__setattr__(self, "local_path", tuple(k for k in keys if k in local))
        if self.local_width < 1 or self.local_depth < 1:
            raise ValueError(f"local_width and local_depth must be >= 1, got {self.local_width} and {self.local_depth}")
        if self.max_grid < 0 or self.max_grid == 1:
            raise ValueError(f"max_grid must be 0 (official patch 2) or >= 2 tokens per side, got {self.max_grid}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def num_in_blocks(self) -> int:
        """In-blocks, and equally out-blocks (``depth // 2``)."""
        return self.depth // 2

    @property
    def token_layout(self) -> TokenLayout:
        return layout(self.modalities, self.max_grid)

    def patch_size(self, modality: Modality) -> int:
        """Patch size of ``modality`` in this backbone (2 for every image latent unless :attr:`max_grid` is set)."""
        return self.token_layout.patch_size(modality)

    @property
    def num_tokens(self) -> int:
        """Sequence length: one time token per modality plus every patch token."""
        return self.token_layout.num_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        out = asdict(self)
        out["modalities"] = list(self.modalities)
        out["local_path"] = list(self.local_path)
        if not self.local_path:  # dicts of models without local paths stay as they were (run identities)
            del out["local_path"], out["local_width"], out["local_self"], out["local_depth"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackboneConfig:
        """Build from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If ``data`` holds keys that are not config fields (the message lists them).
        """
        known = {"modalities", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "ground_heads",
                 "ground_sigma", "max_grid", "prediction", "final_conv", "final_conv_kernel",
                 "local_path", "local_width", "local_self", "local_depth"}
        extra = sorted(set(data) - known)
        if extra:
            raise ValueError(f"unknown BackboneConfig fields {extra}; expected a subset of {sorted(known)}")
        kwargs = dict(data)
        if "modalities" in kwargs:
            kwargs["modalities"] = tuple(kwargs["modalities"])
        if "local_path" in kwargs:
            kwargs["local_path"] = tuple(kwargs["local_path"])
        return cls(**kwargs)


@functools.cache
def _schedule() -> Any:
    from copgen_core.schedule import copgen_schedule

    return copgen_schedule()


def signal_alpha(t: Tensor) -> Tensor:
    """``alpha(n)`` (float32, t's shape) at backbone timesteps ``t`` in [0, 1000]; steps below 1 (clean) give 1."""
    sched = _schedule()
    tt = t.float() / sched.num_steps
    return torch.where(t.float() < 1.0, torch.ones_like(tt), sched.alpha(tt.clamp(min=1.0 / sched.num_steps)))


def velocity_to_eps(v: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """ε̂ from a velocity prediction: ``sigma(n) x + alpha(n) v`` at backbone timesteps ``t`` (B,) in [0, 1000].

    alpha/sigma are COP-GEN's schedule in continuous time (``n / 1000``, the sampler's tables); steps
    below 1 (clean conditions) count as ``alpha = 1``. Float32 arithmetic; returns ``v``'s dtype.
    """
    alpha = signal_alpha(t)
    sigma = torch.sqrt((1.0 - alpha * alpha).clamp(min=0.0))
    view = (-1,) + (1,) * (x.dim() - 1)
    return (sigma.view(view) * x.float() + alpha.view(view) * v.float()).to(v.dtype)


def timestep_embedding(t: Tensor, dim: int, max_period: float = TIME_MAX_PERIOD) -> Tensor:
    """Sinusoidal embedding of continuous timesteps, ``[cos | sin]``.

    Parameters
    ----------
    t:
        (B,) timesteps in [0, 1000], any real dtype (cast to float32).
    dim:
        Embedding width; the first ``dim // 2`` entries are cosines, the next ``dim // 2`` sines, with
        frequencies ``exp(-ln(max_period) * k / (dim // 2))``; an odd ``dim`` gets one zero column.

    Returns
    -------
    Tensor
        (B, dim) float32. ``t = 0`` gives ``[1, ..., 1, 0, ..., 0]``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs.to(t.device)[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def token_centres(config: BackboneConfig) -> Tensor:
    """Ground position of every token in window units, NaN for time and scalar tokens.

    Returns
    -------
    Tensor
        (L, 2) float64: (x, y) of each token's centre in [0, 1] (a g x g lattice's token (i, j),
        row-major, sits at ((j + 0.5) / g, (i + 0.5) / g)), so lattices of every resolution share
        one frame; rows of time tokens and of location/date tokens are NaN.
    """
    lay = config.token_layout
    centres = torch.full((lay.num_tokens, 2), float("nan"), dtype=torch.float64)
    for m, (start, end) in zip(lay.modalities, lay.spans().values(), strict=True):
        if not m.is_image:
            continue
        grid = lay.grid(m)
        c = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        centres[start:end] = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    return centres


def ground_attention_bias(config: BackboneConfig) -> Tensor | None:
    """The fixed attention-logit bias of :attr:`BackboneConfig.ground_heads`, or None when there are none.

    For ground head ``h`` (the first ``ground_heads`` heads) and two image tokens at ground distance
    ``d`` (window units), the bias is ``-d**2 / (2 sigma_h**2)`` with ``sigma_h = ground_sigma * 2**h``;
    pairs involving a time, location or date token get 0, as do all pairs of the other heads.

    Returns
    -------
    Tensor or None
        (1, num_heads, L, L) float32, added to the logits (``q kᵀ d^-0.5``) before the softmax.
    """
    if config.ground_heads == 0:
        return None
    centres = token_centres(config)
    dist2 = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    dist2 = torch.nan_to_num(dist2, nan=0.0)  # non-image tokens: no bias
    length = centres.shape[0]
    bias = torch.zeros(1, config.num_heads, length, length, dtype=torch.float64)
    for h in range(config.ground_heads):
        sigma = config.ground_sigma * 2.0**h
        bias[0, h] = -dist2 / (2.0 * sigma**2)
    return bias.float()


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: (B, C, H, W) -> (B, (H/p)(W/p), D) via a p x p stride-p conv."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection laid out as ``(3, heads, head_dim)``.

    The attention itself always runs in float32, as the official model does; ``mode`` picks
    ``F.scaled_dot_product_attention`` (``"sdpa"``) or the explicit softmax(q kᵀ d^-0.5) v (``"math"``).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.mode: AttentionMode = "sdpa"

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """(B, L, D) -> (B, L, D); ``bias`` (1 or B, H, L, L) float32 is added to the logits."""
        qkv = einops.rearrange(self.qkv(x), "B L (K H D) -> K B H L D", K=3, H=self.num_heads)
        q, k, v = qkv[0].float(), qkv[1].float(), qkv[2].float()
        if self.mode == "math":
            logits = (q @ k.transpose(-2, -1)) * self.scale
            attn = (logits if bias is None else logits + bias).softmax(dim=-1)
            out = attn @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = einops.rearrange(out, "B H L D -> B L (H D)").to(x.dtype)
        return self.proj(out)


class Mlp(nn.Module):
    """fc1 -> GELU (exact erf) -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Post-LN transformer block; with ``skip`` it first merges a long skip connection.

    ``x = norm1(skip_linear(cat[x, skip]))`` (skip blocks only), then ``x = norm2(x + attn(x))`` and
    ``x = norm3(x + mlp(x))``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, qkv_bias: bool, skip: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYERNORM_EPS) if skip else None
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LAYERNORM_EPS)
        self.mlp = Mlp(dim, mlp_hidden)
        self.norm3 = nn.LayerNorm(dim, eps=LAYERNORM_EPS)

    def forward(self, x: Tensor, skip: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        if self.skip_linear is not None and self.norm1 is not None:
            if skip is None:
                raise ValueError("a skip block needs the skip tensor from its paired in-block")
            x = self.norm1(self.skip_linear(torch.cat([x, skip], dim=-1)))
        x = self.norm2(x + self.attn(x, bias))
        return self.norm3(x + self.mlp(x))


class CopgenBackbone(nn.Module):
    """The multimodal ε-prediction network (official ``COPGEN``, ``copgen_multi_post_ln``).

    Parameters
    ----------
    config:
        Architecture; see :class:`BackboneConfig`.
    attention:
        ``"sdpa"`` (default, ``F.scaled_dot_product_attention``) or ``"math"`` (explicit softmax, as
        the golden vectors were made); both in float32, agreeing to ~2.4e-7. Change later with
        :meth:`set_attention`.
    gradient_checkpointing:
        Recompute each block in the backward pass (``torch.utils.checkpoint``) to save activation
        memory when training; no effect without autograd.

    Notes
    -----
    Parameters are initialised as the official model: trunc-normal(0.02) for Linear weights and
    ``pos_embed``, zero Linear biases, LayerNorm (1, 0), default Conv2d init. Building on
    ``torch.device("meta")`` allocates nothing (handy for counting parameters).

    Warnings
    --------
    The input size is fixed: every latent must have its modality's registry shape
    (``Modality.latent_shape``), since ``pos_embed`` has one row per token.
    """

    def __init__(
        self,
        config: BackboneConfig,
        *,
        attention: AttentionMode = "sdpa",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.modalities: tuple[Modality, ...] = tuple(resolve(k) for k in config.modalities)
        self.gradient_checkpointing = gradient_checkpointing
        d = config.embed_dim
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, d))
        self.patch_embeds = nn.ModuleList(
            PatchEmbed(m.latent_shape[0], d, config.patch_size(m)) for m in self.modalities
        )

        def make_block(skip: bool) -> Block:
            return Block(d, config.num_heads, config.mlp_hidden_dim, config.qkv_bias, skip)

        self.in_blocks = nn.ModuleList(make_block(False) for _ in range(config.num_in_blocks))
        self.mid_block = make_block(False)
        self.out_blocks = nn.ModuleList(make_block(True) for _ in range(config.num_in_blocks))
        self.norm = nn.LayerNorm(d, eps=LAYERNORM_EPS)
        self.decoder_preds = nn.ModuleList(
            nn.Linear(d, config.patch_size(m) ** 2 * m.latent_shape[0]) for m in self.modalities
        )
        self.final_convs: nn.ModuleList | None = None
        if config.final_conv:
            self.final_convs = nn.ModuleList(
                nn.Conv2d(m.latent_shape[0], m.latent_shape[0], config.final_conv_kernel,
                          padding=config.final_conv_kernel // 2)
                if m.is_image
                else nn.Identity()
                for m in self.modalities
            )
        self.local_paths: nn.ModuleDict | None = None
        if config.local_path:
            self.local_paths = nn.ModuleDict({
                key: LocalPath(resolve(key), [m for m in self.modalities if m.key != key], config.local_width,
                               own=config.local_self, depth=config.local_depth)
                for key in config.local_path
            })
        bias = ground_attention_bias(config)
        self.ground_bias: Tensor | None
        if bias is None:
            self.ground_bias = None
        else:
            self.register_buffer("ground_bias", bias, persistent=False)  # not in state dicts
        self.reset_parameters()
        self.set_attention(attention)

    def rebuild_buffers(self, device: str | torch.device | None = None) -> None:
        """Recompute the buffers that state dicts do not hold (the ground bias), e.g. after a meta-device build."""
        bias = ground_attention_bias(self.config)
        if bias is not None:
            self.ground_bias = bias.to(device if device is not None else self.pos_embed.device)

    def reset_parameters(self) -> None:
        """Official initialisation (see the class notes)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                module.reset_parameters()
        if self.final_convs is not None:
            for conv in self.final_convs:
                if isinstance(conv, nn.Conv2d):
                    nn.init.zeros_(conv.weight)
                    if conv.bias is not None:
                        nn.init.zeros_(conv.bias)
        if self.local_paths is not None:
            for path in self.local_paths.values():
                path.zero_output()  # type: ignore[operator]

    def set_attention(self, mode: AttentionMode) -> None:
        """Switch every block to ``"sdpa"`` or ``"math"`` attention.

        Raises
        ------
        ValueError
            On any other mode.
        """
        if mode not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {mode!r}; use one of {list(ATTENTION_MODES)}")
        self.attention: AttentionMode = mode
        for module in self.modules():
            if isinstance(module, Attention):
                module.mode = mode

    @property
    def keys(self) -> tuple[str, ...]:
        """Modality keys in the order ``forward`` expects them."""
        return self.config.modalities

    def forward(self, latents: Sequence[Tensor], timesteps: Sequence[Tensor | float]) -> list[Tensor]:
        """Predict the noise ε of every modality.

        Parameters
        ----------
        latents:
            One noisy latent per modality, in config order: (B, C, H, W) with (C, H, W) the
            modality's ``latent_shape`` ((B, 1, 1, 3) for scalars).
        timesteps:
            One timestep per modality, in config order: a (B,) tensor (or a scalar, broadcast over B)
            of continuous t in [0, 1000]; t = 0 marks a clean condition.

        Returns
        -------
        list[Tensor]
            ε̂ per modality, same shapes and order as ``latents``.

        Raises
        ------
        ValueError
            If the number of inputs, a latent's shape or a timestep's shape is wrong.
        """
        return self._run(latents, timesteps, None)

    def forward_dict(
        self, latents: Mapping[str, Tensor], timesteps: Mapping[str, Tensor | float]
    ) -> dict[str, Tensor]:
        """:meth:`forward` with inputs and outputs keyed by modality key (or alias).

        Raises
        ------
        ValueError
            If the keys are not exactly this model's modalities.
        """
        lat = {resolve(k).key: v for k, v in latents.items()}
        ts = {resolve(k).key: v for k, v in timesteps.items()}
        for what, got in (("latents", lat), ("timesteps", ts)):
            if set(got) != set(self.keys):
                raise ValueError(
                    f"{what} keys {sorted(got)} differ from the model's modalities {list(self.keys)}: "
                    f"missing {sorted(set(self.keys) - set(got))}, extra {sorted(set(got) - set(self.keys))}"
                )
        outs = self._run([lat[k] for k in self.keys], [ts[k] for k in self.keys], None)
        return dict(zip(self.keys, outs, strict=True))

    def forward_with_intermediates(
        self, latents: Sequence[Tensor], timesteps: Sequence[Tensor | float]
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """:meth:`forward`, also returning every intermediate the golden vectors record.

        Returns
        -------
        outputs, intermediates
            ``outputs`` as from :meth:`forward`; ``intermediates`` maps ``time_emb/<key>`` (B, D),
            ``patch_embed/<key>`` (B, N_m, D), ``x_after_pos_embed`` (B, N, D), ``in_blocks.{i}``,
            ``mid_block``, ``out_blocks.{i}`` and ``norm`` (each (B, N, D)) to detached tensors.
        """
        record: dict[str, Tensor] = {}
        outs = self._run(latents, timesteps, record)
        return outs, record

    def _check_inputs(
        self, latents: Sequence[Tensor], timesteps: Sequence[Tensor | float]
    ) -> tuple[int, list[Tensor]]:
        n = len(self.modalities)
        if len(latents) != n or len(timesteps) != n:
            raise ValueError(
                f"expected {n} latents and {n} timesteps (one per modality, order {list(self.keys)}), "
                f"got {len(latents)} and {len(timesteps)}"
            )
        batch = latents[0].shape[0] if latents[0].dim() > 0 else 0
        ts: list[Tensor] = []
        for m, x, t in zip(self.modalities, latents, timesteps, strict=True):
            want = (batch, *m.latent_shape)
            if tuple(x.shape) != want:
                raise ValueError(
                    f"latent for {m.key} has shape {tuple(x.shape)}, expected {want} "
                    "(B, C, H, W with every modality sharing B)"
                )
            t_tensor = torch.as_tensor(t, device=x.device)
            if t_tensor.dim() == 0:
                t_tensor = t_tensor.expand(batch)
            if tuple(t_tensor.shape) != (batch,):
                raise ValueError(
                    f"timestep for {m.key} has shape {tuple(t_tensor.shape)}, expected ({batch},) or a scalar"
                )
            ts.append(t_tensor)
        return batch, ts

    def _run(
        self,
        latents: Sequence[Tensor],
        timesteps: Sequence[Tensor | float],
        record: dict[str, Tensor] | None,
    ) -> list[Tensor]:
        batch, ts = self._check_inputs(latents, timesteps)
        d = self.config.embed_dim
        patch_tokens = [embed(x) for embed, x in zip(self.patch_embeds, latents, strict=True)]
        dtype = patch_tokens[0].dtype
        time_emb = [timestep_embedding(t, d) for t in ts]
        if record is not None:
            for m, te, pt in zip(self.modalities, time_emb, patch_tokens, strict=True):
                record[f"time_emb/{m.key}"] = te.detach()
                record[f"patch_embed/{m.key}"] = pt.detach()
        time_tokens = [te.to(dtype).unsqueeze(1) for te in time_emb]
        x = torch.cat(time_tokens + patch_tokens, dim=1) + self.pos_embed.to(dtype)
        bias = self.ground_bias
        if record is not None:
            record["x_after_pos_embed"] = x.detach()

        skips: list[Tensor] = []
        for i, block in enumerate(self.in_blocks):
            x = self._block(block, x, None, bias)
            skips.append(x)
            if record is not None:
                record[f"in_blocks.{i}"] = x.detach()
        x = self._block(self.mid_block, x, None, bias)
        if record is not None:
            record["mid_block"] = x.detach()
        for i, block in enumerate(self.out_blocks):
            x = self._block(block, x, skips.pop(), bias)
            if record is not None:
                record[f"out_blocks.{i}"] = x.detach()
        x = self.norm(x)
        if record is not None:
            record["norm"] = x.detach()

        outs: list[Tensor] = []
        start = len(self.modalities)
        for m, head in zip(self.modalities, self.decoder_preds, strict=True):
            count = self.config.token_layout.tokens(m)
            tokens = x[:, start : start + count]
            start += count
            c, h, w = m.latent_shape
            p = self.config.patch_size(m)
            outs.append(
                einops.rearrange(
                    head(tokens), "B (h w) (p1 p2 C) -> B C (h p1) (w p2)", h=h // p, w=w // p, p1=p, p2=p, C=c
                )
            )
        if self.local_paths is not None:
            gates = [signal_alpha(t) ** 2 for t in ts]
            for i, m in enumerate(self.modalities):
                if m.key in self.local_paths:
                    others = [j for j in range(len(self.modalities)) if j != i]
                    add = self.local_paths[m.key]([latents[j] for j in others], [gates[j] for j in others],
                                                  timestep_embedding(ts[i], LOCAL_TIME_DIM),
                                                  latents[i] if self.config.local_self else None)
                    outs[i] = outs[i] + add.to(outs[i].dtype)
        if self.final_convs is not None:
            outs = [o + conv(o) if isinstance(conv, nn.Conv2d) else o for o, conv in zip(outs, self.final_convs, strict=True)]
        if self.config.prediction == "v":
            outs = [velocity_to_eps(o, lat, t) for o, lat, t in zip(outs, latents, ts, strict=True)]
        return outs

    def _block(self, block: nn.Module, x: Tensor, skip: Tensor | None, bias: Tensor | None = None) -> Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            out: Tensor = torch.utils.checkpoint.checkpoint(block, x, skip, bias, use_reentrant=False)
            return out
        return block(x, skip, bias)
