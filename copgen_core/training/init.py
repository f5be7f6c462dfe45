"""Initialisations for training a backbone from scratch (not the official recipe's, which is random).

The official backbone learns one free ``pos_embed`` row per token (trunc-normal 0.02 at start): the
model has to discover by itself that token (i, j) of the 10 m S2 grid and token (i, j) of the land
cover grid lie on the same ground. With hours of GPU that is cheap; with minutes of CPU (the bundled
model) it is most of what the backbone never learns, so its samples ignore spatial conditions.
:func:`align_positions_` starts every image token's row with a code of its ground position (a 2-D
sin-cos of the token centre in window coordinates, identical across modalities and resolutions) on
top of the official random rows. It changes only the starting values of a learned parameter: the
architecture, the state-dict keys and the checkpoint format stay the official ones.
"""

from __future__ import annotations

import math

import torch

from copgen_core.backbone import CopgenBackbone

MIN_CYCLES = 0.5
"""Longest wavelength of the position code: two windows."""


def position_code(grid: int, dim: int, max_cycles: float) -> torch.Tensor:
    """2-D sin-cos code of the centres of a ``grid`` x ``grid`` token lattice over one window.

    Parameters
    ----------
    grid:
        Tokens per side; token (i, j) (row-major) has its centre at ((j + 0.5) / grid, (i + 0.5) / grid)
        in window units, so lattices of any resolution share one code per ground position.
    dim:
        Embedding width; must be a multiple of 4 (sin and cos for each of the two axes).
    max_cycles:
        Highest frequency in cycles per window (the finest lattice's Nyquist, half its tokens per side).

    Returns
    -------
    Tensor
        (grid * grid, dim) float32 with unit RMS per row.

    Raises
    ------
    ValueError
        If ``dim`` is not a multiple of 4 or ``grid`` < 1.
    """
    if dim % 4 or grid < 1:
        raise ValueError(f"position_code needs dim % 4 == 0 and grid >= 1, got dim={dim}, grid={grid}")
    quarter = dim // 4
    freqs = torch.exp(torch.linspace(math.log(MIN_CYCLES), math.log(max(max_cycles, MIN_CYCLES)), quarter))
    centres = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    phase_u = 2 * math.pi * u.reshape(-1, 1) * freqs.reshape(1, -1).double()
    phase_v = 2 * math.pi * v.reshape(-1, 1) * freqs.reshape(1, -1).double()
    code = torch.cat([phase_u.sin(), phase_u.cos(), phase_v.sin(), phase_v.cos()], dim=1)
    return (code * math.sqrt(2.0)).float()


@torch.no_grad()
def align_positions_(model: CopgenBackbone, scale: float = 0.5) -> CopgenBackbone:
    """Add ``scale`` x a shared ground-position code to the ``pos_embed`` rows of every image token.

    Time tokens and scalar (location, date) tokens keep their random rows. Deterministic: no random
    draw, so a seeded initialisation stays seeded.

    Parameters
    ----------
    model:
        A freshly initialised backbone (modified in place and returned).
    scale:
        RMS of the added code (the official random rows have RMS ~0.02, patch tokens ~0.5).

    Raises
    ------
    ValueError
        If ``scale`` is negative or the width is not a multiple of 4.
    """
    if scale < 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    dim = model.config.embed_dim
    grids = [model.config.token_layout.grid(m) for m in model.modalities]
    finest = max(g for g, m in zip(grids, model.modalities, strict=True) if m.is_image)
    offset = len(model.modalities)  # the time tokens come first
    for m, g in zip(model.modalities, grids, strict=True):
        count = 3 if m.is_scalar else g * g
        if m.is_image:
            code = position_code(g, dim, finest / 2.0).to(model.pos_embed.device, model.pos_embed.dtype)
            model.pos_embed[0, offset:offset + count] += scale * code
        offset += count
    if offset != model.pos_embed.shape[1]:
        raise AssertionError(f"token layout mismatch: counted {offset}, pos_embed has {model.pos_embed.shape[1]}")
    return model


MIMETIC_SEED = 20231
"""Fixed seed of the mimetic projections: the initialisation stays a function of the run seed alone."""


@torch.no_grad()
def mimetic_attention_(model: CopgenBackbone, scale: float = 3.0) -> CopgenBackbone:
    """Start every attention head as a similarity search: ``W_q = W_k = sqrt(scale) P`` per head.

    ``P`` is a random (head_dim x width) matrix with orthonormal rows, so a head's logits start as
    ``scale * d^-0.5 * (P x_i) . (P x_j)``: each token attends most to the tokens that look like it.
    With :func:`align_positions_` the tokens over the same ground share their position code, so from
    the first step the 10 m S2 tokens read the land-cover, DEM, S1 and L1C tokens under them, instead
    of the backbone having to learn that routing from near-uniform attention (mimetic initialisation,
    Trockman & Kolter, 2023, who found trained ViTs' ``W_q W_k^T`` close to a positive identity).
    Values and output projections keep their random initialisation.

    Parameters
    ----------
    model:
        A freshly initialised backbone (modified in place and returned).
    scale:
        The identity's weight ``alpha`` in ``W_q^T W_k = alpha P^T P``.

    Raises
    ------
    ValueError
        If ``scale`` is not positive.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    dim = model.config.embed_dim
    heads = model.config.num_heads
    head_dim = dim // heads
    gen = torch.Generator().manual_seed(MIMETIC_SEED)
    blocks = [*model.in_blocks, model.mid_block, *model.out_blocks]
    for block in blocks:
        weight = block.attn.qkv.weight  # (3 * dim, dim): q rows, then k rows, then v rows
        for h in range(heads):
            gauss = torch.randn(dim, head_dim, generator=gen, dtype=torch.float64)
            basis, _ = torch.linalg.qr(gauss)  # (dim, head_dim), orthonormal columns
            proj = (math.sqrt(scale) * basis.T).to(weight.dtype)
            rows = slice(h * head_dim, (h + 1) * head_dim)
            weight[rows] = proj
            weight[dim + h * head_dim: dim + (h + 1) * head_dim] = proj
    return model
