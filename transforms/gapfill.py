"""Gap filling of Sentinel-2 L2A acquisitions, window by window: keep every observed pixel, fill the rest.

For one acquisition (an L2A item) and one window:

1. :func:`plan_gapfill_units` lists the sources: the three L2A groups (10/20/60 m) of *that* item only,
   every other modality by the job's selection rules (Sentinel-1 nearest pass, DEM, land cover, the
   L1C of the same acquisition), and the item's ``SCL`` band (:func:`mask_band_source`).
2. :func:`window_roles` decides, from the per-pixel missing masks of :mod:`transforms.masks`, what
   each modality does: an L2A group without a missing pixel is a **condition** (it is also copied to
   the output as is), a group with some observed pixels is **partial** (inpainted with the observed
   pixels imposed, :func:`copgen_core.inpaint.inpaint`), a group with none is a **target** (band
   infilling, generated whole). Every other modality is a condition when it is complete over the
   window; the L1C groups also count the SCL's clouds as missing, and the L1C cloud mask is used
   only when it says "clear" everywhere.
3. :func:`fill_windows` runs the model once per group of windows with the same roles; windows with
   nothing missing are copied through without a model call.
4. :func:`gapfill_batch` writes each window into the acquisition's cube (``write_window``, members
   on the member axis, ensemble statistics included) and the filled mask into the ``<key>__filled``
   arrays that :func:`add_filled_arrays` adds to the cube: 0 observed (bit-identical to the read
   value), 1 filled (generated), 255 unwritten.

Scheduled runs keep ``<output>/_runs/state.json`` (:func:`read_state`, :func:`write_state`): the
item id and content hash (:func:`item_hash`) of every acquisition processed completely, so a run with
``since="last"`` picks only new or updated items (:func:`select_acquisitions`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from copgen_core.modalities import BY_KEY, Kind, canonical
from transforms import ledger
from transforms.catalog import CatalogItem
from transforms.cube import open_store, validate_region, write_window
from transforms.cube_spec import UINT8_FILL, CubeError, CubeSpec, block_offset_m
from transforms.infer import InferSpec, get_model
from transforms.masks import CLOUD_MASK_KEY, MaskRules, missing_masks
from transforms.process import Outcome
from transforms.raster_read import ReadError, Resampling, read_band
from transforms.select import SelectionRule
from transforms.tiles import BandSource, Tile, WorkUnit, plan_units, read_tile
from transforms.windows import Window, WindowKey

L2A_COLLECTION = "sentinel-2-l2a"
L1C_COLLECTION = "sentinel-2-l1c"
S2L2A_GROUPS: tuple[str, ...] = ("S2L2A_B01_B09", "S2L2A_B02_B03_B04_B08", "S2L2A_B05_B06_B07_B11_B12_B8A")
"""The gap-filled modalities: the 60, 10 and 20 m groups of Sentinel-2 L2A (canonical order)."""

DEFAULT_CONDITIONS: tuple[str, ...] = (
    "3d_cartesian_lat_lon", "DEM_DEM", "LULC_LULC", "S1RTC_vh_vv", "S2L1C_B01_B09_B10", "S2L1C_B02_B03_B04_B08",
    "S2L1C_B05_B06_B07_B11_B12_B8A", "S2L1C_cloud_mask", "mean_timestamps",
)
"""Every modality but the L2A groups: each one conditions a window when it is available and complete."""

FILLED_SUFFIX = "__filled"
FILLED_OBSERVED = 0
FILLED_GENERATED = 1
MASK_BAND_GSD_M = {"SCL": 20.0, "cloud_mask": 10.0}

WindowMode = Literal["copied", "gapfilled", "unobserved"]


# ------------------------------------------------------------------------------------- mask bands


def mask_band_source(item: CatalogItem, band: str = "SCL") -> BandSource | None:
    """A :class:`BandSource` for a class-code band of ``item`` (``"SCL"`` of L2A, ``"cloud_mask"`` of
    L1C), read with nearest-neighbour resampling; None when the item has no such band."""
    try:
        asset = item.band(band)
    except KeyError:
        return None
    return BandSource(item_id=item.id, href=asset.href, nodata=asset.nodata, resampling=Resampling.NEAREST,
                      acquired=item.datetime.isoformat())


def read_mask_band(source: BandSource, window: Window, gsd_m: float = 20.0) -> np.ndarray:
    """Class codes of a mask band over ``window`` on its ``gsd_m`` grid: float32 (H, W), NaN where the
    band has no data (SCL's nodata 0 included), ready for :func:`transforms.masks.missing_masks`.

    Raises
    ------
    ReadError
        When the file is missing or corrupt (the message names the href).
    """
    band = read_band(source.href, window.geobox(float(gsd_m)), band=source.band_index, resampling=source.resampling,
                     nodata=source.nodata)
    return band.values


# ------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PriorSource:
    """Another acquisition of the same window, read for the temporal prior (its L2A groups and SCL)."""

    unit: WorkUnit
    acquisition: str
    days: float
    scl: BandSource | None = None


@dataclass(frozen=True)
class GapfillUnit:
    """One window of one acquisition: its read sources, the SCL band, the cube it goes to, and the
    other acquisitions of the window that give its temporal prior (nearest in time first)."""

    unit: WorkUnit
    acquisition: str
    cube_url: str
    scl: BandSource | None = None
    references: tuple[PriorSource, ...] = ()

    @property
    def key(self) -> WindowKey:
        return self.unit.key

    @property
    def time_index(self) -> int:
        return self.unit.time_index

    @property
    def sample_key(self) -> tuple[str, str]:
        """The noise key of the window: (window key, acquisition item id)."""
        return (str(self.unit.key), self.acquisition)

    @property
    def name(self) -> str:
        return f"{self.unit.key}@{self.acquisition}"


def plan_gapfill_units(
    windows: Sequence[Window],
    acquisition: CatalogItem,
    items: Sequence[CatalogItem],
    conditions: Sequence[str],
    rules: Mapping[str, SelectionRule],
    cube_url: str,
    others: Sequence[CatalogItem] = (),
    prior_dates: int = 0,
) -> list[GapfillUnit]:
    """Work units of one acquisition: the windows it covers, with its own L2A bands and the conditions.

    ``items`` are the catalog items of the condition collections (L2A items among them are ignored:
    the L2A sources come from ``acquisition`` only). The L1C of the same acquisition is the one within
    a day unless ``rules`` says otherwise. Windows the item does not intersect are left out. Each
    unit's ``references`` are the (at most ``prior_dates``) acquisitions of ``others`` nearest in time
    that cover its window (the acquisition itself excluded).
    """
    rules = dict(rules)
    rules[L2A_COLLECTION] = SelectionRule(L2A_COLLECTION, max_days=0.999)
    rules.setdefault(L1C_COLLECTION, SelectionRule(L1C_COLLECTION, max_days=0.999))
    pool = [i for i in items if i.collection != L2A_COLLECTION] + [acquisition]
    keys = [*S2L2A_GROUPS, *(k for k in conditions if k not in S2L2A_GROUPS)]
    scl = mask_band_source(acquisition, "SCL")
    refs: dict[Any, list[PriorSource]] = {}
    if prior_dates > 0:
        near = sorted((o for o in others if o.id != acquisition.id),
                      key=lambda o: (abs((o.datetime - acquisition.datetime).total_seconds()), o.id))
        for other in near:
            days = abs((other.datetime - acquisition.datetime).total_seconds()) / 86400.0
            for ref in plan_units(windows, [other.datetime], [other], list(S2L2A_GROUPS), rules):
                found = refs.setdefault(ref.key, [])
                if len(found) < prior_dates and any(k in S2L2A_GROUPS for k, _ in ref.sources):
                    found.append(PriorSource(ref, other.id, days, mask_band_source(other, "SCL")))
    out = []
    for unit in plan_units(windows, [acquisition.datetime], pool, keys, rules):
        if any(k in S2L2A_GROUPS for k, _ in unit.sources):
            out.append(GapfillUnit(unit, acquisition.id, cube_url, scl, tuple(refs.get(unit.key, ()))))
    return out


# ------------------------------------------------------------------------------------- roles


@dataclass(frozen=True)
class WindowRoles:
    """What every modality of one window does in the gap fill.

    Attributes
    ----------
    conditions:
        Keys given whole to the model (canonical order): complete non-L2A modalities, scalars, and
        the complete L2A groups.
    complete:
        L2A groups without a missing pixel (copied to the output, also conditions).
    partial:
        L2A groups with some observed pixels: inpainted, observed pixels imposed and kept bit for bit.
    targets:
        L2A groups without any observed pixel: generated whole (band infilling).
    missing:
        Per L2A group, bool (H, W) on its native grid, True where the pixel is filled.
    sky_fraction:
        Fraction of the 10 m window hidden by SCL/cloud-mask classes (before no-data), or None.
    """

    conditions: tuple[str, ...]
    complete: tuple[str, ...]
    partial: tuple[str, ...]
    targets: tuple[str, ...]
    missing: dict[str, np.ndarray] = field(compare=False)
    sky_fraction: float | None = None

    @property
    def observed(self) -> bool:
        """Whether any L2A pixel of the window is observed."""
        return bool(self.complete or self.partial)

    @property
    def mode(self) -> WindowMode:
        if not self.observed:
            return "unobserved"
        return "gapfilled" if self.partial or self.targets else "copied"

    @property
    def signature(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """Windows with equal signatures share a model call."""
        return self.conditions, self.partial, self.targets


def _clear_everywhere(codes: np.ndarray) -> bool:
    return bool(np.isfinite(codes).all() and (codes == 0).all())


def window_roles(
    tile: Tile, conditions: Sequence[str], *, scl: np.ndarray | None = None, rules: MaskRules | None = None
) -> WindowRoles:
    """Decide the roles of every modality of a window (see the module docstring).

    Parameters
    ----------
    tile:
        The window read with the L2A groups and every wanted condition (:func:`read_tile`).
    conditions:
        The wanted condition keys (any of them may be absent from the tile).
    scl:
        The acquisition's SCL over the window (:func:`read_mask_band`), or None. Without it the L1C
        cloud mask of the tile, if read, is the sky mask; without both only no-data and saturated
        pixels are missing.
    rules:
        :class:`MaskRules` (dilation, saturation).
    """
    r = rules or MaskRules()
    cloud = tile.arrays.get(CLOUD_MASK_KEY) if scl is None else None
    l2a = missing_masks(tile.arrays, valid=tile.valid, scl=scl, cloud_mask=cloud, modalities=S2L2A_GROUPS, rules=r)
    complete = tuple(k for k in S2L2A_GROUPS if l2a.present[k] and not l2a.missing[k].any())
    partial = tuple(k for k in S2L2A_GROUPS if l2a.present[k] and l2a.missing[k].any())
    targets = tuple(k for k in S2L2A_GROUPS if not l2a.present[k])
    used: list[str] = list(complete)
    for key in conditions:
        mod = BY_KEY[key]
        if key in S2L2A_GROUPS or key not in tile.arrays:
            continue
        if mod.is_scalar:
            used.append(key)
        elif mod.kind is Kind.CLOUD:
            if _clear_everywhere(tile.arrays[key]):
                used.append(key)
        elif mod.kind is Kind.S2:
            m = missing_masks({key: tile.arrays[key]}, valid={k: v for k, v in tile.valid.items() if k == key},
                              scl=scl, cloud_mask=cloud, modalities=[key], rules=r)
            if not m.missing[key].any():
                used.append(key)
        elif tile.complete(key):
            used.append(key)
    sky = None if l2a.sky is None else float(l2a.sky.mean())
    return WindowRoles(
        conditions=tuple(m.key for m in canonical(used)), complete=complete, partial=partial, targets=targets,
        missing={k: l2a.missing[k] for k in S2L2A_GROUPS}, sky_fraction=sky,
    )


# ------------------------------------------------------------------------------------- the fill


@dataclass(frozen=True)
class GapfillSpec:
    """Everything that decides the filled numbers (part of each window's provenance).

    ``dilate_px`` grows the SCL cloud mask (10 m pixels) before it is applied; ``resample`` is
    RePaint's resampling count (1 = off).
    """

    model: str
    conditions: tuple[str, ...] = DEFAULT_CONDITIONS
    members: int = 4
    steps: int = 50
    seed: int = 0
    batch_size: int = 8
    dilate_px: int = 0
    resample: int = 1
    prior_start: float = 1.0
    device: str = "cpu"
    dtype: str = "fp32"
    threads: int = 1

    def infer_spec(self) -> InferSpec:
        """The :class:`InferSpec` that loads (and caches) this spec's model in a worker."""
        return InferSpec(model=self.model, targets=S2L2A_GROUPS, conditions=self.conditions, members=self.members,
                         steps=self.steps, seed=self.seed, batch_size=self.batch_size, device=self.device,
                         dtype=self.dtype, threads=self.threads)

    def mask_rules(self) -> MaskRules:
        return MaskRules(dilate_px=self.dilate_px)

    def settings(self) -> dict[str, Any]:
        return {"model": self.model, "members": self.members, "steps": self.steps, "seed": self.seed,
                "resample": self.resample, "dilate_px": self.dilate_px, "dtype": self.dtype,
                "threads": self.threads, "method": "repaint", "prior_start": self.prior_start}


@dataclass
class WindowFill:
    """The output of one window: per L2A group ``(members, C, H, W)`` float32 and the filled mask (H, W)."""

    arrays: dict[str, np.ndarray]
    filled: dict[str, np.ndarray]
    roles: WindowRoles
    prior_sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def condition_value(tile: Tile, key: str) -> np.ndarray:
    """A tile's array as the model takes it: class codes as int64, everything else unchanged."""
    value = tile.arrays[key]
    if BY_KEY[key].kind in (Kind.LULC, Kind.CLOUD):
        return np.nan_to_num(value).astype(np.int64)
    return value


def temporal_prior(others: Sequence[tuple[float, Tile, WindowRoles]], keys: Sequence[str] = S2L2A_GROUPS
                   ) -> dict[str, np.ndarray]:
    """Per pixel, the clear value of the temporally nearest other acquisition of the same window.

    Parameters
    ----------
    others:
        ``(|days apart|, tile, roles)`` of other acquisitions of the window (any order); a pixel is
        clear in one where its ``roles.missing`` is False.

    Returns
    -------
    dict[str, np.ndarray]
        Per L2A group present in some other acquisition, (C, H, W) float32 on its native grid, NaN
        where no other acquisition is clear. Empty when ``others`` is.
    """
    out: dict[str, np.ndarray] = {}
    for key in keys:
        for _, tile, roles in sorted(others, key=lambda o: o[0]):
            if key not in tile.arrays:
                continue
            value = tile.arrays[key]
            if key not in out:
                out[key] = np.full(value.shape, np.nan, dtype=np.float32)
            take = ~roles.missing[key] & ~np.isfinite(out[key]).all(axis=0)
            out[key][:, take] = value[:, take]
    return out


MIN_MATCH_PIXELS = 64
"""Fewer common clear pixels than this: the prior is shifted by the mean difference only, or (none) kept."""


def match_prior(prior: np.ndarray, observed: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Radiometrically match a prior to the acquisition: per band ``a * prior + b`` fitted on the pixels
    that both show (least squares; illumination, phenology and atmosphere change between dates).

    Parameters
    ----------
    prior:
        (C, H, W), NaN where there is no guess.
    observed, missing:
        The acquisition's (C, H, W) values and its (H, W) missing mask.

    Returns
    -------
    np.ndarray
        (C, H, W) float32, clipped to the valid S2 DN range [1, 65535]. With fewer than :data:`MIN_MATCH_PIXELS`
        common pixels only the offset is
        fitted (none in common: the prior unchanged); a non-positive or absurd gain (outside 0.25–4)
        falls back to the offset too.
    """
    common = ~missing & np.isfinite(prior).all(axis=0) & np.isfinite(observed).all(axis=0)
    out = prior.astype(np.float32).copy()
    n = int(common.sum())
    if n == 0:
        return out
    for c in range(prior.shape[0]):
        x = prior[c][common].astype(np.float64)
        y = observed[c][common].astype(np.float64)
        gain = 1.0
        if n >= MIN_MATCH_PIXELS and x.var() > 0:
            gain = float(((x - x.mean()) * (y - y.mean())).mean() / x.var())
            if not 0.25 <= gain <= 4.0:
                gain = 1.0
        offset = float(y.mean() - gain * x.mean())
        out[c] = np.clip(gain * prior[c] + offset, 1.0, 65535.0).astype(np.float32)  # valid DN (0 = no-data)
    return out


def copy_through(tile: Tile, roles: WindowRoles, members: int) -> WindowFill:
    """The output of a window with nothing missing: every member is the observation (no model call)."""
    arrays = {k: np.broadcast_to(tile.arrays[k][None], (members, *tile.arrays[k].shape)).astype(np.float32)
              for k in roles.complete}
    return WindowFill(arrays, {k: np.zeros(roles.missing[k].shape, dtype=bool) for k in roles.complete}, roles)


def fill_windows(tiles: Sequence[Tile], roles: Sequence[WindowRoles], keys: Sequence[Any], spec: GapfillSpec,
                 model: Any, priors: Sequence[Mapping[str, np.ndarray] | None] | None = None) -> list[WindowFill]:
    """Gap-fill windows: one :func:`~copgen_core.inpaint.inpaint` call per group of equal roles.

    Parameters
    ----------
    tiles, roles:
        The windows and their roles (:func:`window_roles`); only observed windows.
    keys:
        One noise key per window (e.g. ``(window key, item id)``): member ``m`` of a window draws from
        ``(spec.seed, key, m)`` whatever batch it runs in.
    spec, model:
        Settings and the loaded :class:`~copgen_core.generate.CopgenModel`.
    priors:
        Per window, a guess of the L2A groups (C, H, W, NaN where none; e.g. :func:`temporal_prior`),
        used when ``spec.prior_start < 1`` (see :func:`~copgen_core.inpaint.inpaint`).

    Returns
    -------
    list[WindowFill]
        In the order of ``tiles``. Observed pixels are bit-identical to ``tile.arrays``; ``filled`` is
        True exactly where the output holds generated values.
    """
    from copgen_core.inpaint import inpaint

    out: list[WindowFill | None] = [None] * len(tiles)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, r in enumerate(roles):
        if not r.partial and not r.targets:
            out[i] = copy_through(tiles[i], r, spec.members)
        else:
            groups.setdefault(r.signature, []).append(i)
    for (conds, partial, targets), idx in groups.items():
        prior: dict[str, np.ndarray] | None = None
        if priors is not None and spec.prior_start < 1.0:
            prior = {}
            for k in (*partial, *targets):
                shape = tiles[idx[0]].arrays[k].shape if k in tiles[idx[0]].arrays else (
                    len(BY_KEY[k].channels), *roles[idx[0]].missing[k].shape)
                rows = [(priors[i] or {}).get(k) for i in idx]
                if any(r is not None for r in rows):
                    prior[k] = np.stack([np.full(shape, np.nan, np.float32) if r is None else r for r in rows])
        result = inpaint(
            model,
            {k: np.stack([condition_value(tiles[i], k) for i in idx]) for k in conds},
            {k: np.stack([tiles[i].arrays[k] for i in idx]) for k in partial},
            {k: np.stack([roles[i].missing[k] for i in idx]) for k in partial},
            targets=list(targets), members=spec.members, steps=spec.steps, seed=spec.seed,
            keys=[keys[i] for i in idx], resample=spec.resample, batch_size=spec.batch_size,
            prior=prior, prior_start=spec.prior_start if prior else 1.0,
        )
        composites = {k: result.composite(k) for k in partial}
        for n, i in enumerate(idx):
            r = roles[i]
            fill = copy_through(tiles[i], r, spec.members)
            for k in partial:
                fill.arrays[k] = composites[k].values[n].astype(np.float32)
                fill.filled[k] = composites[k].filled[n]
            for k in targets:
                fill.arrays[k] = np.asarray(result.outputs[k][n], dtype=np.float32)
                fill.filled[k] = np.ones(r.missing[k].shape, dtype=bool)
            fill.notes = tuple(result.notes)
            out[i] = fill
    return [f for f in out if f is not None]


# ------------------------------------------------------------------------------------- filled masks in the cube


def filled_name(key: str) -> str:
    """Variable name of a modality's filled mask, e.g. ``"S2L2A_B02_B03_B04_B08__filled"``."""
    return f"{key}{FILLED_SUFFIX}"


def add_filled_arrays(spec: CubeSpec) -> None:
    """Add a uint8 ``<key>__filled(time, y, x)`` array beside every modality of a created cube.

    Chunks are the cube's window blocks, so each window writes one object per array. Values: 0 observed,
    1 filled, 255 (the fill value) unwritten. Idempotent; re-consolidates the metadata when it adds
    anything. Driver only (like :func:`transforms.cube.create_cube`).
    """
    import zarr

    store = open_store(spec.url, spec.storage_options)
    root = zarr.open_group(store, mode="r+", zarr_format=3, use_consolidated=False)
    added = False
    for group in spec.groups:
        node = root[group.path]
        if not isinstance(node, zarr.Group):
            raise CubeError(f"the cube at {spec.url} has no group {group.path!r}; recreate it (new --output)")
        ny, nx = group.geobox.shape
        for key in group.modalities:
            name = filled_name(key)
            if name in node:
                continue
            node.create_array(
                name, shape=(len(spec.times), ny, nx), chunks=(1, group.block_px, group.block_px), dtype="uint8",
                fill_value=UINT8_FILL, dimension_names=("time", "y", "x"), overwrite=True,
                attributes={"long_name": f"where {key} holds generated pixels", "units": "1",
                            "flag_values": [FILLED_OBSERVED, FILLED_GENERATED], "flag_meanings": "observed filled",
                            "copgen_fill": UINT8_FILL, "copgen_modality": key, "grid_mapping": "spatial_ref"},
            )
            added = True
        if added:
            _consolidate(store, group.path)
    if added:
        _consolidate(store, "")


def _consolidate(store: Any, path: str) -> None:
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(store, path=path or None, zarr_format=3)


def _filled_region(spec: CubeSpec, key: WindowKey, modality: str, time_index: int) -> tuple[str, tuple[slice, ...], int]:
    window = spec.window(key)
    group = spec.group(key.epsg, modality)
    y0, x0 = group.block_origin_px(window)
    bpx = group.block_px
    off = int(round(block_offset_m(window) / group.gsd_m))
    path = f"{group.path}/{filled_name(modality)}"
    return path, (slice(time_index, time_index + 1), slice(y0, y0 + bpx), slice(x0, x0 + bpx)), off


def write_filled(spec: CubeSpec, key: WindowKey, time_index: int, filled: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Write the filled masks of one window (bool (H, W) on each modality's window grid); returns the blocks.

    Call it before :func:`~transforms.cube.write_window`, whose ledger record comes last.

    Raises
    ------
    AlignmentError
        If a region is off the array's chunk grid (the cube was made by other code).
    """
    import zarr

    store = open_store(spec.url, spec.storage_options)
    blocks = {}
    for modality, mask in filled.items():
        path, region, off = _filled_region(spec, key, modality, time_index)
        arr = zarr.open_array(store, path=path, mode="r+", zarr_format=3)
        validate_region(key, path, region, arr.shape, arr.chunks, arr.shards, ("time", "y", "x"))
        bpx = region[1].stop - region[1].start
        block = np.asarray(mask, dtype=bool)[off:off + bpx, off:off + bpx].astype(np.uint8)
        arr[region] = block[None]
        blocks[filled_name(modality)] = block
    return blocks


def read_filled(url: str, key: WindowKey, modality: str, time_index: int = 0,
                storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """The filled mask block a window owns, uint8 (h, w): 0 observed, 1 filled, 255 unwritten."""
    import zarr

    from transforms.cube import load_spec

    spec = load_spec(url, storage_options)
    path, region, _ = _filled_region(spec, key, BY_KEY[modality].key if modality in BY_KEY else modality, time_index)
    arr = zarr.open_array(open_store(url, storage_options, read_only=True), path=path, mode="r", zarr_format=3)
    return np.asarray(arr[region])[0]


# ------------------------------------------------------------------------------------- the batch


def _fail(unit: GapfillUnit, reason: str, cube: CubeSpec, seconds: dict[str, float]) -> Outcome:
    ledger.mark_failed(cube.url, unit.key, unit.unit.time_index, reason, storage_options=cube.storage_options)
    return Outcome(unit.name, str(unit.key), unit.unit.time_index, "failed", reason, seconds)


def window_provenance(unit: GapfillUnit, fill: WindowFill | None, roles: WindowRoles, spec: GapfillSpec,
                      model_hash: str, item_hash: str) -> dict[str, Any]:
    """The provenance record of one gap-filled window (ledger and cube)."""
    sources = {k: list(dict.fromkeys(s.item_id for ch in chans for s in ch)) for k, chans in unit.unit.sources}
    return {
        "acquisition": unit.acquisition, "item_hash": item_hash, "mode": roles.mode,
        "source_items": sources, "conditioning": list(roles.conditions),
        "complete": list(roles.complete), "inpainted": list(roles.partial), "generated": list(roles.targets),
        "filled_fraction": {k: float(v.mean()) for k, v in (fill.filled.items() if fill else ())},
        "cloud_fraction": roles.sky_fraction, "seed": spec.seed, "sample_key": list(unit.sample_key),
        "targets": list(S2L2A_GROUPS), "model_hash": model_hash if roles.mode == "gapfilled" else None,
        "sampler": spec.settings(), "notes": list(fill.notes) if fill else [],
        "prior_acquisitions": list(fill.prior_sources) if fill else [],
    }


def complete_prior(prior: Mapping[str, np.ndarray], tile: Tile, roles: WindowRoles) -> dict[str, np.ndarray]:
    """Give every missing pixel a guess: where no other acquisition shows it, the pull-push fill of the
    pixels that are known (observed or guessed), so single-date windows get a spatial prior.

    Returns, per L2A group present in the tile, (C, H, W) float32 (observed pixels are the observation,
    unused downstream); groups without any known pixel are left out.
    """
    import torch

    from copgen_core.inpaint import fill_missing

    out: dict[str, np.ndarray] = {}
    for key in S2L2A_GROUPS:
        if key not in tile.arrays:
            continue
        missing = roles.missing[key]
        values = tile.arrays[key].astype(np.float32).copy()
        guess = prior.get(key)
        if guess is not None:
            usable = missing & np.isfinite(guess).all(axis=0)
            values[:, usable] = guess[:, usable]
            known = ~missing | usable
        else:
            known = ~missing
        if not known.any():
            continue
        values[:, ~known] = 0.0
        filled = fill_missing(torch.from_numpy(values)[None], torch.from_numpy(known)[None], "smooth")[0]
        out[key] = filled.numpy().astype(np.float32)
    return out


def read_prior(unit: GapfillUnit, tile: Tile, roles: WindowRoles, spec: GapfillSpec
               ) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """The temporal prior of one window: its references' clear pixels, nearest first, matched to the tile.

    A reference that cannot be read is skipped (the window is still filled, with less prior).
    Returns the prior per L2A group (:func:`temporal_prior` then :func:`match_prior`) and the
    acquisitions that were read.
    """
    others: list[tuple[float, Tile, WindowRoles]] = []
    used: list[str] = []
    for ref in unit.references:
        try:
            ref_tile = read_tile(ref.unit, list(S2L2A_GROUPS))
            ref_scl = read_mask_band(ref.scl, ref.unit.window, MASK_BAND_GSD_M["SCL"]) if ref.scl is not None else None
        except ReadError:
            continue
        others.append((ref.days, ref_tile, window_roles(ref_tile, (), scl=ref_scl, rules=spec.mask_rules())))
        used.append(ref.acquisition)
    return window_prior(tile, roles, others), tuple(used)


def window_prior(tile: Tile, roles: WindowRoles, others: Sequence[tuple[float, Tile, WindowRoles]]
                 ) -> dict[str, np.ndarray]:
    """The prior of one window from other acquisitions already read (``(|days apart|, tile, roles)``):
    :func:`temporal_prior`, matched to the tile (:func:`match_prior`), completed spatially
    (:func:`complete_prior`); a group the tile lacks (a target) gets the raw temporal guess."""
    prior = temporal_prior(others)
    matched = {k: match_prior(v, tile.arrays[k], roles.missing[k]) for k, v in prior.items() if k in tile.arrays}
    completed = complete_prior(matched, tile, roles)
    completed.update({k: v for k, v in prior.items() if k not in tile.arrays})
    return completed


def gapfill_batch(units: Sequence[GapfillUnit], spec: GapfillSpec, cubes: Mapping[str, CubeSpec],
                  model_hash: str, item_hashes: Mapping[str, str], model: Any | None = None) -> list[Outcome]:
    """Read, gap-fill and write a batch of windows; one :class:`Outcome` per window.

    Parameters
    ----------
    units:
        Windows of any acquisitions (each names its cube).
    cubes:
        Cube URL -> the :class:`CubeSpec` it was created with.
    item_hashes:
        Acquisition item id -> :func:`item_hash`, recorded in the provenance.
    model:
        A loaded model; by default the worker's cached one (:func:`transforms.infer.get_model`), loaded
        only if some window needs it.
    """
    t0 = time.perf_counter()
    outcomes: list[Outcome] = []
    ready: list[tuple[GapfillUnit, Tile, WindowRoles]] = []
    read_keys = [*S2L2A_GROUPS, *(k for k in spec.conditions if k not in S2L2A_GROUPS)]
    for u in units:
        cube = cubes[u.cube_url]
        try:
            tile = read_tile(u.unit, read_keys)
            scl = read_mask_band(u.scl, u.unit.window, MASK_BAND_GSD_M["SCL"]) if u.scl is not None else None
        except ReadError as exc:
            outcomes.append(_fail(u, str(exc), cube, {}))
            continue
        ready.append((u, tile, window_roles(tile, spec.conditions, scl=scl, rules=spec.mask_rules())))
    priors: dict[int, tuple[dict[str, np.ndarray], tuple[str, ...]]] = {}
    if spec.prior_start < 1.0:
        for u, tile, roles in ready:
            if roles.mode == "gapfilled":  # no references: a spatial prior only
                priors[id(u)] = read_prior(u, tile, roles, spec)
    t_read = time.perf_counter() - t0
    observed = [(u, t, r) for u, t, r in ready if r.observed]
    fills: dict[int, WindowFill] = {}
    t1 = time.perf_counter()
    if observed:
        need_model = any(r.mode == "gapfilled" for _, _, r in observed)
        try:
            loaded = model if model is not None or not need_model else get_model(spec.infer_spec())
            results = fill_windows([t for _, t, _ in observed], [r for _, _, r in observed],
                                   [u.sample_key for u, _, _ in observed], spec, loaded,
                                   [priors[id(u)][0] if id(u) in priors else None for u, _, _ in observed])
            for (u, _, _), f in zip(observed, results, strict=True):
                if id(u) in priors:
                    f.prior_sources = priors[id(u)][1]
        except ValueError as exc:
            return outcomes + [_fail(u, f"gap filling refused the inputs: {exc}", cubes[u.cube_url], {"read": t_read})
                               for u, _, _ in ready]
        fills = {id(u): f for (u, _, _), f in zip(observed, results, strict=True)}
    t_infer = time.perf_counter() - t1
    n = max(len(ready), 1)
    for u, _, roles in ready:
        cube = cubes[u.cube_url]
        t2 = time.perf_counter()
        fill = fills.get(id(u))
        prov = window_provenance(u, fill, roles, spec, model_hash, item_hashes.get(u.acquisition, ""))
        try:
            if fill is None:
                write_window(cube, u.key, u.unit.time_index, {}, prov)
            else:
                write_filled(cube, u.key, u.unit.time_index, fill.filled)
                write_window(cube, u.key, u.unit.time_index, fill.arrays, prov)
        except Exception as exc:  # a write failure must not lose the other windows of the batch
            outcomes.append(_fail(u, f"write failed: {type(exc).__name__}: {exc}", cube, {"read": t_read / n}))
            continue
        outcomes.append(Outcome(u.name, str(u.key), u.unit.time_index, "done", "",
                                {"read": t_read / n, "infer": t_infer / n, "write": time.perf_counter() - t2}))
    return outcomes


# ------------------------------------------------------------------------------------- run state

STATE_PATH = "_runs/state.json"
STATE_VERSION = 1


class StateError(ValueError):
    """The run state file cannot be used; the message says how to recover."""


@dataclass(frozen=True)
class Acquisition:
    """One L2A item of the period: id, acquisition time and the hash of its item JSON."""

    item_id: str
    datetime: datetime
    item_hash: str

    def cube_url(self, output: str) -> str:
        """Where this acquisition's cube lives: ``<output>/<item id>.zarr``."""
        return f"{output.rstrip('/')}/{self.item_id}.zarr"


def item_hash(item: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of an item's JSON without its ``links`` (they name the API's address).

    Any change to the item's geometry, properties or assets (a reprocessed product, a new href)
    changes it.
    """
    doc = {k: v for k, v in item.items() if k != "links"}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def read_state(output: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run state of an output folder (an empty state when there is none yet).

    Returns
    -------
    dict
        ``{"version": 1, "acquisitions": {item_id: {"item_hash", "datetime", "cube", "windows"}},
        "last_run": {...} | None}``.

    Raises
    ------
    StateError
        When the file exists but is not a state written by this code.
    """
    fs, path = ledger.filesystem(f"{output.rstrip('/')}/{STATE_PATH}", storage_options)
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError:
        return {"version": STATE_VERSION, "acquisitions": {}, "last_run": None}
    try:
        state = json.loads(raw)
    except ValueError as exc:
        raise StateError(f"{path} is not valid JSON ({exc}); delete it to process every acquisition of the period "
                         "again (finished windows are kept and skipped)") from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or not isinstance(
            state.get("acquisitions"), dict):
        raise StateError(f"{path} is not a copgen gapfill state (version {STATE_VERSION}); delete it to process every "
                         "acquisition of the period again, or use another --output")
    return state


def put_atomic(url: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write one object atomically (see :func:`transforms.ledger.put_object`)."""
    fs, path = ledger.filesystem(url, storage_options)
    ledger.put_object(fs, path, data)


def write_state(output: str, state: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> None:
    """Write the run state atomically (see :func:`put_atomic`)."""
    data = (json.dumps(state, indent=1, sort_keys=True) + "\n").encode()
    put_atomic(f"{output.rstrip('/')}/{STATE_PATH}", data, storage_options)


def select_acquisitions(acquisitions: Sequence[Acquisition], state: Mapping[str, Any],
                        since: str | None) -> tuple[list[Acquisition], list[Acquisition]]:
    """Split acquisitions into (to process, unchanged since the last run).

    With ``since=None`` every acquisition is processed (finished windows are still skipped through the
    cubes' ledgers); with ``since="last"`` only those absent from ``state`` or whose item hash changed.
    """
    if since is None:
        return list(acquisitions), []
    if since != "last":
        raise ValueError(f"since must be None or 'last', got {since!r}")
    seen = state.get("acquisitions", {})
    todo = [a for a in acquisitions if seen.get(a.item_id, {}).get("item_hash") != a.item_hash]
    return todo, [a for a in acquisitions if a not in todo]


def record_acquisition(state: dict[str, Any], acquisition: Acquisition, cube_url: str | None, windows: int) -> None:
    """Mark an acquisition as completely processed in ``state`` (in place)."""
    state.setdefault("acquisitions", {})[acquisition.item_id] = {
        "item_hash": acquisition.item_hash, "datetime": acquisition.datetime.isoformat(), "cube": cube_url,
        "windows": windows,
    }


__all__ = [
    "DEFAULT_CONDITIONS", "FILLED_GENERATED", "FILLED_OBSERVED", "S2L2A_GROUPS", "Acquisition", "GapfillSpec",
    "GapfillUnit", "StateError", "WindowFill", "WindowRoles", "add_filled_arrays", "condition_value",
    "copy_through", "fill_windows", "filled_name", "gapfill_batch", "item_hash", "mask_band_source",
    "plan_gapfill_units", "put_atomic", "read_filled", "read_mask_band", "read_state", "record_acquisition",
    "select_acquisitions", "window_provenance", "window_roles", "write_filled", "write_state",
]
