"""What a COP-GEN cube holds and where each window lands in it: :class:`CubeSpec` and its layout.

The cube has one group per UTM zone and resolution, ``<epsg>/<gsd>m``. Each group's grid is the
bounding rectangle of the zone's planned windows on the window lattice, and every window owns one
square *block* of ``stride_m`` metres in it: the whole window without overlap, the centre of the
window (snapped to the 60 m quantum) with overlap. Blocks tile the plane, so one block is one Zarr
chunk column and no two windows ever write the same chunk. This module is pure geometry and value
types; :mod:`transforms.cube` does the IO. The format is described in ``docs/cube.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np

from copgen_core.modalities import BY_KEY, Kind, Modality, canonical
from transforms.geobox import GeoBox
from transforms.windows import GRID_QUANTUM_M, Window, WindowKey

CUBE_FORMAT_VERSION = 1
"""Bumped whenever the on-disk layout changes; part of the spec hash."""

CATEGORICAL_KINDS = frozenset({Kind.LULC, Kind.CLOUD})
"""Modalities stored as uint8 raw class codes; every other image modality is float32 in physical units."""

UINT8_FILL = 255
"""Fill value (sentinel for "unwritten" or "no valid member") of every uint8 variable."""

CLASS_CODES: Mapping[Kind, tuple[int, ...]] = {
    Kind.LULC: (0, 1, 2, 4, 5, 7, 8, 9, 10, 11),
    Kind.CLOUD: (0, 1, 2, 3),
}
"""Raw class codes of the categorical kinds, ascending (the same tables as ``copgen_core.normalize_classes``)."""

CLASS_NAMES: Mapping[Kind, tuple[str, ...]] = {
    Kind.LULC: ("no_data", "water", "trees", "flooded_vegetation", "crops", "built_area", "bare_ground",
                "snow_ice", "clouds", "rangeland"),
    Kind.CLOUD: ("clear", "thick_cloud", "thin_cloud", "cloud_shadow"),
}
"""CF ``flag_meanings`` of each code in :data:`CLASS_CODES`."""

UNITS: Mapping[Kind, str] = {
    Kind.S2: "1",
    Kind.S1: "1",
    Kind.DEM: "m",
    Kind.LULC: "1",
    Kind.CLOUD: "1",
}
"""CF units: S2 digital numbers (reflectance x 10000), S1 linear gamma0, DEM metres, class codes."""

CONTINUOUS_STATS: tuple[str, ...] = ("mean", "std", "p05", "p50", "p95")
CATEGORICAL_STATS: tuple[str, ...] = ("freq", "mode")


class CubeError(ValueError):
    """A cube cannot be created, written or read as asked; the message says why and what to do."""


class SpecMismatchError(CubeError):
    """The store already holds a cube (or something else) made from a different spec."""


class AlignmentError(CubeError):
    """A region write does not match the chunk/shard grid of the cube's template."""


def is_categorical(modality: Modality) -> bool:
    """True for modalities stored as uint8 class codes (LULC, cloud mask)."""
    return modality.kind in CATEGORICAL_KINDS


def group_path(epsg: int, gsd_m: float) -> str:
    """Zarr path of a zone/resolution group, e.g. ``"32632/10m"``."""
    return f"{int(epsg)}/{gsd_m:g}m"


def block_offset_m(window: Window) -> float:
    """Offset in metres from a window's upper-left corner to the upper-left corner of the block it owns.

    Half the overlap, rounded down to the 60 m quantum so the block starts on every native grid;
    0 without overlap.
    """
    overlap = window.footprint_m - window.stride_m
    return math.floor(overlap / 2 / GRID_QUANTUM_M) * GRID_QUANTUM_M


def _utc(t: object) -> datetime:
    if isinstance(t, np.datetime64):
        t = str(np.datetime_as_string(t.astype("datetime64[us]"), unit="us"))
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    if not isinstance(t, datetime):
        raise CubeError(f"time {t!r} is not a datetime, numpy datetime64 or ISO string")
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@dataclass(frozen=True)
class CubeGroup:
    """One zone/resolution group of a cube: its grid and what it holds.

    Attributes
    ----------
    epsg:
        UTM EPSG code of the zone.
    gsd_m:
        Pixel size in metres (10, 20, 30 or 60).
    modalities:
        Official keys of the image modalities stored here, canonical order.
    windows:
        Keys of the planned windows of the zone, sorted; the ``window`` dimension of the provenance table.
    geobox:
        The group's grid: bounding rectangle of the zone's window blocks.
    block_px:
        Side of one window block in pixels (``stride_m / gsd_m``); the spatial chunk size.
    """

    epsg: int
    gsd_m: float
    modalities: tuple[str, ...]
    windows: tuple[WindowKey, ...]
    geobox: GeoBox
    block_px: int

    @property
    def path(self) -> str:
        return group_path(self.epsg, self.gsd_m)

    def block_origin_px(self, window: Window) -> tuple[int, int]:
        """(row, col) in group pixels of the upper-left pixel of the block ``window`` owns.

        Raises
        ------
        AlignmentError
            If the block does not start on a whole block of the group grid (a window of another
            lattice or zone).
        """
        a, _, c, _, e, f = self.geobox.transform
        off = block_offset_m(window)
        row = (f - (window.y_top - off)) / -e
        col = (window.x0 + off - c) / a
        if window.epsg != self.epsg or row % self.block_px or col % self.block_px:
            raise AlignmentError(
                f"window {window.key} (stride {window.stride_m:g} m) does not fall on the block grid of group "
                f"{self.path!r} (block {self.block_px} px, origin x={c:g} m, y={f:g} m): pixel offset "
                f"(row={row:g}, col={col:g}) is not a multiple of {self.block_px}. Plan all windows of a cube "
                "with the same overlap and write them with the CubeSpec that created it."
            )
        return int(row), int(col)


@dataclass(frozen=True, kw_only=True)
class CubeSpec:
    """Everything that defines a cube; its :attr:`spec_hash` is stored in the cube's root attributes.

    Attributes
    ----------
    url:
        Where the cube lives: a local path, ``gs://bucket/path.zarr`` or ``memory://name.zarr``.
    storage_options:
        fsspec options for ``url`` (e.g. ``{"token": ..., "endpoint_url": ...}``); never stored, never hashed.
    modalities:
        Image modality keys or aliases; normalised to official keys in canonical order. Scalar
        modalities (location, date) have no pixel grid and are refused.
    windows:
        The planned windows; all on one lattice (same ``stride_m`` and ``footprint_m``). Sorted by key.
    times:
        Acquisition/target times, strictly increasing. Naive datetimes are taken as UTC; normalised to
        timezone-aware UTC datetimes.
    members:
        Ensemble size for generated cubes (dims ``time, member, band, y, x``); ``None`` for real data
        (dims ``time, band, y, x``).
    stats:
        Also store per-window ensemble statistics (needs ``members``).
    attrs:
        Run configuration/provenance, JSON-serialisable; stored in the root attributes and hashed.

    Raises
    ------
    CubeError
        On any invalid field, naming the field and the fix.
    """

    url: str
    storage_options: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    modalities: tuple[str, ...]
    windows: tuple[Window, ...]
    times: tuple[datetime, ...]
    members: int | None = None
    stats: bool = False
    attrs: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        try:
            mods = canonical(self.modalities)
        except KeyError as exc:
            raise CubeError(f"CubeSpec.modalities: {exc.args[0]}") from exc
        scalars = [m.key for m in mods if not m.is_image]
        if scalars or not mods:
            raise CubeError(
                f"CubeSpec.modalities={list(self.modalities)!r}: need at least one image modality, and scalar "
                f"modalities {scalars} have no pixel grid; they travel in the provenance instead."
            )
        object.__setattr__(self, "modalities", tuple(m.key for m in mods))
        wins = tuple(sorted(self.windows, key=lambda w: w.key))
        if not wins:
            raise CubeError("CubeSpec.windows is empty; plan at least one window (transforms.windows)")
        keys = [w.key for w in wins]
        dup = sorted({str(k) for k in keys if keys.count(k) > 1})
        if dup:
            raise CubeError(f"CubeSpec.windows has duplicate keys {dup}; pass each window once")
        lattices = {(w.stride_m, w.footprint_m) for w in wins}
        if len(lattices) > 1:
            raise CubeError(
                f"CubeSpec.windows mix lattices (stride_m, footprint_m) {sorted(lattices)}; a cube holds one "
                "lattice. Plan every window with the same overlap, or write separate cubes."
            )
        object.__setattr__(self, "windows", wins)
        times = tuple(_utc(t) for t in self.times)
        if not times or any(b <= a for a, b in zip(times, times[1:], strict=False)):
            raise CubeError(
                f"CubeSpec.times must be non-empty and strictly increasing, got {[t.isoformat() for t in times]}"
            )
        object.__setattr__(self, "times", times)
        if self.members is not None and (isinstance(self.members, bool) or int(self.members) < 1):
            raise CubeError(f"CubeSpec.members={self.members!r}: use an ensemble size >= 1, or None for real data")
        if self.stats and self.members is None:
            raise CubeError("CubeSpec.stats=True needs members: statistics are computed over ensemble members")
        try:
            json.dumps(dict(self.attrs), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise CubeError(f"CubeSpec.attrs must be JSON-serialisable (they go into the cube): {exc}") from exc
        object.__setattr__(self, "storage_options", dict(self.storage_options or {}))

    # -- identity ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The spec's content (no url, no storage_options) as plain JSON types; stored in the root attrs."""
        return {
            "format_version": CUBE_FORMAT_VERSION,
            "modalities": list(self.modalities),
            "windows": [str(w.key) for w in self.windows],
            "stride_m": self.windows[0].stride_m,
            "footprint_m": self.windows[0].footprint_m,
            "times": [t.isoformat() for t in self.times],
            "members": self.members,
            "stats": self.stats,
            "attrs": dict(self.attrs),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], url: str, storage_options: Mapping[str, Any] | None = None) -> CubeSpec:
        """Rebuild a spec from :meth:`to_json` output (e.g. read back from a cube's root attrs)."""
        if doc.get("format_version") != CUBE_FORMAT_VERSION:
            raise CubeError(
                f"cube at {url} has format version {doc.get('format_version')!r}; this code reads version "
                f"{CUBE_FORMAT_VERSION}. Use the copgen release that wrote it, or regenerate the cube."
            )
        wins = tuple(
            Window(WindowKey.parse(k), stride_m=float(doc["stride_m"]), footprint_m=float(doc["footprint_m"]))
            for k in doc["windows"]
        )
        return cls(url=url, storage_options=storage_options, modalities=tuple(doc["modalities"]), windows=wins,
                   times=tuple(doc["times"]), members=doc["members"], stats=bool(doc["stats"]),
                   attrs=dict(doc["attrs"]))

    @cached_property
    def spec_hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`to_json`: equal specs give equal hashes across machines."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @cached_property
    def content_hash(self) -> str:
        """sha256 like :attr:`spec_hash`, but blind to where the writing job read from and wrote to.

        The ``stac_url`` and ``output`` of the job config in ``attrs`` are left out: a training cube
        preprocessed again from the same world through a private STAC API on another port, or into
        another folder, has the same content hash (and another spec hash).
        """
        doc = self.to_json()
        attrs = dict(doc.get("attrs") or {})
        if isinstance(attrs.get("config"), dict):
            attrs["config"] = {k: v for k, v in attrs["config"].items() if k not in ("stac_url", "output")}
        text = json.dumps({**doc, "attrs": attrs}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    # -- layout -----------------------------------------------------------------------------------

    @cached_property
    def groups(self) -> tuple[CubeGroup, ...]:
        """The cube's groups, sorted by (epsg, gsd)."""
        stride = self.windows[0].stride_m
        out = []
        for epsg in sorted({w.epsg for w in self.windows}):
            zone = [w for w in self.windows if w.epsg == epsg]
            rows = [w.key.row for w in zone]
            cols = [w.key.col for w in zone]
            off = block_offset_m(zone[0])
            for gsd in sorted({float(BY_KEY[k].gsd_m or 0.0) for k in self.modalities}):  # image modalities only
                block_px = int(round(stride / gsd))
                geobox = GeoBox.from_origin(
                    epsg, min(cols) * stride + off, max(rows) * stride - off, gsd,
                    (max(rows) - min(rows) + 1) * block_px, (max(cols) - min(cols) + 1) * block_px,
                )
                mods = tuple(k for k in self.modalities if BY_KEY[k].gsd_m == gsd)
                out.append(CubeGroup(epsg, gsd, mods, tuple(w.key for w in zone), geobox, block_px))
        return tuple(out)

    def window(self, key: WindowKey) -> Window:
        """The planned window with this key.

        Raises
        ------
        CubeError
            If the key is not in :attr:`windows`.
        """
        for w in self.windows:
            if w.key == key:
                return w
        raise CubeError(
            f"window {key} is not planned in the cube at {self.url} ({len(self.windows)} windows); write only "
            "planned windows, or create a new cube whose spec includes it"
        )

    def group(self, epsg: int, modality: str | Modality) -> CubeGroup:
        """The group holding ``modality`` in zone ``epsg``."""
        key = modality.key if isinstance(modality, Modality) else modality
        for g in self.groups:
            if g.epsg == epsg and key in g.modalities:
                return g
        raise CubeError(f"modality {key!r} in zone EPSG:{epsg} is not part of the cube at {self.url}; "
                        f"it holds {list(self.modalities)} in zones {sorted({g.epsg for g in self.groups})}")

    def time_value(self, time_index: int) -> datetime:
        """The UTC time of ``time_index``; raises :class:`CubeError` when out of range."""
        if not 0 <= time_index < len(self.times):
            raise CubeError(f"time_index={time_index} is outside the cube's {len(self.times)} times "
                            f"[0, {len(self.times) - 1}]")
        return self.times[time_index]

    def planned(self) -> list[tuple[WindowKey, int]]:
        """Every (window key, time index) the cube expects, sorted; the input of ledger completeness."""
        return [(w.key, t) for w in self.windows for t in range(len(self.times))]


def variable_names(spec: CubeSpec, modality: str) -> tuple[str, ...]:
    """Data variables written for one modality: the modality itself, then its statistics if enabled."""
    mod = BY_KEY[modality]
    if not spec.stats:
        return (modality,)
    stats = CATEGORICAL_STATS if is_categorical(mod) else CONTINUOUS_STATS
    return (modality, *(f"{modality}__{s}" for s in stats))
