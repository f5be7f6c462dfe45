"""Missing-data masks of a tile: which pixels of each modality must be generated (gap filling).

A pixel is *missing* (True) when it holds no usable observation:

- **sky**: the Sentinel-2 scene classification (SCL, L2A) says no data (0), saturated or defective (1),
  cloud shadow (3), cloud of medium or high probability (8, 9) or thin cirrus (10); snow (11) is a
  valid observation. Or the 4-class L1C cloud mask says thick cloud (1), thin cloud (2) or shadow (3).
  These masks apply to the Sentinel-2 modalities only (radar sees through clouds; DEM and land cover
  are static).
- **no data**: NaN/inf in any channel (tiles carry NaN outside the swath and where no source had data),
  the tile's ``valid`` mask, or (Sentinel-2) every channel exactly 0, the products' no-data value at
  swath edges.
- **saturated** (Sentinel-2): any channel at or above the saturation DN.

The sky masks are combined on the 10 m grid (the SCL's 20 m pixels are repeated 2 x 2), optionally
dilated there (cloud edges are under-detected), and then aggregated onto each modality's native grid:
with ``aggregate="any"`` (default) a 20/60 m pixel, or a 30 m DEM pixel, is missing when any 10 m pixel
it covers is missing. No-data and saturation are exact per-pixel facts on the native grid and are not
dilated.

A modality that is absent from the tile, or missing everywhere, is not *present*: it is generated as a
whole (band infilling, a plain target), not gap-filled.

:func:`cloud_like_mask` makes deterministic cloud-shaped masks for evaluations with artificial gaps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from copgen_core.modalities import FOOTPRINT_M, Kind, Modality, resolve

if TYPE_CHECKING:
    from transforms.tiles import Tile

SCL_NODATA, SCL_SATURATED, SCL_DARK_AREA, SCL_CLOUD_SHADOW = 0, 1, 2, 3
SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER, SCL_UNCLASSIFIED = 4, 5, 6, 7
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_THIN_CIRRUS, SCL_SNOW = 8, 9, 10, 11

SCL_MISSING: frozenset[int] = frozenset(
    {SCL_NODATA, SCL_SATURATED, SCL_CLOUD_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_THIN_CIRRUS}
)
"""SCL classes that are not a usable surface observation (snow, water, dark areas are usable)."""

CLOUD_MASK_MISSING: frozenset[int] = frozenset({1, 2, 3})
"""L1C 4-class cloud-mask codes that hide the surface: thick cloud, thin cloud, shadow."""

SATURATION_DN = 64535.0
"""Saturation threshold in DN. The products mark saturation with DN 65535; tiles remove the
+1000 offset of processing baseline 04.00, which moves it to 64535. ``>= 64535`` catches both
conventions (no real surface reaches a reflectance of 6.45)."""

FINE_GSD_M = 10.0
"""The grid on which the sky masks are combined and dilated."""

Aggregate = Literal["any", "all"] | float
DilateShape = Literal["square", "disk"]
CLOUD_MASK_KEY = "S2L1C_cloud_mask"


@dataclass(frozen=True)
class MaskRules:
    """How missing pixels are decided; the defaults follow the module docstring.

    Attributes
    ----------
    scl_missing, cloud_missing:
        SCL classes and L1C cloud-mask codes that count as missing.
    saturation_dn:
        Sentinel-2 DN at or above which a channel is saturated.
    band_saturation_dn:
        Per-band overrides as ``(band, dn)`` pairs, e.g. ``(("B01", 20000.0),)`` (a mapping is accepted
        and converted).
    zero_is_nodata:
        Sentinel-2 pixels whose channels are all exactly 0 are no data (swath edges).
    aggregate:
        Sky mask onto a coarser grid: ``"any"`` covered 10 m pixel missing, ``"all"`` of them, or a
        fraction in (0, 1]: missing when at least that fraction of the covered pixels is.
    dilate_px:
        Grow the sky mask by this many 10 m pixels before aggregating (0 = off).
    dilate_shape:
        ``"square"`` (Chebyshev distance) or ``"disk"`` (Euclidean distance <= ``dilate_px``).
    sky_modalities:
        Keys the sky masks apply to; None = every Sentinel-2 modality.
    use_cloud_mask:
        Use the tile's L1C cloud mask (when it has one) as a sky mask in :func:`tile_missing_masks`.
    """

    scl_missing: frozenset[int] = SCL_MISSING
    cloud_missing: frozenset[int] = CLOUD_MASK_MISSING
    saturation_dn: float = SATURATION_DN
    band_saturation_dn: tuple[tuple[str, float], ...] | Mapping[str, float] = ()
    zero_is_nodata: bool = True
    aggregate: Aggregate = "any"
    dilate_px: int = 0
    dilate_shape: DilateShape = "square"
    sky_modalities: tuple[str, ...] | None = None
    use_cloud_mask: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.band_saturation_dn, Mapping):
            object.__setattr__(self, "band_saturation_dn", tuple(sorted(self.band_saturation_dn.items())))
        object.__setattr__(self, "scl_missing", frozenset(self.scl_missing))
        object.__setattr__(self, "cloud_missing", frozenset(self.cloud_missing))
        _check_aggregate(self.aggregate)
        if self.dilate_px < 0:
            raise ValueError(f"dilate_px must be >= 0, got {self.dilate_px}")
        if self.dilate_shape not in ("square", "disk"):
            raise ValueError(f"dilate_shape must be 'square' or 'disk', got {self.dilate_shape!r}")
        if self.sky_modalities is not None:
            object.__setattr__(self, "sky_modalities", tuple(resolve(k).key for k in self.sky_modalities))

    def saturation_of(self, band: str) -> float:
        """Saturation DN of one band."""
        return dict(self.band_saturation_dn).get(band, self.saturation_dn)

    def sky_applies_to(self, modality: Modality) -> bool:
        if self.sky_modalities is None:
            return modality.kind is Kind.S2
        return modality.key in self.sky_modalities


@dataclass(frozen=True)
class MissingMasks:
    """Missing pixels per modality on its native grid.

    Attributes
    ----------
    missing:
        Modality key -> bool (H, W) on the native grid (192/96/32/64 px), True = missing.
    present:
        Modality key -> whether any pixel of it is observed (False: generate it whole).
    sky:
        The combined, dilated sky mask on the 10 m grid (192, 192), or None without SCL/cloud mask.
    """

    missing: dict[str, np.ndarray]
    present: dict[str, bool]
    sky: np.ndarray | None = field(default=None)

    def fraction(self, key: str) -> float:
        """Fraction of missing pixels of a modality."""
        return float(self.missing[resolve(key).key].mean())

    @property
    def partial(self) -> tuple[str, ...]:
        """Present modalities with some missing pixels: gap-fill them (``inpaint(partial=...)``)."""
        return tuple(k for k, m in self.missing.items() if self.present[k] and m.any())

    @property
    def complete(self) -> tuple[str, ...]:
        """Modalities without a missing pixel: usable as conditions."""
        return tuple(k for k, m in self.missing.items() if not m.any())

    @property
    def absent(self) -> tuple[str, ...]:
        """Modalities with no observed pixel: band infilling (``inpaint(targets=...)``)."""
        return tuple(k for k, p in self.present.items() if not p)


# ------------------------------------------------------------------------------------- grid helpers


def _check_aggregate(how: Aggregate) -> None:
    if how in ("any", "all"):
        return
    if isinstance(how, str) or not isinstance(how, (int, float)) or not 0.0 < float(how) <= 1.0:
        raise ValueError(f"aggregate must be 'any', 'all' or a fraction in (0, 1], got {how!r}")


def _square(mask: np.ndarray, what: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{what} must be a square (H, W) or (1, H, W) array over the window, got {np.shape(mask)}")
    return m


def aggregate_mask(mask: np.ndarray, side: int, how: Aggregate = "any") -> np.ndarray:
    """A square bool mask onto a coarser (or equal) square grid of ``side`` pixels.

    Parameters
    ----------
    mask:
        (N, N) bool with N a multiple of ``side``.
    side:
        Target side in pixels.
    how:
        ``"any"``: a coarse pixel is True if any covered pixel is; ``"all"``: if all are; a fraction f:
        if at least f of them are.

    Raises
    ------
    ValueError
        If N is not a multiple of ``side`` or ``how`` is invalid.
    """
    _check_aggregate(how)
    m = _square(mask, "mask").astype(bool)
    n = m.shape[0]
    if side < 1 or n % side:
        raise ValueError(f"cannot aggregate a {n} px mask onto {side} px: {n} is not a multiple of {side}")
    f = n // side
    blocks = m.reshape(side, f, side, f)
    if how == "any":
        return np.asarray(blocks.any(axis=(1, 3)))
    if how == "all":
        return np.asarray(blocks.all(axis=(1, 3)))
    return np.asarray(blocks.mean(axis=(1, 3)) >= float(how) - 1e-12)


def to_grid(mask: np.ndarray, side: int, how: Aggregate = "any") -> np.ndarray:
    """A square bool mask onto a ``side`` px grid: repeated when finer, aggregated when coarser.

    Raises
    ------
    ValueError
        If one side is not a multiple of the other.
    """
    m = _square(mask, "mask").astype(bool)
    n = m.shape[0]
    if n == side:
        return m.copy()
    if n < side:
        if side % n:
            raise ValueError(f"cannot refine a {n} px mask to {side} px: {side} is not a multiple of {n}")
        f = side // n
        return np.repeat(np.repeat(m, f, axis=0), f, axis=1)
    return aggregate_mask(m, side, how)


def dilate(mask: np.ndarray, px: int, shape: DilateShape = "square") -> np.ndarray:
    """Grow a bool mask (..., H, W) by ``px`` pixels (pixels outside the image count as False).

    ``"square"``: every pixel within Chebyshev distance ``px`` of a True pixel becomes True; ``"disk"``:
    within Euclidean distance ``px``.
    """
    m = np.asarray(mask, dtype=bool)
    if px <= 0:
        return m.copy()
    h, w = m.shape[-2:]
    padded = np.pad(m, [(0, 0)] * (m.ndim - 2) + [(px, px), (px, px)])
    out = np.zeros_like(m)
    if shape == "square":
        rows = np.zeros(padded.shape[:-2] + (h, w + 2 * px), dtype=bool)
        for dy in range(2 * px + 1):
            rows |= padded[..., dy : dy + h, :]
        for dx in range(2 * px + 1):
            out |= rows[..., :, dx : dx + w]
        return out
    if shape != "disk":
        raise ValueError(f"shape must be 'square' or 'disk', got {shape!r}")
    for dy in range(-px, px + 1):
        for dx in range(-px, px + 1):
            if dy * dy + dx * dx <= px * px:
                out |= padded[..., px + dy : px + dy + h, px + dx : px + dx + w]
    return out


# ------------------------------------------------------------------------------------- the masks


def _codes_missing(codes: np.ndarray, missing: frozenset[int], what: str) -> np.ndarray:
    c = _square(codes, what)
    if c.dtype.kind == "f":
        nan = ~np.isfinite(c)
        ints = np.where(nan, -1, c).astype(np.int64)
        return nan | np.isin(ints, sorted(missing))
    return np.isin(c.astype(np.int64), sorted(missing))


def sky_mask(
    *, scl: np.ndarray | None = None, cloud_mask: np.ndarray | None = None, rules: MaskRules | None = None
) -> np.ndarray | None:
    """The combined, dilated sky mask on the 10 m grid (192 x 192), or None without inputs.

    Parameters
    ----------
    scl:
        SCL class codes over the window, (H, W) or (1, H, W), at 20 m (96 px, native), 10 m or 60 m.
    cloud_mask:
        L1C cloud-mask codes 0..3 over the window, likewise. NaN (unknown) counts as missing.
    """
    r = rules or MaskRules()
    fine = int(round(FOOTPRINT_M / FINE_GSD_M))
    parts = []
    if scl is not None:
        parts.append(to_grid(_codes_missing(scl, r.scl_missing, "scl"), fine, "any"))
    if cloud_mask is not None:
        parts.append(to_grid(_codes_missing(cloud_mask, r.cloud_missing, "cloud_mask"), fine, "any"))
    if not parts:
        return None
    sky = np.logical_or.reduce(parts)
    return dilate(sky, r.dilate_px, r.dilate_shape)


def _pixel_missing(mod: Modality, values: np.ndarray, valid: np.ndarray | None, rules: MaskRules) -> np.ndarray:
    side = mod.pixel_size
    a = np.asarray(values)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (side, side):
        raise ValueError(
            f"{mod.key} has shape {np.shape(values)}; expected (C, {side}, {side}) on its native "
            f"{mod.gsd_m:g} m grid"
        )
    a = a.astype(np.float64, copy=False)
    out = ~np.isfinite(a).all(axis=0)
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape != (side, side):
            raise ValueError(f"valid mask of {mod.key} has shape {v.shape}; expected ({side}, {side})")
        out |= ~v
    if mod.kind is Kind.S2:
        if rules.zero_is_nodata:
            out |= (a == 0).all(axis=0)
        if a.shape[0] == len(mod.channels):
            for c, band in enumerate(mod.channels):
                out |= a[c] >= rules.saturation_of(band)
        else:
            out |= (a >= rules.saturation_dn).any(axis=0)
    return out


def missing_masks(
    arrays: Mapping[str, np.ndarray],
    *,
    valid: Mapping[str, np.ndarray] | None = None,
    scl: np.ndarray | None = None,
    cloud_mask: np.ndarray | None = None,
    modalities: Sequence[str] | None = None,
    rules: MaskRules | None = None,
) -> MissingMasks:
    """Missing-pixel masks of the image modalities of one window.

    Parameters
    ----------
    arrays:
        Modality key -> physical values (C, H, W) on the native grid (as :class:`~transforms.tiles.Tile`
        holds them: S2 DN, S1 linear power, DEM m, class codes); NaN where there is no data. Scalar
        modalities are ignored.
    valid:
        Optional modality key -> bool (H, W), True where valid (a tile's ``valid``).
    scl, cloud_mask:
        Sky masks over the window, see :func:`sky_mask`.
    modalities:
        Keys to report; default: the image modalities in ``arrays``. A requested key absent from
        ``arrays`` is reported missing everywhere and not present.
    rules:
        :class:`MaskRules`; the defaults when None.

    Returns
    -------
    MissingMasks

    Raises
    ------
    ValueError
        On arrays, masks or sky masks of the wrong shape, or unknown keys.
    """
    r = rules or MaskRules()
    by_key = {resolve(k).key: v for k, v in arrays.items()}
    valid_by_key = {resolve(k).key: v for k, v in (valid or {}).items()}
    keys = [resolve(k).key for k in modalities] if modalities is not None else [
        k for k in by_key if resolve(k).is_image
    ]
    sky = sky_mask(scl=scl, cloud_mask=cloud_mask, rules=r)
    missing: dict[str, np.ndarray] = {}
    present: dict[str, bool] = {}
    for key in keys:
        mod = resolve(key)
        if not mod.is_image:
            raise ValueError(f"{key} is a scalar modality and has no pixel mask; leave it out of modalities")
        side = mod.pixel_size
        if key not in by_key:
            missing[key] = np.ones((side, side), dtype=bool)
            present[key] = False
            continue
        m = _pixel_missing(mod, by_key[key], valid_by_key.get(key), r)
        if sky is not None and r.sky_applies_to(mod):
            m |= to_grid(sky, side, r.aggregate)
        missing[key] = m
        present[key] = not bool(m.all())
    return MissingMasks(missing=missing, present=present, sky=sky)


def tile_missing_masks(
    tile: Tile,
    *,
    scl: np.ndarray | None = None,
    modalities: Sequence[str] | None = None,
    rules: MaskRules | None = None,
) -> MissingMasks:
    """:func:`missing_masks` of a :class:`~transforms.tiles.Tile`.

    The tile's ``valid`` masks count, and its L1C cloud mask (``S2L1C_cloud_mask``), when read, is used
    as a sky mask (``rules.use_cloud_mask``). The SCL is not a modality, so pass it explicitly (read the
    item's ``SCL`` asset on the window's 20 m grid).
    """
    r = rules or MaskRules()
    cloud = tile.arrays.get(CLOUD_MASK_KEY) if r.use_cloud_mask else None
    return missing_masks(
        tile.arrays, valid=tile.valid, scl=scl, cloud_mask=cloud, modalities=modalities, rules=r
    )


def cloud_like_mask(
    shape: tuple[int, int],
    seed: int | Sequence[int],
    coverage: float,
    *,
    beta: float = 3.5,
) -> np.ndarray:
    """A deterministic, cloud-shaped bool mask covering exactly ``round(coverage * H * W)`` pixels.

    A Gaussian random field with power spectrum ``|f| ** -beta`` (spectral synthesis) is thresholded at
    the level that leaves the requested fraction above it. ``beta`` = 3.5 gives one or a few large
    blobs with ragged, fractal edges and some small puffs around them, like a cumulus field (on
    192 x 192 px at 30 % cover: ~40 blobs, the largest holding ~90 % of the cloud); 3 is raggeder,
    5 gives a couple of smooth blobs.

    Parameters
    ----------
    shape:
        (H, W) in pixels.
    seed:
        An int, or a sequence of ints (e.g. ``(run_seed, tile_index)``), for ``numpy.random.default_rng``.
    coverage:
        Fraction of True pixels, in [0, 1].
    beta:
        Spectral exponent, > 0.

    Returns
    -------
    np.ndarray
        bool (H, W), True = masked (cloud).

    Raises
    ------
    ValueError
        On a coverage outside [0, 1], a non-positive beta or an empty shape.
    """
    h, w = (int(s) for s in shape)
    if h < 1 or w < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    if not 0.0 <= coverage <= 1.0:
        raise ValueError(f"coverage must be in [0, 1], got {coverage}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freq = np.sqrt(fy**2 + fx**2)
    amplitude = np.zeros_like(freq)
    amplitude[freq > 0] = freq[freq > 0] ** (-beta / 2)
    field_ = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=(h, w))
    n_true = int(round(coverage * h * w))
    out = np.zeros(h * w, dtype=bool)
    if n_true:
        out[np.argsort(-field_.ravel(), kind="stable")[:n_true]] = True
    return out.reshape(h, w)


__all__ = [
    "CLOUD_MASK_MISSING", "FINE_GSD_M", "SATURATION_DN", "SCL_MISSING", "MaskRules", "MissingMasks",
    "aggregate_mask", "cloud_like_mask", "dilate", "missing_masks", "sky_mask", "tile_missing_masks",
    "to_grid",
]
