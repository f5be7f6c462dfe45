"""Generation windows: 1920 m squares on a per-UTM-zone lattice, with stable keys.

A window is COP-GEN's unit of work: one footprint seen by every image modality at its native grid
(10 m -> 192 px, 20 m -> 96 px, 60 m -> 32 px, 30 m DEM -> 64 px). Windows live on a lattice anchored at
the UTM origin of their zone, ``x0 = col * stride_m`` and ``y_top = row * stride_m``, so a window's key
``(epsg, row, col)`` names the same ground in every run, whatever the request's bbox. The stride is the
footprint minus the overlap and must be a multiple of 60 m so that the 10/20/60 m grids nest exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from copgen_core.modalities import FOOTPRINT_M, Modality
from transforms.geobox import GeoBox

GRID_QUANTUM_M = 60.0
"""Every window corner is a multiple of this (the coarsest S2 grid), so all native grids nest."""


class PlanError(ValueError):
    """A request cannot be laid out as windows (bad bbox, bad overlap, ...)."""


@dataclass(frozen=True, order=True)
class WindowKey:
    """Stable name of a window: UTM EPSG code, lattice row (northing / stride), lattice column."""

    epsg: int
    row: int
    col: int

    def __str__(self) -> str:
        return f"{self.epsg}_{self.row}_{self.col}"

    @classmethod
    def parse(cls, text: str) -> WindowKey:
        try:
            epsg, row, col = (int(p) for p in text.split("_"))
        except ValueError as exc:
            raise PlanError(f"bad window key {text!r}; expected '<epsg>_<row>_<col>' e.g. '32632_2650_168'") from exc
        return cls(epsg, row, col)


@dataclass(frozen=True)
class Window:
    """A 1920 m footprint on the lattice of its UTM zone.

    ``stride_m`` is the lattice pitch (1920 m without overlap). ``x0``/``y_top`` are the upper-left corner
    in metres of the zone's CRS.
    """

    key: WindowKey
    stride_m: float = FOOTPRINT_M
    footprint_m: float = FOOTPRINT_M

    @property
    def epsg(self) -> int:
        return self.key.epsg

    @property
    def x0(self) -> float:
        return self.key.col * self.stride_m

    @property
    def y_top(self) -> float:
        return self.key.row * self.stride_m

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in metres of the window's UTM CRS."""
        return (self.x0, self.y_top - self.footprint_m, self.x0 + self.footprint_m, self.y_top)

    def geobox(self, modality: Modality | float) -> GeoBox:
        """The native pixel grid of ``modality`` (or of a GSD in metres) over this window, in UTM."""
        gsd = modality if isinstance(modality, float | int) else modality.gsd_m
        if gsd is None:
            raise PlanError(f"{modality} is a scalar modality and has no pixel grid")
        n = int(round(self.footprint_m / gsd))
        return GeoBox.from_origin(self.epsg, self.x0, self.y_top, float(gsd), n, n)

    def centre_latlon(self) -> tuple[float, float]:
        """(lat, lon) in degrees of the window centre."""
        x = self.x0 + self.footprint_m / 2
        y = self.y_top - self.footprint_m / 2
        lon, lat = _to_wgs84(self.epsg).transform(x, y)
        return float(lat), float(lon)

    def bounds_wgs84(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees, densified so the UTM square is fully inside."""
        left, bottom, right, top = self.bounds
        return _to_wgs84(self.epsg).transform_bounds(left, bottom, right, top, densify_pts=21)


@lru_cache(maxsize=64)
def _to_wgs84(epsg: int):  # noqa: ANN202 - pyproj Transformer
    from pyproj import Transformer

    return Transformer.from_crs(epsg, 4326, always_xy=True)


@lru_cache(maxsize=64)
def _from_wgs84(epsg: int):  # noqa: ANN202
    from pyproj import Transformer

    return Transformer.from_crs(4326, epsg, always_xy=True)


def utm_epsg_for(lat: float, lon: float) -> int:
    """The standard UTM EPSG code of a point (no Norway/Svalbard exceptions: windows use plain zones)."""
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def check_stride(overlap_m: float, footprint_m: float = FOOTPRINT_M) -> float:
    """Return the lattice stride for an overlap, or raise :class:`PlanError` with the valid choices."""
    stride = footprint_m - overlap_m
    if overlap_m < 0 or stride <= 0:
        raise PlanError(f"overlap_m={overlap_m} must be in [0, {footprint_m}); e.g. 0, 480 or 960")
    if abs(stride / GRID_QUANTUM_M - round(stride / GRID_QUANTUM_M)) > 1e-9:
        raise PlanError(
            f"overlap_m={overlap_m} gives a stride of {stride} m, not a multiple of {GRID_QUANTUM_M:g} m; "
            "the 10/20/60 m grids would not nest. Use a multiple of 60 m, e.g. 0, 480 or 960."
        )
    return stride


def windows_for_bbox(
    bbox: tuple[float, float, float, float], *, overlap_m: float = 0.0, epsg: int | None = None
) -> list[Window]:
    """Lay the lattice windows that intersect a WGS84 bbox, per UTM zone.

    Parameters
    ----------
    bbox:
        (west, south, east, north) in degrees.
    overlap_m:
        Overlap between neighbouring windows in metres (stride = 1920 - overlap, a multiple of 60 m).
    epsg:
        Force one UTM CRS for the whole request; by default each part of the bbox uses its own zone.

    Returns
    -------
    list[Window]
        Sorted by key. Windows of different zones may cover the same ground near a zone boundary.

    Raises
    ------
    PlanError
        On an empty, inverted or out-of-range bbox, or a bad overlap.
    """
    west, south, east, north = (float(v) for v in bbox)
    if not (-180 <= west < east <= 180 and -85 <= south < north <= 85):
        raise PlanError(
            f"bbox {bbox} must be (west, south, east, north) in degrees with west < east, south < north, "
            "inside lon [-180, 180] and lat [-85, 85]"
        )
    stride = check_stride(overlap_m)
    if epsg is not None:
        parts = [(epsg, west, east)]
    else:
        parts = []
        lat_mid = (south + north) / 2
        zone_w = int(math.floor((west + 180) / 6))
        zone_e = int(math.floor((min(east, 179.999999) + 180) / 6))
        for z in range(zone_w, zone_e + 1):
            zw, ze = max(west, -180 + 6 * z), min(east, -180 + 6 * (z + 1))
            parts.append(((32600 if lat_mid >= 0 else 32700) + z + 1, zw, ze))
    out: set[Window] = set()
    for code, w, e in parts:
        fwd = _from_wgs84(code)
        left, bottom, right, top = fwd.transform_bounds(w, south, e, north, densify_pts=21)
        col0 = math.floor(left / stride) - (0 if overlap_m == 0 else int(math.ceil(FOOTPRINT_M / stride)) - 1)
        col1 = math.floor((right - 1e-6) / stride)
        row0 = math.ceil((bottom + 1e-6) / stride)
        row1 = math.ceil(top / stride) + (0 if overlap_m == 0 else int(math.ceil(FOOTPRINT_M / stride)) - 1)
        for row in range(row0, row1 + 1):
            for col in range(col0, col1 + 1):
                win = Window(WindowKey(code, row, col), stride_m=stride)
                l_, b_, r_, t_ = win.bounds
                if r_ > left and l_ < right and t_ > bottom and b_ < top:
                    out.add(win)
    return sorted(out, key=lambda w: w.key)


def iter_grid(epsg: int, rows: range, cols: range, *, overlap_m: float = 0.0) -> Iterator[Window]:
    """Windows of a rectangular block of the lattice (row-major, north to south)."""
    stride = check_stride(overlap_m)
    for row in sorted(rows, reverse=True):
        for col in cols:
            yield Window(WindowKey(epsg, row, col), stride_m=stride)
