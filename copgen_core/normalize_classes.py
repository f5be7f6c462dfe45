"""Normalisation of the categorical modalities: Esri/IO land cover (LULC) and the S2 cloud mask.

Forward: raw class codes -> class index -> one-hot planes scaled to +-1, float32. The single code
channel is replaced by one plane per class: (H, W) or (1, H, W) -> (K, H, W); (B, 1, H, W) -> (B, K, H, W).
Inverse: argmax over the planes (the first index wins ties) -> raw code, int64 with a single channel:
(K, H, W) -> (1, H, W); (B, K, H, W) -> (B, 1, H, W).

The official code silently maps any code outside its table to index 0 (NoData / clear); strict mode
refuses such codes instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from copgen_core.normalize_common import Array, Mode, Normalized, back, check_mode, count, pct, to_torch

LULC_CODES: tuple[int, ...] = (0, 1, 2, 4, 5, 7, 8, 9, 10, 11)
"""Esri/Impact Observatory 10 m land-cover raster code of each class index (index -> code)."""

LULC_CLASS_NAMES: tuple[str, ...] = (
    "None/NoData", "Water", "Trees", "Flooded Vegetation", "Crops", "Built-up Areas", "Bare Ground",
    "Snow/Ice", "Clouds", "Rangeland",
)
"""Class name of each LULC index, as in the official code."""

LULC_PALETTE = np.array(
    [(0, 0, 0), (26, 91, 171), (53, 130, 33), (135, 209, 158), (255, 219, 92), (237, 2, 42),
     (227, 226, 195), (168, 235, 255), (97, 97, 97), (165, 155, 143)],
    dtype=np.uint8,
)
"""(10, 3) uint8 RGB of each LULC index (COP-GEN thumbnails)."""
LULC_PALETTE.setflags(write=False)

LULC_NODATA_MAX_FRACTION = 0.05
"""Training dropped LULC windows with this fraction of code-0 pixels or more."""

CLOUD_CODES: tuple[int, ...] = (0, 1, 2, 3)
CLOUD_CLASS_NAMES: tuple[str, ...] = ("Clear", "Thick cloud", "Thin cloud", "Cloud shadow")
CLOUD_PALETTE = LULC_PALETTE[:4]
"""(4, 3) uint8 RGB of each cloud-mask class (the official code reuses the first four LULC colours)."""


@dataclass(frozen=True)
class ClassMap:
    """A raw-code <-> class-index table of one categorical modality."""

    label: str
    codes: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.codes)

    def code_to_index_table(self) -> torch.Tensor:
        """(max_code + 1,) int64 lookup: index of each code, -1 where the code is unknown."""
        table = torch.full((max(self.codes) + 1,), -1, dtype=torch.int64)
        table[torch.tensor(self.codes)] = torch.arange(self.num_classes)
        return table


LULC = ClassMap("LULC", LULC_CODES, LULC_CLASS_NAMES)
CLOUD = ClassMap("cloud mask", CLOUD_CODES, CLOUD_CLASS_NAMES)


def _codes_to_index(x: torch.Tensor, cmap: ClassMap, mode: Mode) -> torch.Tensor:
    table = cmap.code_to_index_table().to(x.device)
    codes = x.to(torch.int64)
    in_range = (codes >= 0) & (codes < table.numel())
    idx = torch.where(in_range, table[codes.clamp(0, table.numel() - 1)], torch.full_like(codes, -1))
    unknown = idx < 0
    if mode == "strict" and bool(unknown.any()):
        bad = sorted({int(v) for v in torch.unique(x[unknown]).tolist()})
        raise ValueError(
            f"{cmap.label}: {count(unknown)} pixels hold codes {bad[:20]} that are not in the official table "
            f"{list(cmap.codes)}; remap them to a known code first (e.g. 0 for no-data), or use "
            "mode='official' to map them silently to index 0 as COP-GEN does"
        )
    return torch.where(unknown, torch.zeros_like(idx), idx)


def _one_hot_pre(codes: Array, cmap: ClassMap, mode: Mode) -> Normalized:
    check_mode(mode)
    if isinstance(codes, torch.Tensor):
        x, as_np = codes, False
    else:
        arr = np.asarray(codes)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{cmap.label}: expected numeric class codes, got dtype {arr.dtype}")
        arr = arr.astype(np.float64 if arr.dtype.kind == "f" else np.int64, copy=False)
        x, as_np = torch.from_numpy(np.ascontiguousarray(arr)), True
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim not in (3, 4) or x.shape[-3] != 1:
        raise ValueError(
            f"{cmap.label}: expected raw codes shaped (H, W), (1, H, W) or (B, 1, H, W), got {tuple(x.shape)}"
        )
    if mode == "strict" and x.is_floating_point():
        if bool(torch.isnan(x).any()):
            raise ValueError(f"{cmap.label}: input holds NaN; fill it with the no-data code 0 first")
        if bool((x != torch.round(x)).any()):
            raise ValueError(f"{cmap.label}: input holds non-integer codes; pass the class raster, not a resampled "
                             "(interpolated) one - use nearest-neighbour resampling")
    notes: list[str] = []
    idx = _codes_to_index(x, cmap, mode).squeeze(-3)
    onehot = torch.nn.functional.one_hot(idx, cmap.num_classes).to(torch.float32)
    onehot = onehot.movedim(-1, -3) * 2 - 1
    if mode == "strict" and cmap is LULC:
        nodata = count(idx == 0)
        if nodata >= LULC_NODATA_MAX_FRACTION * idx.numel():
            notes.append(f"LULC: {pct(nodata, idx.numel())} are NoData (code 0); training dropped windows with "
                         f">= {LULC_NODATA_MAX_FRACTION:.0%}")
    return Normalized(back(onehot.contiguous(), as_np), tuple(notes))


def _argmax_post(y: Array, cmap: ClassMap) -> Array:
    t, as_np = to_torch(y)
    if t.ndim not in (3, 4) or t.shape[-3] != cmap.num_classes:
        raise ValueError(f"{cmap.label}: expected {cmap.num_classes} planes shaped (K, H, W) or (B, K, H, W), "
                         f"got {tuple(t.shape)}")
    idx = torch.argmax(t, dim=-3, keepdim=True)
    codes = torch.tensor(cmap.codes, dtype=torch.int64, device=t.device)[idx]
    return back(codes, as_np)


def lulc_pre(codes: Array, *, mode: Mode = "strict") -> Normalized:
    """Esri/IO land-cover codes to 10 one-hot planes of +-1 (float32).

    Parameters
    ----------
    codes:
        Raw raster codes (0 NoData, 1 Water, 2 Trees, 4 Flooded vegetation, 5 Crops, 7 Built area,
        8 Bare ground, 9 Snow/ice, 10 Clouds, 11 Rangeland), shaped (H, W), (1, H, W) or (B, 1, H, W).
    mode:
        ``"official"`` maps unknown codes (3, 6, 12+) silently to index 0. ``"strict"`` raises on them and
        on NaN or non-integer values, and notes a NoData share of 5% or more.

    Returns
    -------
    Normalized
        values (10, H, W) or (B, 10, H, W) float32 in {-1, 1}.

    Raises
    ------
    ValueError
        Bad shape; strict mode: unknown codes (named in the message), NaN or fractional codes.
    """
    return _one_hot_pre(codes, LULC, mode)


def lulc_post(y: Array) -> Array:
    """10 LULC planes (10, H, W) / (B, 10, H, W) to raw Esri codes, int64 (1, H, W) / (B, 1, H, W)."""
    return _argmax_post(y, LULC)


def cloud_pre(codes: Array, *, mode: Mode = "strict") -> Normalized:
    """Cloud-mask codes (0 clear, 1 thick, 2 thin, 3 shadow) to 4 one-hot planes of +-1 (float32).

    Shapes and modes as :func:`lulc_pre` (official: unknown codes silently become clear).
    """
    return _one_hot_pre(codes, CLOUD, mode)


def cloud_post(y: Array) -> Array:
    """4 cloud planes (4, H, W) / (B, 4, H, W) to codes 0..3, int64 (1, H, W) / (B, 1, H, W)."""
    return _argmax_post(y, CLOUD)


def lulc_rgb(codes: Array) -> np.ndarray:
    """Raw LULC codes (any shape) to RGB (..., 3) uint8 with :data:`LULC_PALETTE`; unknown codes black."""
    arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    idx = LULC.code_to_index_table().numpy()
    flat = arr.astype(np.int64)
    ok = (flat >= 0) & (flat < idx.size)
    index = np.where(ok, idx[np.clip(flat, 0, idx.size - 1)], 0)
    return LULC_PALETTE[np.maximum(index, 0)]
