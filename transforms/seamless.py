"""Seamless large-area ensembles: overlapping windows generated in four waves onto one shared canvas.

Windows generated on their own disagree where they meet (seams). Here every window overlaps its
neighbours by ``overlap_m`` and the windows are coloured by the parity of their lattice (row, col)
into four **waves** (:func:`wave_schedule`): (even, even), (even, odd), (odd, even), (odd, odd). Two
windows of one wave are two strides apart, so with ``stride > footprint / 2`` (overlap < 960 m) they
never overlap and a gap of ``2 stride - footprint`` separates them. The waves run one after the other;
inside a wave every window runs in parallel.

A window of a later wave reads the **canvas** over its footprint: the pixels its earlier-wave
neighbours already wrote there are *known*, the rest is *empty*. It inpaints the empty pixels with the
known ones imposed (:func:`copgen_core.inpaint.inpaint`, RePaint), so the new content continues the
old across the border. It then writes (:func:`merge_window`) its values where the canvas was empty,
and in a short band of the known pixels next to them a feathered blend ``w * new + (1 - w) * old`` whose
weight falls from 1 at the border to 0 at ``feather_px`` pixels (Euclidean distance); farther known
pixels are left bit for bit. Every member is a canvas of its own: member ``m`` of a window sees member
``m`` of its neighbours, and its noise is drawn from ``(seed, (window sample key, m))``, so the result
does not depend on the engine, the worker count or the batches.

``mode="independent"`` is the baseline: each window is generated without looking at the canvas and
only the feathered write blends it in.

The canvas (:class:`CanvasSpec`, :func:`create_canvas`) is a Zarr v3 store with one group per UTM zone
and resolution (``<epsg>/<gsd>m``, as the cube), variables ``<key>(member, <key>__band, y, x)``
float32 (NaN = not yet written) and CF georeferencing (``spatial_ref``, written by rioxarray). Its grid
starts on the lattice, and its chunks are one stride block (all members, all bands), so a window's
footprint lies inside the chunk columns ``col, col + 1`` and rows ``row, row + 1`` of its own: windows of
one wave never share a chunk and write whole chunks only.

Restarts: before a window writes, it saves the chunks it is about to change in ``_undo/<key>.npz``;
its ledger record (``_ledger/done``, as in cubes) comes after the write and the undo file is dropped
last. A rerun first puts back the chunks of every unfinished window that left an undo file, so it
computes from exactly the canvas the first attempt saw and writes the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

import numpy as np

from copgen_core.modalities import BY_KEY, FOOTPRINT_M, VAE_DOWNSAMPLE, Kind, canonical, resolve
from transforms import ledger
from transforms.cube import content_digest, open_store, validate_region
from transforms.gapfill import condition_value, put_atomic
from transforms.geobox import GeoBox
from transforms.infer import InferSpec, get_model, usable_conditions
from transforms.process import Outcome, read_units
from transforms.tiles import Tile, WorkUnit
from transforms.windows import PlanError, Window, WindowKey, check_stride

WAVES = 4
CANVAS_FORMAT_VERSION = 1
ROOT_ATTR = "copgen_canvas"
UNDO_DIR = "_undo"
SEAMLESS_KINDS = (Kind.S2, Kind.S1, Kind.DEM)
"""Continuous image kinds, the only ones that can be blended across windows."""

Mode = Literal["waves", "independent"]


class CanvasError(ValueError):
    """A canvas cannot be created, written or read as asked; the message says why and what to do."""


# ------------------------------------------------------------------------------------- waves


def wave_of(key: WindowKey) -> int:
    """The wave (0..3) of a window: ``2 * (row % 2) + col % 2``."""
    return 2 * (key.row % 2) + key.col % 2


def wave_schedule(windows: Sequence[Window]) -> tuple[tuple[Window, ...], ...]:
    """The windows split into the four waves, each sorted by key (empty waves included)."""
    waves: list[list[Window]] = [[] for _ in range(WAVES)]
    for w in windows:
        waves[wave_of(w.key)].append(w)
    return tuple(tuple(sorted(ws, key=lambda w: w.key)) for ws in waves)


def check_seamless_stride(overlap_m: float, footprint_m: float = FOOTPRINT_M) -> float:
    """The stride for a seamless overlap, or :class:`PlanError`.

    The overlap must be positive (windows see their neighbours) and below half the footprint (two
    windows of one wave leave a gap for the later waves to fill); the stride a multiple of 60 m.
    """
    stride = check_stride(overlap_m, footprint_m)
    if overlap_m <= 0 or 2 * stride <= footprint_m:
        raise PlanError(
            f"overlap_m={overlap_m:g} does not suit seamless generation: it needs 0 < overlap < "
            f"{footprint_m / 2:g} m so that windows overlap their neighbours and windows of one wave leave a gap "
            "between them. Use e.g. 480 (stride 1440 m)."
        )
    return stride


# ------------------------------------------------------------------------------------- canvas layout


@dataclass(frozen=True)
class CanvasGroup:
    """One zone/resolution group of a canvas.

    Attributes
    ----------
    geobox:
        The group's grid: the union of the zone's window footprints, starting on the lattice.
    block_px:
        One stride in pixels: the spatial chunk size.
    footprint_px:
        One window in pixels (192/96/64/32 at 10/20/30/60 m).
    """

    epsg: int
    gsd_m: float
    modalities: tuple[str, ...]
    geobox: GeoBox
    block_px: int
    footprint_px: int

    @property
    def path(self) -> str:
        return f"{int(self.epsg)}/{self.gsd_m:g}m"

    def window_origin_px(self, window: Window) -> tuple[int, int]:
        """(row, col) of the window's upper-left pixel in the group grid (multiples of ``block_px``)."""
        a, _, c, _, e, f = self.geobox.transform
        row, col = (f - window.y_top) / -e, (window.x0 - c) / a
        if window.epsg != self.epsg or row % self.block_px or col % self.block_px or row < 0 or col < 0:
            raise CanvasError(f"window {window.key} is not on the lattice of canvas group {self.path!r}; write "
                              "with the CanvasSpec that created the canvas (load_canvas(url))")
        return int(row), int(col)

    def chunk_span(self, window: Window) -> tuple[slice, slice]:
        """The chunk-aligned rows and columns that hold a window's footprint (clipped to the grid)."""
        r0, c0 = self.window_origin_px(window)
        n = math.ceil(self.footprint_px / self.block_px) * self.block_px
        ny, nx = self.geobox.shape
        return slice(r0, min(r0 + n, ny)), slice(c0, min(c0 + n, nx))


def _utc(t: Any) -> datetime:
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@dataclass(frozen=True, kw_only=True)
class CanvasSpec:
    """What a canvas holds; its :attr:`spec_hash` is stored in the root attributes.

    Attributes
    ----------
    url, storage_options:
        Where the canvas lives (local path, ``gs://``, ``memory://``) and fsspec options (never stored).
    modalities:
        Continuous image modalities (S2, S1, DEM), normalised to official keys in canonical order.
    windows:
        The planned windows, one lattice with ``footprint / 2 < stride < footprint``.
    members:
        Ensemble size.
    time:
        The target date (UTC).
    attrs:
        Run configuration, JSON-serialisable; stored and hashed.

    Raises
    ------
    CanvasError
        On any invalid field, naming it and the fix.
    """

    url: str
    storage_options: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    modalities: tuple[str, ...]
    windows: tuple[Window, ...]
    members: int
    time: datetime
    attrs: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        try:
            mods = canonical(self.modalities)
        except KeyError as exc:
            raise CanvasError(f"CanvasSpec.modalities: {exc.args[0]}") from exc
        bad = [m.key for m in mods if m.kind not in SEAMLESS_KINDS]
        if bad or not mods:
            raise CanvasError(f"CanvasSpec.modalities={list(self.modalities)!r}: need at least one, and {bad} cannot "
                              "be blended; use S2, S1 or DEM images")
        object.__setattr__(self, "modalities", tuple(m.key for m in mods))
        wins = tuple(sorted(self.windows, key=lambda w: w.key))
        if not wins or len({w.key for w in wins}) != len(wins):
            raise CanvasError("CanvasSpec.windows must be non-empty and without duplicate keys")
        lattices = {(w.stride_m, w.footprint_m) for w in wins}
        if len(lattices) > 1:
            raise CanvasError(f"CanvasSpec.windows mix lattices {sorted(lattices)}; plan them with one overlap")
        stride, footprint = lattices.pop()
        if not footprint / 2 < stride < footprint:
            raise CanvasError(f"CanvasSpec.windows have stride {stride:g} m: a canvas needs footprint/2 < stride < "
                              f"footprint ({footprint / 2:g} < stride < {footprint:g})")
        object.__setattr__(self, "windows", wins)
        if isinstance(self.members, bool) or int(self.members) < 1:
            raise CanvasError(f"CanvasSpec.members={self.members!r}: use an ensemble size >= 1")
        object.__setattr__(self, "time", _utc(self.time))
        try:
            json.dumps(dict(self.attrs), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise CanvasError(f"CanvasSpec.attrs must be JSON-serialisable: {exc}") from exc
        object.__setattr__(self, "storage_options", dict(self.storage_options or {}))

    @property
    def stride_m(self) -> float:
        return self.windows[0].stride_m

    def to_json(self) -> dict[str, Any]:
        return {"format_version": CANVAS_FORMAT_VERSION, "modalities": list(self.modalities),
                "windows": [str(w.key) for w in self.windows], "stride_m": self.stride_m,
                "footprint_m": self.windows[0].footprint_m, "members": self.members,
                "time": self.time.isoformat(), "attrs": dict(self.attrs)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], url: str, storage_options: Mapping[str, Any] | None = None) -> CanvasSpec:
        if doc.get("format_version") != CANVAS_FORMAT_VERSION:
            raise CanvasError(f"canvas at {url} has format version {doc.get('format_version')!r}; this code reads "
                              f"version {CANVAS_FORMAT_VERSION}. Regenerate it with this release.")
        wins = tuple(Window(WindowKey.parse(k), stride_m=float(doc["stride_m"]), footprint_m=float(doc["footprint_m"]))
                     for k in doc["windows"])
        return cls(url=url, storage_options=storage_options, modalities=tuple(doc["modalities"]), windows=wins,
                   members=int(doc["members"]), time=doc["time"], attrs=dict(doc["attrs"]))

    @cached_property
    def spec_hash(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @cached_property
    def groups(self) -> tuple[CanvasGroup, ...]:
        stride, footprint = self.stride_m, self.windows[0].footprint_m
        out = []
        for epsg in sorted({w.epsg for w in self.windows}):
            zone = [w for w in self.windows if w.epsg == epsg]
            rows, cols = [w.key.row for w in zone], [w.key.col for w in zone]
            for gsd in sorted({float(BY_KEY[k].gsd_m or 0.0) for k in self.modalities}):
                block, n = int(round(stride / gsd)), int(round(footprint / gsd))
                h = (max(rows) - min(rows)) * block + n
                w = (max(cols) - min(cols)) * block + n
                geobox = GeoBox.from_origin(epsg, min(cols) * stride, max(rows) * stride, gsd, h, w)
                mods = tuple(k for k in self.modalities if BY_KEY[k].gsd_m == gsd)
                out.append(CanvasGroup(epsg, gsd, mods, geobox, block, n))
        return tuple(out)

    def group(self, epsg: int, modality: str) -> CanvasGroup:
        for g in self.groups:
            if g.epsg == epsg and modality in g.modalities:
                return g
        raise CanvasError(f"modality {modality!r} in zone EPSG:{epsg} is not part of the canvas at {self.url}")

    def window(self, key: WindowKey) -> Window:
        for w in self.windows:
            if w.key == key:
                return w
        raise CanvasError(f"window {key} is not planned in the canvas at {self.url}")


# ------------------------------------------------------------------------------------- canvas IO


def _quiet_consolidate(store: Any, path: str = "") -> None:
    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(store, path=path or None, zarr_format=3)


def _template(spec: CanvasSpec, group: CanvasGroup) -> tuple[Any, dict[str, dict[str, Any]]]:
    import dask.array as da
    import rioxarray  # noqa: F401 - registers .rio
    import xarray as xr
    from affine import Affine

    gb, m = group.geobox, spec.members
    ny, nx = gb.shape
    ds = xr.Dataset(
        coords={"y": gb.y_coords, "x": gb.x_coords,
                "member": ("member", np.arange(m, dtype=np.int64), {"long_name": "ensemble member"}),
                "time": ((), np.datetime64(spec.time.replace(tzinfo=None), "ns"), {"long_name": "target date (UTC)"})},
        attrs={"Conventions": "CF-1.8", "epsg": group.epsg, "gsd_m": group.gsd_m, "block_px": group.block_px,
               "stride_m": spec.stride_m, "footprint_m": spec.windows[0].footprint_m},
    )
    enc: dict[str, dict[str, Any]] = {}
    for key in group.modalities:
        mod = BY_KEY[key]
        band = f"{key}__band"
        ds.coords[band] = (band, np.array(mod.channels, dtype=object), {"long_name": f"{key} channel"})
        shape = (m, len(mod.channels), ny, nx)
        ds[key] = (("member", band, "y", "x"), da.full(shape, np.nan, dtype=np.float32, chunks=shape),
                   {"long_name": key, "units": "m" if mod.kind is Kind.DEM else "1", "copgen_modality": key,
                    "copgen_kind": mod.kind.value})
        enc[key] = {"chunks": (m, len(mod.channels), group.block_px, group.block_px), "fill_value": np.nan}
    ds = ds.rio.write_crs(f"EPSG:{group.epsg}").rio.write_transform(Affine(*gb.transform))
    for var in ds.data_vars.values():
        var.encoding.pop("grid_mapping", None)
        var.attrs["grid_mapping"] = "spatial_ref"
    return ds, enc


def _root_info(spec_url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    import zarr

    try:
        attrs = dict(zarr.open_group(open_store(spec_url, storage_options, read_only=True), mode="r").attrs)
    except FileNotFoundError:
        return None
    info: Any = attrs.get(ROOT_ATTR) or {"state": "foreign"}
    return dict(info)


def create_canvas(spec: CanvasSpec) -> None:
    """Write the canvas template (metadata and coordinates only) exactly once.

    Idempotent: a finished canvas of the same spec is left alone, an interrupted creation is redone.

    Raises
    ------
    CanvasError
        If the URL holds a canvas of another spec, another Zarr store or other files.
    """
    import zarr

    info = _root_info(spec.url, spec.storage_options)
    if info is None:
        fs, path = ledger.filesystem(spec.url, spec.storage_options)
        try:
            leftovers = fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            leftovers = []
        if leftovers:
            raise CanvasError(f"{spec.url} is not empty and holds no canvas; use another --output")
    elif info.get("state") == "foreign":
        raise CanvasError(f"{spec.url} holds a Zarr store that is not a copgen canvas; use another --output")
    elif info.get("spec_hash") != spec.spec_hash:
        old = info.get("spec", {})
        diff = sorted(k for k in set(old) | set(spec.to_json()) if old.get(k) != spec.to_json().get(k))
        raise CanvasError(f"the canvas at {spec.url} was made with other settings (fields differ: {diff}); use another "
                          "--output, or delete it to start again")
    elif info.get("state") == "ready":
        return
    store = open_store(spec.url, spec.storage_options)
    marker: dict[str, Any] = {"format_version": CANVAS_FORMAT_VERSION, "spec_hash": spec.spec_hash,
                              "spec": spec.to_json()}
    zarr.open_group(store, mode="w" if info is None else "r+", zarr_format=3).attrs[ROOT_ATTR] = {
        **marker, "state": "creating"}
    for group in spec.groups:
        ds, enc = _template(spec, group)
        ds.to_zarr(store, group=group.path, mode="w", compute=False, zarr_format=3, consolidated=False, encoding=enc)
        _quiet_consolidate(store, group.path)
    zarr.open_group(store, mode="r+", zarr_format=3).attrs[ROOT_ATTR] = {**marker, "state": "ready"}
    _quiet_consolidate(store)


def load_canvas(url: str, storage_options: Mapping[str, Any] | None = None) -> CanvasSpec:
    """The :class:`CanvasSpec` a canvas was created from.

    Raises
    ------
    CanvasError
        If there is no finished canvas at ``url``.
    """
    info = _root_info(url, storage_options)
    if info is None or info.get("state") != "ready":
        raise CanvasError(f"no finished canvas at {url}: run `copgen seamless` with --output {url}")
    return CanvasSpec.from_json(info["spec"], url, storage_options)


def _array(spec: CanvasSpec, group: CanvasGroup, key: str, mode: str = "r+") -> Any:
    import zarr

    store = open_store(spec.url, spec.storage_options, read_only=mode == "r")
    return zarr.open_array(store, path=f"{group.path}/{key}", mode=mode, zarr_format=3)  # type: ignore[arg-type]


def read_canvas(spec: CanvasSpec, window: Window, key: str) -> np.ndarray:
    """The canvas over a window's footprint: float32 ``(members, C, H, W)``, NaN where nothing is written."""
    group = spec.group(window.epsg, key)
    r0, c0 = group.window_origin_px(window)
    n = group.footprint_px
    return np.asarray(_array(spec, group, key, "r")[:, :, r0:r0 + n, c0:c0 + n], dtype=np.float32)


def _read_span(spec: CanvasSpec, window: Window, key: str) -> np.ndarray:
    group = spec.group(window.epsg, key)
    rows, cols = group.chunk_span(window)
    return np.asarray(_array(spec, group, key, "r")[:, :, rows, cols], dtype=np.float32)


def _write_span(spec: CanvasSpec, window: Window, key: str, values: np.ndarray) -> None:
    group = spec.group(window.epsg, key)
    rows, cols = group.chunk_span(window)
    arr = _array(spec, group, key)
    region = (slice(None), slice(None), rows, cols)
    validate_region(window.key, f"{group.path}/{key}", region, arr.shape, arr.chunks, arr.shards,
                    ("member", "band", "y", "x"))
    arr[region] = values


def write_canvas(spec: CanvasSpec, window: Window, key: str, values: np.ndarray) -> None:
    """Write a window's ``(members, C, H, W)`` values over its footprint (whole chunks, read-modify-write).

    Only the window's own chunks are touched, which no other window of its wave touches.
    """
    group = spec.group(window.epsg, key)
    n = group.footprint_px
    want = (spec.members, len(BY_KEY[key].channels), n, n)
    if values.shape != want:
        raise CanvasError(f"window {window.key} {key}: expected {want} (members, C, H, W), got {values.shape}")
    span = _read_span(spec, window, key)
    span[:, :, :n, :n] = values
    _write_span(spec, window, key, span)


# ------------------------------------------------------------------------------------- restarts


def _undo_url(spec: CanvasSpec, key: WindowKey) -> str:
    return f"{spec.url.rstrip('/')}/{UNDO_DIR}/{key}.npz"


def save_undo(spec: CanvasSpec, window: Window, keys: Sequence[str]) -> None:
    """Save the chunks a window is about to change (one atomic object)."""
    buffer = io.BytesIO()
    savez: Any = np.savez
    savez(buffer, **{k: _read_span(spec, window, k) for k in keys})
    put_atomic(_undo_url(spec, window.key), buffer.getvalue(), spec.storage_options)


def restore_undo(spec: CanvasSpec, window: Window) -> bool:
    """Put back the chunks an unfinished earlier attempt of this window changed; True if there were any."""
    fs, path = ledger.filesystem(_undo_url(spec, window.key), spec.storage_options)
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError:
        return False
    with np.load(io.BytesIO(raw)) as saved:
        for key in saved.files:
            _write_span(spec, window, key, saved[key])
    return True


def drop_undo(spec: CanvasSpec, window: Window) -> None:
    fs, path = ledger.filesystem(_undo_url(spec, window.key), spec.storage_options)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------------------------- merging


def empty_mask(known: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels where any member or channel of ``known`` (members, C, H, W) is not finite."""
    return ~np.isfinite(known).all(axis=(0, 1))


def feather_weights(empty: np.ndarray, feather_px: int) -> np.ndarray:
    """Weight of the new values, float32 (H, W): 1 where empty, ``1 - d / (feather_px + 1)`` at known
    pixels at Euclidean distance ``d`` from the nearest empty one (0 beyond), 0 everywhere without an
    empty pixel."""
    e = np.asarray(empty, dtype=bool)
    if not e.any():
        return np.zeros(e.shape, dtype=np.float32)
    if feather_px <= 0:
        return e.astype(np.float32)
    from scipy.ndimage import distance_transform_edt

    d = distance_transform_edt(~e)
    return np.clip(1.0 - d / (feather_px + 1.0), 0.0, 1.0).astype(np.float32)


def merge_window(known: np.ndarray, generated: np.ndarray, feather_px: int) -> np.ndarray:
    """The window's values after its write: generated where the canvas was empty, a feathered blend in
    the ``feather_px`` known pixels next to them, the known values (bit for bit) elsewhere.

    Parameters
    ----------
    known:
        Canvas over the footprint, (members, C, H, W), NaN where empty.
    generated:
        The window's generated values, same shape.
    """
    empty = empty_mask(known)
    w = feather_weights(empty, feather_px)[None, None]
    g = generated.astype(np.float32)
    blend = w * g + (np.float32(1.0) - w) * known
    return np.where(empty[None, None], g, np.where(w > 0, blend, known)).astype(np.float32)


# ------------------------------------------------------------------------------------- the batch


@dataclass(frozen=True)
class SeamlessSpec:
    """Everything that decides the canvas' numbers (part of each window's provenance)."""

    model: str
    targets: tuple[str, ...]
    conditions: tuple[str, ...]
    members: int = 4
    steps: int = 50
    seed: int = 0
    batch_size: int = 8
    mode: Mode = "waves"
    feather_m: float = 120.0
    resample: int = 1
    device: str = "cpu"
    dtype: str = "fp32"
    threads: int = 1

    def infer_spec(self) -> InferSpec:
        return InferSpec(model=self.model, targets=self.targets, conditions=self.conditions, members=self.members,
                         steps=self.steps, seed=self.seed, batch_size=self.batch_size, device=self.device,
                         dtype=self.dtype, threads=self.threads)

    def feather_px(self, gsd_m: float) -> int:
        """The feather band in pixels of a ``gsd_m`` grid."""
        return int(round(self.feather_m / gsd_m))

    def settings(self) -> dict[str, Any]:
        return {"model": self.model, "members": self.members, "steps": self.steps, "seed": self.seed,
                "mode": self.mode, "feather_m": self.feather_m, "resample": self.resample, "dtype": self.dtype,
                "threads": self.threads}


def _imposable(key: str, values: np.ndarray) -> np.ndarray:
    """Known canvas pixels as a valid observation: S2 DN clipped to the product's [0, 65535] range."""
    if BY_KEY[key].kind is Kind.S2:
        return np.where(np.isfinite(values), np.clip(values, 0.0, 65535.0), np.nan).astype(np.float32)
    return values


def generate_windows(tiles: Sequence[Tile], known: Sequence[Mapping[str, np.ndarray]], spec: SeamlessSpec,
                     model: Any) -> list[dict[str, np.ndarray]]:
    """Generate every target of every window, ``(members, C, H, W)`` each, around the known canvas pixels.

    Each (window, member) is one sample keyed ``(tile.unit.name, member)`` with its own known pixels;
    ``mode="independent"`` ignores them. Windows are grouped by the conditions they hold completely.
    """
    from copgen_core.inpaint import inpaint

    out: list[dict[str, np.ndarray]] = [{} for _ in tiles]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, tile in enumerate(tiles):
        groups.setdefault(usable_conditions(tile, spec.conditions), []).append(i)
    m = spec.members
    for conds, idx in groups.items():
        samples = [(i, j) for i in idx for j in range(m)]
        masks = {}
        for k in spec.targets:
            if spec.mode == "independent":
                masks[k] = np.ones((len(samples), *known[idx[0]][k].shape[-2:]), dtype=bool)
            else:
                masks[k] = np.stack([empty_mask(known[i][k]) for i, _ in samples])
        result = inpaint(
            model,
            {k: np.stack([condition_value(tiles[i], k) for i, _ in samples]) for k in conds},
            {k: np.stack([_imposable(k, known[i][k][j]) for i, j in samples]) for k in spec.targets},
            masks, members=1, steps=spec.steps, seed=spec.seed,
            keys=[(tiles[i].unit.name, j) for i, j in samples], resample=spec.resample, batch_size=spec.batch_size,
        )
        for k in spec.targets:
            values = np.asarray(result.outputs[k][:, 0], dtype=np.float32)
            for n, i in enumerate(idx):
                out[i][k] = values[n * m:(n + 1) * m]
    return out


def _fail(canvas: CanvasSpec, unit: WorkUnit, reason: str, seconds: dict[str, float]) -> Outcome:
    ledger.mark_failed(canvas.url, unit.key, 0, reason, storage_options=canvas.storage_options)
    return Outcome(unit.name, str(unit.key), 0, "failed", reason, seconds)


def seamless_batch(units: Sequence[WorkUnit], spec: SeamlessSpec, canvas: CanvasSpec, model_hash: str,
                   model: Any | None = None) -> list[Outcome]:
    """Generate and write a batch of windows of one wave; one :class:`Outcome` per window.

    Warning
    -------
    All windows of the batch must belong to one wave, and the earlier waves must be finished: a window
    reads its neighbours' pixels from the canvas.
    """
    t0 = time.perf_counter()
    for u in units:
        restore_undo(canvas, canvas.window(u.key))
    tiles, bad = read_units(units, spec.conditions)
    outcomes = [_fail(canvas, u, reason, {}) for u, reason in bad]
    known = [{k: read_canvas(canvas, canvas.window(t.unit.key), k) for k in spec.targets} for t in tiles]
    t_read = time.perf_counter() - t0
    todo = [i for i, kn in enumerate(known) if any(empty_mask(v).any() for v in kn.values())]
    t1 = time.perf_counter()
    generated: dict[int, dict[str, np.ndarray]] = {}
    if todo:
        try:
            loaded = model if model is not None else get_model(spec.infer_spec())
            results = generate_windows([tiles[i] for i in todo], [known[i] for i in todo], spec, loaded)
        except ValueError as exc:
            return outcomes + [_fail(canvas, t.unit, f"generation refused the inputs: {exc}", {"read": t_read})
                               for t in tiles]
        generated = dict(zip(todo, results, strict=True))
    t_infer = time.perf_counter() - t1
    n = max(len(tiles), 1)
    for i, tile in enumerate(tiles):
        t2 = time.perf_counter()
        window = canvas.window(tile.unit.key)
        merged: dict[str, np.ndarray] = {}
        if i in generated:
            for k in spec.targets:
                merged[k] = merge_window(known[i][k], generated[i][k], spec.feather_px(BY_KEY[k].gsd_m or 1.0))
        prov = {
            "window": str(window.key), "wave": wave_of(window.key), "time": canvas.time.isoformat(),
            "sample_key": tile.unit.name, "conditioning": list(usable_conditions(tile, spec.conditions)),
            "targets": list(spec.targets), "known_fraction": {k: float(1.0 - empty_mask(v).mean())
                                                              for k, v in known[i].items()},
            "written": bool(merged), "seed": spec.seed, "model_hash": model_hash, "sampler": spec.settings(),
            "source_items": {k: list(v) for k, v in tile.item_ids.items()},
        }
        try:
            if merged:
                save_undo(canvas, window, list(merged))
                for k, values in merged.items():
                    write_canvas(canvas, window, k, values)
            ledger.mark_done(canvas.url, window.key, 0, digest=content_digest(merged), provenance=prov,
                             variables=list(merged), storage_options=canvas.storage_options)
            drop_undo(canvas, window)
        except Exception as exc:  # a write failure must not lose the other windows of the batch
            outcomes.append(_fail(canvas, tile.unit, f"write failed: {type(exc).__name__}: {exc}", {"read": t_read / n}))
            continue
        outcomes.append(Outcome(tile.unit.name, str(window.key), 0, "done", "",
                                {"read": t_read / n, "infer": t_infer / n, "write": time.perf_counter() - t2}))
    return outcomes


# ------------------------------------------------------------------------------------- seams


def _coarsen(values: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return values
    h, w = (s // factor * factor for s in values.shape[-2:])
    v = values[..., :h, :w]
    return v.reshape(*v.shape[:-2], h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


def canvas_seam_ratios(values: np.ndarray, block_px: int, footprint_px: int, coarsen: int = 1) -> dict[str, float]:
    """Seam ratios of a canvas at the borders the wave layout creates, averaged over members and bands.

    Where a later window meets the pixels of earlier ones, the border lies at ``k * block_px`` or at
    ``k * block_px + overlap_px`` (``overlap_px = footprint_px - block_px``) from the canvas origin, along
    both axes. :func:`copgen_core.metrics.seam_ratio` is taken for each family; with ``coarsen > 1`` the
    canvas is first averaged over ``coarsen`` x ``coarsen`` blocks, which catches seams that a feathered
    blend spreads over a few pixels.

    Parameters
    ----------
    values:
        (..., H, W) canvas values (e.g. (members, C, H, W)); NaN pairs are skipped.
    block_px, footprint_px:
        Stride and window size in pixels of this grid.
    coarsen:
        Block-average factor; ``block_px`` and the overlap must be multiples of it.

    Returns
    -------
    dict
        ``at_stride``, ``at_overlap`` (the two families) and ``mean`` (their mean); natively also
        ``cell_edges``: both families against the other 8 px VAE cell edges inside windows
        (:func:`copgen_core.metrics.seam_ratio` with ``inside_every``), which the decoder makes
        rougher than the pixels within a cell.
    """
    from copgen_core.metrics import seam_ratio

    overlap = footprint_px - block_px
    if block_px % coarsen or overlap % coarsen:
        raise ValueError(f"coarsen={coarsen} must divide the stride ({block_px} px) and the overlap ({overlap} px)")
    v = _coarsen(np.asarray(values, dtype=np.float64), coarsen)
    pitch = block_px // coarsen
    out = {"at_stride": float(np.nanmean(seam_ratio(v, pitch, 0))),
           "at_overlap": float(np.nanmean(seam_ratio(v, pitch, overlap // coarsen)))}
    out["mean"] = (out["at_stride"] + out["at_overlap"]) / 2
    if coarsen == 1 and block_px % VAE_DOWNSAMPLE == 0 and overlap % VAE_DOWNSAMPLE == 0:
        # the borders are VAE cell edges: also compare them with the other cell edges inside windows
        out["cell_edges"] = float(np.nanmean([np.nanmean(seam_ratio(v, pitch, o, VAE_DOWNSAMPLE))
                                              for o in (0, overlap)]))
    return out


def read_canvas_group(url: str, modality: str, epsg: int | None = None,
                      storage_options: Mapping[str, Any] | None = None) -> tuple[np.ndarray, CanvasGroup]:
    """A whole canvas variable, ``(members, C, H, W)`` float32, and its group (first zone by default)."""
    spec = load_canvas(url, storage_options)
    key = resolve(modality).key
    group = spec.group(epsg if epsg is not None else spec.groups[0].epsg, key)
    return np.asarray(_array(spec, group, key, "r")[...], dtype=np.float32), group


__all__ = [
    "WAVES", "CanvasError", "CanvasGroup", "CanvasSpec", "SeamlessSpec", "canvas_seam_ratios",
    "check_seamless_stride", "create_canvas", "drop_undo", "empty_mask", "feather_weights", "generate_windows",
    "load_canvas", "merge_window", "read_canvas", "read_canvas_group", "restore_undo", "save_undo",
    "seamless_batch", "wave_of", "wave_schedule", "write_canvas",
]
