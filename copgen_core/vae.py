"""The per-modality KL autoencoder (LDM/taming structure) that maps images to diffusion latents.

``encode`` gives the *scaled* latent the backbone sees (``scale_factor * z``); ``decode`` takes a
scaled latent and divides by the scale factor first. Module names follow the official
``FrozenAutoencoderKL`` (``encoder.*``, ``decoder.*``, ``quant_conv``, ``post_quant_conv``), so the
official VAE state dicts load with ``strict=True``.

Structure (ch = base width, L = len(ch_mult), GroupNorm(32, eps 1e-6) + swish everywhere):

- Encoder: conv_in; per level ``num_res_blocks`` ResnetBlocks, then a downsample (pad (0,1,0,1),
  3x3 stride-2 conv) on all but the last level; mid = ResnetBlock, AttnBlock, ResnetBlock; norm,
  swish, conv_out to ``2 * z_channels`` moments; then the 1x1 ``quant_conv``.
- Decoder: 1x1 ``post_quant_conv``; conv_in; mid; levels from ``up[L-1]`` down to ``up[0]`` with
  ``num_res_blocks + 1`` ResnetBlocks and a nearest x2 upsample + 3x3 conv on all but ``up[0]``;
  norm, swish, conv_out. No output activation.

Optional **shortcut** (``VAEConfig.shortcut``, not in the official VAEs, off by default): a linear
path around the network, in the spirit of DC-AE's residual shortcuts (Chen et al. 2024, "Deep
Compression Autoencoder"). The encoder adds ``shortcut_in(x)`` (an ``f x f`` stride-``f`` conv: one
linear map per latent cell) to the latent mean; the decoder adds ``shortcut_out(z)`` (a ``2f x 2f``
transposed conv at stride ``f``: each pixel a linear function of its 2 x 2 nearest cells, a lapped
synthesis without block edges) to its output. :func:`init_block_pca` sets them from data (whitened
block PCA; least-squares synthesis with a smoothness term) and zeroes the network's last layers, so
that training starts from the best linear code of that size and learns only what it misses. The
latent is then an image code whose channels have unit variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GROUPNORM_GROUPS = 32
GROUPNORM_EPS = 1e-6
LOGVAR_CLAMP = (-30.0, 20.0)


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of a :class:`KLVAE` (the official ``ddconfig`` with ``double_z=True``).

    Attributes
    ----------
    in_channels:
        Image channels fed to the encoder (e.g. 4 for S2 10 m, 10 for LULC one-hot planes).
    out_channels:
        Channels the decoder returns; ``None`` means ``in_channels``.
    ch:
        Base width; level i has ``ch * ch_mult[i]`` channels (each must be a multiple of 32 for
        GroupNorm).
    ch_mult:
        Width multipliers per level; ``len(ch_mult) - 1`` downsamples (factor 8 for 4 levels).
    num_res_blocks:
        ResnetBlocks per encoder level (the decoder has one more per level).
    z_channels:
        Latent channels of the encoder/decoder proper (the encoder emits 2x for mean and logvar).
    embed_dim:
        Latent channels after ``quant_conv`` (what the backbone sees).
    shortcut:
        Add the block shortcut (module docstring); ``False`` for the official architecture.

    Raises
    ------
    ValueError
        On non-positive sizes or widths that GroupNorm(32) cannot split.
    """

    in_channels: int
    out_channels: int | None = None
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 8
    embed_dim: int = 8
    shortcut: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        if self.out_channels is None:
            object.__setattr__(self, "out_channels", self.in_channels)
        sizes = {
            "in_channels": self.in_channels,
            "ch": self.ch,
            "num_res_blocks": self.num_res_blocks,
            "z_channels": self.z_channels,
            "embed_dim": self.embed_dim,
        }
        bad = {k: v for k, v in sizes.items() if v < 1}
        if bad or not self.ch_mult or min(self.ch_mult) < 1 or (self.out_channels or 0) < 1:
            raise ValueError(f"VAEConfig sizes must be positive, got {self.to_dict()}")
        widths = [self.ch * m for m in self.ch_mult]
        if any(w % GROUPNORM_GROUPS for w in widths):
            raise ValueError(
                f"every level width ch*ch_mult = {widths} must be a multiple of {GROUPNORM_GROUPS} "
                "(GroupNorm groups); pick ch as a multiple of 32"
            )

    @property
    def output_channels(self) -> int:
        """Decoder output channels (``out_channels``, or ``in_channels`` when unset)."""
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def downsample_factor(self) -> int:
        return int(2 ** (len(self.ch_mult) - 1))


    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        out = asdict(self)
        out["ch_mult"] = list(self.ch_mult)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VAEConfig:
        """Build from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If ``data`` holds keys that are not config fields.
        """
        known = {"in_channels", "out_channels", "ch", "ch_mult", "num_res_blocks", "z_channels", "embed_dim",
                 "shortcut"}
        extra = sorted(set(data) - known)
        if extra:
            raise ValueError(f"unknown VAEConfig fields {extra}; expected a subset of {sorted(known)}")
        kwargs = dict(data)
        if "ch_mult" in kwargs:
            kwargs["ch_mult"] = tuple(kwargs["ch_mult"])
        return cls(**kwargs)

    @classmethod
    def from_ddconfig(cls, ddconfig: Mapping[str, Any], embed_dim: int | None = None) -> VAEConfig:
        """Build from an official LDM ``ddconfig`` dict.

        Raises
        ------
        ValueError
            If the ddconfig asks for what this implementation does not build (``double_z`` false or
            attention at resolutions other than the mid-block).
        """
        if not ddconfig.get("double_z", True):
            raise ValueError("ddconfig double_z=False is not a KL autoencoder; COP-GEN VAEs use double_z=True")
        if list(ddconfig.get("attn_resolutions", [])):
            raise ValueError(
                f"ddconfig attn_resolutions={ddconfig['attn_resolutions']} is not supported; COP-GEN VAEs use []"
            )
        z = int(ddconfig["z_channels"])
        return cls(
            in_channels=int(ddconfig["in_channels"]),
            out_channels=int(ddconfig.get("out_ch", ddconfig["in_channels"])),
            ch=int(ddconfig["ch"]),
            ch_mult=tuple(ddconfig["ch_mult"]),
            num_res_blocks=int(ddconfig["num_res_blocks"]),
            z_channels=z,
            embed_dim=z if embed_dim is None else int(embed_dim),
        )


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPNORM_GROUPS, channels, eps=GROUPNORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-swish-conv twice, plus a residual (1x1 ``nin_shortcut`` when widths differ)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention over the H*W positions with 1x1-conv q, k, v, proj_out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)  # (B, HW, C)
        k = k.reshape(b, c, hh * ww)  # (B, C, HW)
        weights = torch.bmm(q, k) * (int(c) ** -0.5)  # (B, HW_q, HW_k)
        weights = F.softmax(weights, dim=2)
        v = v.reshape(b, c, hh * ww)
        out = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Zero-pad right/bottom by one, then a 3x3 stride-2 conv: H -> H/2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv: H -> 2H."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _EncoderLevel(nn.Module):
    """One encoder resolution level: ResnetBlocks (``block``), then an optional ``downsample``."""

    def __init__(self, blocks: list[ResnetBlock], downsample: Downsample | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.block:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class _DecoderLevel(nn.Module):
    """One decoder resolution level: ResnetBlocks (``block``), then an optional ``upsample``."""

    def __init__(self, blocks: list[ResnetBlock], upsample: Upsample | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.upsample = upsample

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.block:
            x = blk(x)
        return x if self.upsample is None else self.upsample(x)


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> moments (B, 2*z_channels, H/f, W/f), f = 2**(L-1)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        levels: list[_EncoderLevel] = []
        block_in = ch
        for i, m in enumerate(mult):
            block_out = ch * m
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            down = Downsample(block_in) if i != len(mult) - 1 else None
            levels.append(_EncoderLevel(blocks, down))
        self.down = nn.ModuleList(levels)
        self.mid = _Mid(block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * config.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, z_channels, h, w) -> image (B, out_channels, h*f, w*f)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in)
        levels: list[_DecoderLevel] = []
        for i in reversed(range(len(mult))):
            block_out = ch * mult[i]
            blocks = []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            up = Upsample(block_in) if i != 0 else None
            levels.insert(0, _DecoderLevel(blocks, up))
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.output_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class KLVAE(nn.Module):
    """KL autoencoder with a latent scale factor (official ``FrozenAutoencoderKL``).

    Parameters
    ----------
    config:
        Architecture; see :class:`VAEConfig`.
    scale_factor:
        Latent scale (``z_used = scale_factor * z``); the official per-modality values are
        ``Modality.scale_factor``.

    Raises
    ------
    ValueError
        If ``scale_factor`` is not a positive finite number.
    """

    def __init__(self, config: VAEConfig, scale_factor: float = 1.0) -> None:
        super().__init__()
        if not (scale_factor > 0 and scale_factor < float("inf")):
            raise ValueError(f"scale_factor must be positive and finite, got {scale_factor}")
        self.config = config
        self.scale_factor = float(scale_factor)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        self.shortcut_in: nn.Conv2d | None = None
        self.shortcut_out: nn.ConvTranspose2d | None = None
        if config.shortcut:
            f = config.downsample_factor
            self.shortcut_in = nn.Conv2d(config.in_channels, config.embed_dim, f, stride=f)
            # lapped: each cell's 2f x 2f kernel overlaps its neighbours' by f/2 on every side, so the
            # linear reconstruction is continuous across cell edges (a f x f block basis is not)
            self.shortcut_out = nn.ConvTranspose2d(config.embed_dim, config.output_channels, 2 * f, stride=f,
                                                   padding=f // 2)
            _init_block_mean(self.shortcut_in, self.shortcut_out)

    def _check_image(self, x: Tensor) -> None:
        f = self.config.downsample_factor
        if x.dim() != 4 or x.shape[1] != self.config.in_channels or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"VAE input has shape {tuple(x.shape)}; expected (B, {self.config.in_channels}, H, W) "
                f"with H and W multiples of {f}"
            )

    def moments(self, x: Tensor, *, chunk_size: int | None = None) -> Tensor:
        """Posterior moments ``quant_conv(encoder(x))``.

        Parameters
        ----------
        x:
            (B, in_channels, H, W) image in the normalised [-1, 1] space, H and W multiples of the
            downsample factor (8 for 4 levels).
        chunk_size:
            Encode at most this many samples at once (bounds activation memory); ``None`` = all.

        Returns
        -------
        Tensor
            (B, 2*embed_dim, H/f, W/f): mean in the first half of the channels, logvar (unclamped)
            in the second.

        Raises
        ------
        ValueError
            On a wrong input shape or a non-positive ``chunk_size``.
        """
        self._check_image(x)
        return _chunked(self._moments, x, chunk_size)

    def _moments(self, x: Tensor) -> Tensor:
        m = self.quant_conv(self.encoder(x))
        if self.shortcut_in is None:
            return m
        d = self.config.embed_dim
        return torch.cat([m[:, :d] + self.shortcut_in(x), m[:, d:]], dim=1)

    def decode_unscaled(self, z: Tensor) -> Tensor:
        """Decode an unscaled latent (B, embed_dim, h, w): ``decoder(post_quant_conv(z))`` plus the shortcut."""
        out = self.decoder(self.post_quant_conv(z))
        return out if self.shortcut_out is None else out + self.shortcut_out(z)

    def encode(
        self,
        x: Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        eps: Tensor | None = None,
        chunk_size: int | None = None,
    ) -> Tensor:
        """Encode images to scaled latents.

        Parameters
        ----------
        x:
            (B, in_channels, H, W) normalised image.
        sample:
            False (default): the deterministic posterior mean, ``scale_factor * mean``. True: a
            posterior sample ``scale_factor * (mean + exp(0.5 * clamp(logvar, -30, 20)) * ε)``, as the
            official ``encode`` does; needs ``generator`` or ``eps``.
        generator:
            Source of ε when sampling; ε is drawn on the generator's device and moved to ``x``'s.
        eps:
            An explicit ε of shape (B, embed_dim, H/f, W/f); giving it implies sampling.
        chunk_size:
            Passed to :meth:`moments`.

        Returns
        -------
        Tensor
            (B, embed_dim, H/f, W/f) scaled latent, dtype of the model output.

        Raises
        ------
        ValueError
            If sampling is asked for without a generator or eps, a generator is passed without
            ``sample=True``, or ``eps`` has the wrong shape.
        """
        sample = sample or eps is not None
        if generator is not None and not sample:
            raise ValueError("a generator was passed but sample=False; pass sample=True to draw a posterior sample")
        if sample and eps is None and generator is None:
            raise ValueError(
                "sample=True needs an explicit torch.Generator (generator=...) or noise (eps=...), "
                "so that the draw is reproducible"
            )
        mean, logvar = torch.chunk(self.moments(x, chunk_size=chunk_size), 2, dim=1)
        if not sample:
            return self.scale_factor * mean
        if eps is None:
            # drawn on the generator's device, so a CPU generator gives the same ε on any device
            device = generator.device if generator is not None else mean.device
            eps = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype)
        elif eps.shape != mean.shape:
            raise ValueError(f"eps has shape {tuple(eps.shape)}, expected {tuple(mean.shape)}")
        std = torch.exp(0.5 * torch.clamp(logvar, *LOGVAR_CLAMP))
        return self.scale_factor * (mean + std * eps.to(mean))

    def decode(self, z_scaled: Tensor, *, chunk_size: int | None = None) -> Tensor:
        """Decode scaled latents to images: ``decoder(post_quant_conv(z_scaled / scale_factor))``.

        Parameters
        ----------
        z_scaled:
            (B, embed_dim, h, w) latent as the backbone sees it.
        chunk_size:
            Decode at most this many samples at once (bounds activation memory: one 192 px decode
            of the official VAE needs ~1 GB in fp32); ``None`` = all.

        Returns
        -------
        Tensor
            (B, out_channels, h*f, w*f) image in the normalised space (not clamped).

        Raises
        ------
        ValueError
            On a wrong latent shape or a non-positive ``chunk_size``.
        """
        if z_scaled.dim() != 4 or z_scaled.shape[1] != self.config.embed_dim:
            raise ValueError(
                f"latent has shape {tuple(z_scaled.shape)}; expected (B, {self.config.embed_dim}, h, w)"
            )

        def run(zb: Tensor) -> Tensor:
            return self.decode_unscaled((1.0 / self.scale_factor) * zb)

        return _chunked(run, z_scaled, chunk_size)

    def forward(self, x: Tensor) -> Tensor:
        """Deterministic round trip ``decode(encode(x))`` through the posterior mean."""
        return self.decode(self.encode(x))


SHORTCUT_SMOOTH = 0.05
"""Default smoothness weight of the lapped synthesis (see :func:`init_block_pca`)."""


def _bias(layer: nn.Conv2d | nn.ConvTranspose2d) -> Tensor:
    if layer.bias is None:  # every conv of this module is built with a bias
        raise ValueError(f"{layer} has no bias")
    return layer.bias


def _init_block_mean(enc: nn.Conv2d, dec: nn.ConvTranspose2d) -> None:
    """Data-free start of the shortcut: latent channel c = block mean of image channel c (c < both counts)."""
    with torch.no_grad():
        for p in (enc.weight, _bias(enc), dec.weight, _bias(dec)):
            p.zero_()
        f = enc.kernel_size[0]
        for c in range(min(enc.in_channels, enc.out_channels, dec.out_channels)):
            enc.weight[c, c] = 1.0 / (f * f)
            dec.weight[c, c, f // 2:f // 2 + f, f // 2:f // 2 + f] = 1.0


def init_block_pca(vae: KLVAE, images: Tensor, *, logvar: float = -10.0, ridge: float = 1e-6,
                   smooth: float = SHORTCUT_SMOOTH) -> Tensor:
    """Set a shortcut VAE's linear path from data: block-PCA analysis, least-squares lapped synthesis.

    ``shortcut_in`` becomes the whitened principal components of the ``f x f`` pixel blocks (latent
    channel j = ``v_j . (block - mu) / sqrt(lambda_j)``, unit variance on these images).
    ``shortcut_out`` (a ``2f x 2f`` transposed conv at stride ``f``: every pixel is a linear function
    of the 2 x 2 cells nearest to it) is then fitted by least squares to reconstruct the images from
    those latents, position by position within the cell. It contains the block-PCA synthesis as a
    special case, so it reconstructs at least as well on these images, and blends neighbouring cells,
    so it has no block edges. The network's contribution is zeroed (the decoder's ``conv_out`` and the
    mean half of ``quant_conv``) and the posterior log-variance starts at ``logvar``: the initial VAE
    *is* that linear code, and training learns what it misses. Call before training, after any weight
    loading.

    Parameters
    ----------
    vae:
        A :class:`KLVAE` built with ``shortcut=True``.
    images:
        (N, in_channels, H, W) normalised training images, H and W multiples of the downsample factor
        and at least 3 cells (a few dozen windows are plenty).
    logvar:
        Initial posterior log-variance (bias of the log-variance half of ``quant_conv``).
    ridge:
        Relative ridge of the least-squares fit (times the mean feature variance).
    smooth:
        Weight of the synthesis' smoothness under white-noise latents, relative to the data term
        (:func:`_lapped_synthesis`); 0 fits the data alone.

    Returns
    -------
    Tensor
        The eigenvalues of the kept components, largest first (variance each channel explains).

    Raises
    ------
    ValueError
        If the VAE has no shortcut, its input and output channels differ, or the images have the wrong
        shape or are smaller than 3 x 3 cells.
    """
    if vae.shortcut_in is None or vae.shortcut_out is None:
        raise ValueError("init_block_pca needs a VAE built with VAEConfig(shortcut=True)")
    cfg = vae.config
    if cfg.in_channels != cfg.output_channels:
        raise ValueError(f"init_block_pca needs in_channels == out_channels, got {cfg.in_channels} and "
                         f"{cfg.output_channels}")
    vae._check_image(images)
    f, c, d = cfg.downsample_factor, cfg.in_channels, cfg.embed_dim
    if min(images.shape[-2:]) < 3 * f:
        raise ValueError(f"init_block_pca needs images of at least {3 * f} px, got {tuple(images.shape[-2:])}")
    x = images.double()
    blocks = F.unfold(x, f, stride=f).transpose(1, 2).reshape(-1, c * f * f)
    mu = blocks.mean(0)
    evals, evecs = torch.linalg.eigh(torch.cov((blocks - mu).T))
    order = torch.argsort(evals, descending=True)[:d]
    lam, vec = evals[order].clamp_min(1e-12), evecs[:, order]  # (d,), (c*f*f, d)
    enc_w = (vec / lam.sqrt()).T  # (d, c*f*f)
    z = F.conv2d(x, enc_w.reshape(d, c, f, f), -(enc_w @ mu), stride=f)  # (N, d, h, w)
    band_mean = x.mean(dim=(0, 2, 3))
    dec_w = _lapped_synthesis(z, x - band_mean.view(1, c, 1, 1), f, ridge, smooth)
    with torch.no_grad():
        vae.shortcut_in.weight.copy_(enc_w.reshape(d, c, f, f))
        _bias(vae.shortcut_in).copy_(-(enc_w @ mu))
        vae.shortcut_out.weight.copy_(dec_w)
        _bias(vae.shortcut_out).copy_(band_mean)
        vae.decoder.conv_out.weight.zero_()
        _bias(vae.decoder.conv_out).zero_()
        vae.quant_conv.weight[:d].zero_()
        _bias(vae.quant_conv)[:d].zero_()
        vae.quant_conv.weight[d:].zero_()
        _bias(vae.quant_conv)[d:].fill_(logvar)
    return lam.float()


EDGE_RATIO_TARGET = 1.0
"""Cell-edge ratio :func:`refit_synthesis` aims at for decodes of white-noise latents: the mean absolute
difference of neighbour pixels across the ``f``-px cell edges over the same inside the cells. 1.0 means
the latent grid is invisible in generated images."""
EDGE_WEIGHT_RANGE = (1.0, 256.0)


@dataclass(frozen=True)
class SynthesisFit:
    """What :func:`refit_synthesis` chose and reached.

    Attributes
    ----------
    edge_weight:
        Weight of the neighbour pairs across cell edges in the smoothness term (1 = like the others).
    noise_edge_ratio:
        Cell-edge ratio of decodes of fixed white-noise latents after the fit (see
        :data:`EDGE_RATIO_TARGET`).
    """

    edge_weight: float
    noise_edge_ratio: float


def grid_ratio(images: Tensor, f: int) -> Tensor:
    """Mean |neighbour difference| across the ``f``-px cell edges over the mean inside cells, pooled.

    ``images`` is (..., H, W); returns a 0-d tensor, differentiable (a training penalty can use it).
    1.0 = the cell grid does not show, above 1 = visible cell edges, below 1 = edges flatter than the rest.
    """
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs()
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs()
    ey = torch.arange(1, images.shape[-2], device=images.device) % f == 0
    ex = torch.arange(1, images.shape[-1], device=images.device) % f == 0
    across = torch.cat([dy[..., ey, :].flatten(), dx[..., ex].flatten()]).mean()
    inside = torch.cat([dy[..., ~ey, :].flatten(), dx[..., ~ex].flatten()]).mean()
    return across / inside.clamp_min(1e-12)


def cell_edge_ratio(images: Tensor, f: int) -> float:
    """:func:`grid_ratio` as a float, computed in float64 without gradient."""
    with torch.no_grad():
        return float(grid_ratio(images.detach().double(), f))


def noise_edge_ratio(vae: KLVAE, *, samples: int = 8, cells: int = 12, seed: int = 0) -> float:
    """:func:`cell_edge_ratio` of decodes of white-noise latents (unit variance as the backbone sees them).

    Generated latents that the backbone has not shaped into image structure are close to white noise,
    so this is what a decoder shows of its cell grid in generated images. Seeded: same VAE, same value.
    """
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, vae.config.embed_dim, cells, cells, generator=gen)
    p = next(vae.parameters())
    with torch.no_grad():
        out = vae.decode(z.to(device=p.device, dtype=p.dtype))
    return cell_edge_ratio(out, vae.config.downsample_factor)


def refit_synthesis(vae: KLVAE, images: Tensor, *, smooth: float = SHORTCUT_SMOOTH, ridge: float = 1e-6,
                    edge_weight: float | None = 1.0, target: float = EDGE_RATIO_TARGET) -> SynthesisFit:
    """Fit a trained shortcut VAE's ``shortcut_out`` again, to what the rest of its decoder leaves.

    Training moves ``shortcut_out`` freely, and with it the smoothness :func:`init_block_pca` gave
    it: a trained synthesis puts visible 8 px cell edges into decodes of generated latents. This
    least-squares fit (same form as :func:`init_block_pca`'s, with the smoothness term) of
    ``images - decoder(post_quant_conv(mean))`` from the posterior means restores it. Only the
    decoder changes: the encoder, hence the latent space and any backbone trained on it, stays valid.

    The smoothness term can weigh the neighbour pairs *across* cell edges more than those inside the
    cells (``edge_weight``): the cell grid then disappears from decodes of noise-like latents at a
    much smaller cost in reconstruction than a uniformly stronger ``smooth`` (S2 L2A 10 m of the
    bundle: ``smooth`` 0.2 costs 1.2 dB for a noise edge ratio of 1.24; ``smooth`` 0.02 with an edge
    weight of 3 costs nothing for 0.98, docs/training.md).

    Parameters
    ----------
    vae:
        A trained :class:`KLVAE` built with ``shortcut=True``.
    images:
        (N, in_channels, H, W) normalised training images (at least 3 x 3 cells).
    smooth, ridge:
        As in :func:`init_block_pca`.
    edge_weight:
        Weight of the pairs across cell edges (>= 1). ``None``: the smallest weight in
        :data:`EDGE_WEIGHT_RANGE` whose fit has a :func:`noise_edge_ratio` of at most ``target``
        (bisection on the log-weight; 1 when the plain fit is already there, the range's top when
        nothing in it is).
    target:
        The noise edge ratio aimed at with ``edge_weight=None``.

    Returns
    -------
    SynthesisFit
        The edge weight used and the noise edge ratio reached.

    Raises
    ------
    ValueError
        If the VAE has no shortcut, the images have the wrong shape, ``smooth`` is not positive while
        ``edge_weight`` is ``None``, or ``edge_weight`` is below 1.
    """
    if vae.shortcut_out is None:
        raise ValueError("refit_synthesis needs a VAE built with VAEConfig(shortcut=True)")
    vae._check_image(images)
    f, c = vae.config.downsample_factor, vae.config.output_channels
    if min(images.shape[-2:]) < 3 * f:
        raise ValueError(f"refit_synthesis needs images of at least {3 * f} px, got {tuple(images.shape[-2:])}")
    if edge_weight is None and not smooth > 0:
        raise ValueError("edge_weight=None tunes the smoothness term's edge weight; it needs smooth > 0")
    if edge_weight is not None and edge_weight < 1.0:
        raise ValueError(f"edge_weight must be >= 1 (1 weighs cell edges like the other pairs), got {edge_weight}")
    with torch.no_grad():
        mean = torch.chunk(vae.moments(images), 2, dim=1)[0]
        target_x = images.double() - vae.decoder(vae.post_quant_conv(mean)).double()
        band_mean = target_x.mean(dim=(0, 2, 3))
        system = _SynthesisSystem(mean.double(), target_x - band_mean.view(1, c, 1, 1), f, ridge)
        _bias(vae.shortcut_out).copy_(band_mean)

        def fit(weight: float) -> float:
            vae.shortcut_out.weight.copy_(system.solve(smooth, weight))  # type: ignore[union-attr]
            return noise_edge_ratio(vae)

        if edge_weight is not None:
            return SynthesisFit(edge_weight, fit(edge_weight))
        lo, hi = EDGE_WEIGHT_RANGE
        ratio = fit(lo)
        if ratio <= target:
            return SynthesisFit(lo, ratio)
        if fit(hi) > target:
            return SynthesisFit(hi, noise_edge_ratio(vae))
        for _ in range(12):  # the ratio falls as the weight grows; 12 halvings of log(256) ~ 0.1 % in weight
            mid = math.sqrt(lo * hi)
            if fit(mid) > target:
                lo = mid
            else:
                hi = mid
        return SynthesisFit(hi, fit(hi))


def _covering(r: int, f: int) -> tuple[int, int]:
    """The two cells (along one axis) whose lapped kernels cover absolute pixel ``r``."""
    lo = r // f - (1 if r % f < f // 2 else 0)
    return lo, lo + 1


class _SynthesisSystem:
    """Normal equations of ``conv_transpose2d(z, W, stride=f, padding=f//2) ~ x`` (weights (d, c, 2f, 2f)).

    Every pixel is covered by the kernels of 2 x 2 cells (each tap of the kernel serves exactly one
    offset within the cell), so the data term is one small least-squares problem per offset, over the
    interior cells. :meth:`solve` adds, relative to the data term, the expected squared difference
    between adjacent output pixels when the latents are white noise (the taps of shared cells should
    agree, those of a cell that stops covering should fade out), the pairs across cell edges weighted
    ``edge_weight`` times: the synthesis then stays continuous across cell edges for latents that are
    not encodings of real images, such as generated ones.
    """

    def __init__(self, z: Tensor, x: Tensor, f: int, ridge: float) -> None:
        n, d, h, w = z.shape
        c = x.shape[1]
        self.f, self.d, self.c = f, d, c
        half, k2 = f // 2, 2 * f
        size = k2 * k2 * d

        def index(ky: int, kx: int) -> int:
            return (ky * k2 + kx) * d

        gram = torch.zeros(size, size, dtype=torch.float64)
        rhs = torch.zeros(size, c, dtype=torch.float64)
        rows = 0
        for a in range(f):
            ca = _covering(f + a, f)
            for b in range(f):
                cb = _covering(f + b, f)
                feats, taps = [], []
                for ci in ca:
                    for cj in cb:
                        feats.append(z[:, :, ci:ci + h - 2, cj:cj + w - 2])
                        taps.append(index(f + a - f * ci + half, f + b - f * cj + half))
                phi = torch.cat(feats, dim=1).permute(0, 2, 3, 1).reshape(-1, 4 * d)
                target = x[:, :, f + a:f * (h - 1):f, f + b:f * (w - 1):f].permute(0, 2, 3, 1).reshape(-1, c)
                sel = torch.cat([torch.arange(t, t + d) for t in taps])
                gram[sel[:, None], sel[None, :]] += phi.T @ phi
                rhs[sel] += phi.T @ target
                rows = phi.shape[0]
        gram += ridge * gram.diagonal().mean() * torch.eye(size, dtype=gram.dtype)
        self.gram, self.rhs, self.rows = gram, rhs, rows
        self.inside, self.across = _difference_grams(f)

    def solve(self, smooth: float, edge_weight: float = 1.0) -> Tensor:
        """The weights (d, c, 2f, 2f) for this smoothness and edge weight."""
        gram = self.gram
        if smooth > 0:
            # the d latent channels are independent white noise: the same penalty for each channel
            pairs = self.inside + edge_weight * self.across
            gram = gram + smooth * self.rows * torch.kron(pairs, torch.eye(self.d, dtype=torch.float64))
        sol = torch.linalg.solve(gram, self.rhs)  # (size, c)
        k2 = 2 * self.f
        return sol.reshape(k2, k2, self.d, self.c).permute(2, 3, 0, 1).contiguous()


def _difference_grams(f: int) -> tuple[Tensor, Tensor]:
    """(inside, across): sums of D^T D over adjacent pixel pairs of one cell, for one latent channel.

    D has one row per (pair, covering cell): the kernel tap of the first pixel minus that of the second.
    ``across`` holds the pairs whose second pixel lies in the next cell, ``inside`` the others.
    """
    half, k2 = f // 2, 2 * f
    rows: dict[bool, list[Tensor]] = {False: [], True: []}
    for r in range(f, 2 * f):
        for s_ in range(f, 2 * f):
            for r2, s2 in ((r + 1, s_), (r, s_ + 1)):
                cells: dict[tuple[int, int], Tensor] = {}
                for sign, (pr, ps) in ((1.0, (r, s_)), (-1.0, (r2, s2))):
                    for ci in _covering(pr, f):
                        for cj in _covering(ps, f):
                            row = cells.setdefault((ci, cj), torch.zeros(k2 * k2, dtype=torch.float64))
                            row[(pr - f * ci + half) * k2 + (ps - f * cj + half)] += sign
                rows[r2 == 2 * f or s2 == 2 * f].extend(cells.values())
    grams = [torch.stack(rows[k]).T @ torch.stack(rows[k]) for k in (False, True)]
    return grams[0], grams[1]


def _lapped_synthesis(z: Tensor, x: Tensor, f: int, ridge: float, smooth: float) -> Tensor:
    """Least-squares weights (d, c, 2f, 2f) of the lapped synthesis (:class:`_SynthesisSystem`, edge weight 1)."""
    return _SynthesisSystem(z, x, f, ridge).solve(smooth)


def _chunked(fn: Callable[[Tensor], Tensor], x: Tensor, chunk_size: int | None) -> Tensor:
    if chunk_size is None or chunk_size >= x.shape[0]:
        return fn(x)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    return torch.cat([fn(xb) for xb in torch.split(x, chunk_size, dim=0)], dim=0)
