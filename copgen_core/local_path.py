"""The local conditioning path: a per-latent-cell network from the other modalities to one image modality.

Not in the official model (:attr:`copgen_core.backbone.BackboneConfig.local_path` enables it). The
transformer sees an image modality through tokens of ``p x p`` latent cells (``max_grid`` makes ``p``
4 for the 10 m latents, 320 m on the ground); what a pixel looks like given the land cover, height
and date *at that pixel* must then pass through one token's width, which a small model trained for
minutes on a CPU does not learn well. The local path gives that relation a short road: on the
target's latent grid it reads every other modality at the same place (image latents resampled,
scalar latents such as the date broadcast), each multiplied by its signal share ``alpha(t)**2`` so a
modality at pure noise (not given) contributes almost nothing, and adds its output to the target's
head output. Its last layer is zero-initialised, so a new path starts as the model without it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from copgen_core.modalities import Modality

TIME_DIM = 64
"""Width of the sinusoidal timestep embedding the path is modulated by."""


def source_channels(source: Modality) -> int:
    """Channels ``source`` contributes to a local path: C for an image latent (C, H, W), 3 for a (1, 1, 3) scalar."""
    c, h, w = source.latent_shape
    return c if source.is_image else c * h * w


class LocalPath(nn.Module):
    """Per-cell network ``sources -> target`` on the target's latent grid.

    Layers: a 1 x 1 convolution of the gated source channels plus one gate channel per source (and
    the target's own noisy latent with ``own``), a FiLM (scale, shift) from the target's timestep
    embedding (``TIME_DIM`` wide), SiLU, ``depth`` 3 x 3 convolutions each followed by SiLU, and a
    zero-initialised 1 x 1 convolution to the target's C channels.

    Parameters
    ----------
    target:
        The image modality the path writes to.
    sources:
        The modalities it reads, in the order :meth:`forward` receives them.
    width:
        Hidden channels.
    depth:
        Number of 3 x 3 convolutions (each followed by SiLU); the path sees ``2 depth + 1`` cells across.
    own:
        Whether the path also reads the target's own noisy latent (its 3 x 3 convolution then sees
        each cell's neighbours in ``x_t``, so it can denoise cell-scale structure that a token's
        linear head writes cell by cell).

    Raises
    ------
    ValueError
        If ``target`` is not an image modality, is among ``sources``, or ``width < 1``.
    """

    def __init__(self, target: Modality, sources: Sequence[Modality], width: int, *, own: bool = False,
                 depth: int = 1) -> None:
        super().__init__()
        if not target.is_image:
            raise ValueError(f"a local path writes an image modality; {target.key} is a scalar")
        if any(s.key == target.key for s in sources):
            raise ValueError(f"a local path does not read its own target {target.key}")
        if width < 1 or depth < 1:
            raise ValueError(f"local path width and depth must be >= 1, got {width} and {depth}")
        self.target = target
        self.sources = tuple(sources)
        self.own = own
        c = target.latent_shape[0]
        in_channels = sum(source_channels(s) for s in self.sources) + len(self.sources) + (c if own else 0)
        self.inp = nn.Conv2d(in_channels, width, 1)
        self.film = nn.Linear(TIME_DIM, 2 * width)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.more = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(depth - 1))
        self.out = nn.Conv2d(width, c, 1)

    @staticmethod
    def count_parameters(target: Modality, sources: Sequence[Modality], width: int, *, own: bool = False,
                         depth: int = 1) -> int:
        """Parameters of ``LocalPath(target, sources, width, own=own, depth=depth)``, from the shapes alone."""
        c = target.latent_shape[0]
        in_channels = sum(source_channels(s) for s in sources) + len(sources) + (c if own else 0)
        return ((in_channels + 1) * width + (TIME_DIM + 1) * 2 * width + depth * (9 * width + 1) * width
                + (width + 1) * c)

    def zero_output(self) -> None:
        """Zero the last layer, so the path adds exactly 0 (how a new path starts)."""
        nn.init.zeros_(self.out.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    def forward(self, sources: Sequence[Tensor], gates: Sequence[Tensor], time_emb: Tensor,
                own: Tensor | None = None) -> Tensor:
        """The path's addition to the target's head output.

        Parameters
        ----------
        sources:
            One noisy latent per source modality, in ``self.sources`` order: (B, C, H, W) images at
            any size (resampled bilinearly, antialiased, to the target's H x W), (B, 1, 1, 3) scalars.
        gates:
            One (B,) signal share ``alpha(t)**2`` per source (1 for a clean condition).
        time_emb:
            (B, ``TIME_DIM``) timestep embedding of the target.
        own:
            The target's own noisy latent (B, C, H, W); required exactly when the path was built with
            ``own=True``.

        Returns
        -------
        Tensor
            (B, C, H, W) on the target's latent grid, in the path's weight dtype (autocast's under autocast).

        Raises
        ------
        ValueError
            If ``own`` is given to a path without it, or missing for a path with it.
        """
        if (own is not None) != self.own:
            raise ValueError(f"the local path of {self.target.key} was built with own={self.own}; "
                             f"{'pass' if self.own else 'do not pass'} the target's own latent")
        _, h, w = self.target.latent_shape
        batch = time_emb.shape[0]
        dtype = self.inp.weight.dtype  # under autocast the convolutions cast for themselves
        feats: list[Tensor] = []
        for source, x, g in zip(self.sources, sources, gates, strict=True):
            if source.is_image:
                if tuple(x.shape[-2:]) != (h, w):
                    x = F.interpolate(x.float(), size=(h, w), mode="bilinear", align_corners=False,
                                      antialias=True)
            else:
                x = x.reshape(batch, -1, 1, 1).expand(-1, -1, h, w)
            feats.append(x.to(dtype) * g.to(dtype).view(-1, 1, 1, 1))
        gate_map = torch.stack([g.to(dtype) for g in gates], dim=1).view(batch, -1, 1, 1).expand(-1, -1, h, w)
        extra = [own.to(dtype)] if own is not None else []
        hidden = self.inp(torch.cat([*feats, gate_map, *extra], dim=1))
        scale, shift = self.film(time_emb.to(hidden.dtype)).chunk(2, dim=1)
        hidden = F.silu(hidden * (1 + scale[:, :, None, None]) + shift[:, :, None, None])
        hidden = F.silu(self.mid(hidden))
        for conv in self.more:
            hidden = F.silu(conv(hidden))
        out: Tensor = self.out(hidden)
        return out
