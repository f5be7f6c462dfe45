"""Where the sample world's pixels are: UTM scene grids, the 1 arc-second DEM grid, region frames.

A scene is a square on a 10 m UTM grid whose origin is a multiple of 60 m, so the 20 m and 60 m
grids of the same scene nest exactly (every 20/60 m pixel covers 2x2/6x6 whole 10 m pixels). The
DEM of a scene is a separate EPSG:4326 grid with pixel centres on whole arc-seconds, like a
Copernicus DEM GLO-30 tile, covering the scene's footprint plus a margin.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import Transformer

from copgen_core import grid
from sampleworld.config import GRID_NEST_M, WINDOW_LATTICE_M, RegionConfig, SceneConfig

EARTH_RADIUS_M = 6371008.8
"""Mean Earth radius used by the regions' local frames, in metres."""

DEM_MARGIN_PX = 3
"""DEM pixels added around a scene's footprint so resampling to UTM never reads outside."""


@functools.cache
def _to_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(epsg, 4326, always_xy=True)


@functools.cache
def _from_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(4326, epsg, always_xy=True)


def utm_to_lonlat(epsg: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project UTM metres to (lon, lat) degrees (float64 arrays of the input shape)."""
    lon, lat = _to_lonlat(epsg).transform(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.asarray(lon), np.asarray(lat)


def lonlat_to_utm(epsg: int, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (lon, lat) degrees to UTM metres (float64 arrays of the input shape)."""
    x, y = _from_lonlat(epsg).transform(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return np.asarray(x), np.asarray(y)


def region_xy(region: RegionConfig, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metric coordinates (x east, y north, metres) of points in a region's equirectangular frame.

    The frame is centred on the region's anchor; every continuous field of the region is a function
    of these coordinates, which is what keeps neighbouring scenes and the DEM consistent.
    """
    k = math.pi / 180.0 * EARTH_RADIUS_M
    x = (np.asarray(lon, dtype=np.float64) - region.anchor_lon) * k * math.cos(math.radians(region.anchor_lat))
    y = (np.asarray(lat, dtype=np.float64) - region.anchor_lat) * k
    return x, y


@dataclass(frozen=True)
class SceneGrid:
    """A square scene on a UTM grid (the GeoBox of all its 10/20/60 m rasters).

    Attributes
    ----------
    name:
        ``"main"`` or the Major TOM cell it is centred on.
    kind:
        ``"main"`` or ``"cell"``.
    region:
        Region name.
    epsg:
        UTM EPSG code (326zz/327zz): the zone of the Major TOM cell holding the scene centre.
    left, top:
        Upper-left corner in metres, multiples of 60.
    size_m:
        Side in metres, a multiple of 60.
    cells:
        Major TOM cells the scene overlaps (sorted).
    """

    name: str
    kind: str
    region: str
    epsg: int
    left: float
    top: float
    size_m: int
    cells: tuple[str, ...]

    def shape(self, res_m: int) -> tuple[int, int]:
        """(rows, cols) at ``res_m`` (10, 20 or 60 m)."""
        n = self.size_m // res_m
        return n, n

    def transform(self, res_m: int) -> Affine:
        """North-up affine transform at ``res_m``: same origin for every resolution."""
        return Affine(float(res_m), 0.0, self.left, 0.0, -float(res_m), self.top)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in metres."""
        return self.left, self.top - self.size_m, self.left + self.size_m, self.top

    def centres(self, res_m: int) -> tuple[np.ndarray, np.ndarray]:
        """UTM pixel-centre coordinates (x, y), each (rows, cols) float64 metres."""
        rows, cols = self.shape(res_m)
        xs = self.left + (np.arange(cols) + 0.5) * res_m
        ys = self.top - (np.arange(rows) + 0.5) * res_m
        return np.meshgrid(xs, ys)

    def lonlat(self, res_m: int) -> tuple[np.ndarray, np.ndarray]:
        """(lon, lat) of pixel centres, each (rows, cols) float64 degrees."""
        x, y = self.centres(res_m)
        return utm_to_lonlat(self.epsg, x, y)

    def footprint_utm(self, per_side: int = 8) -> list[tuple[float, float]]:
        """Closed ring (counter-clockwise) of the scene boundary in UTM, ``per_side`` points a side."""
        left, bottom, right, top = self.bounds
        t = np.linspace(0.0, 1.0, per_side, endpoint=False)
        ring = (
            [(left + (right - left) * s, bottom) for s in t]
            + [(right, bottom + (top - bottom) * s) for s in t]
            + [(right - (right - left) * s, top) for s in t]
            + [(left, top - (top - bottom) * s) for s in t]
        )
        return [*ring, ring[0]]

    def footprint_lonlat(self, per_side: int = 8) -> list[tuple[float, float]]:
        """The footprint ring reprojected to (lon, lat) degrees (densified, so it follows the UTM square)."""
        ring = np.asarray(self.footprint_utm(per_side))
        lon, lat = utm_to_lonlat(self.epsg, ring[:, 0], ring[:, 1])
        return [(float(a), float(b)) for a, b in zip(lon, lat, strict=True)]

    def bbox_lonlat(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the reprojected footprint, degrees."""
        ring = np.asarray(self.footprint_lonlat(16))
        return (float(ring[:, 0].min()), float(ring[:, 1].min()), float(ring[:, 0].max()), float(ring[:, 1].max()))

    def centre_lonlat(self) -> tuple[float, float]:
        left, bottom, right, top = self.bounds
        lon, lat = utm_to_lonlat(self.epsg, np.array((left + right) / 2), np.array((bottom + top) / 2))
        return float(lon), float(lat)


def _snap(value: float) -> float:
    """Snap to copgen's window lattice (multiples of 1920 m, itself a multiple of 60 m): every scene is then
    tiled exactly by whole generation windows, so no window is part scene, part nothing."""
    step = WINDOW_LATTICE_M
    assert step % GRID_NEST_M == 0
    return float(round(value / step) * step)


def scene_grid(scene: SceneConfig) -> SceneGrid:
    """Place a configured scene on its UTM grid (origin snapped to the 1920 m window lattice).

    A ``cell`` scene is centred on its Major TOM cell's centre and named after the cell; the ``main``
    scene is centred on its configured point. The EPSG is that of the cell holding the centre.
    """
    if scene.kind == "cell":
        name = grid.cell_of(scene.lat, scene.lon)
        lat_c, lon_c = grid.cell_centre(name)
        centre_cell = name
    else:
        name = scene.name
        lat_c, lon_c = scene.lat, scene.lon
        centre_cell = grid.cell_of(lat_c, lon_c)
    epsg = grid.cell_epsg(centre_cell)
    xc, yc = lonlat_to_utm(epsg, np.array(lon_c), np.array(lat_c))
    half = scene.size_m / 2.0
    left = _snap(float(xc) - half)
    top = _snap(float(yc) + half)
    probe = SceneGrid(name, scene.kind, scene.region, epsg, left, top, scene.size_m, ())
    return SceneGrid(name, scene.kind, scene.region, epsg, left, top, scene.size_m, cells_overlapped(probe))


def cells_overlapped(scene: SceneGrid, step_m: int = 60) -> tuple[str, ...]:
    """Major TOM cells holding at least one of the scene's ``step_m`` pixel centres (sorted)."""
    lon, lat = scene.lonlat(step_m)
    rows, cols = grid.latlon_to_cell(lat.ravel(), lon.ravel())
    pairs = sorted(set(zip(rows.tolist(), cols.tolist(), strict=True)))
    return tuple(sorted(grid.cell_id(r, c) for r, c in pairs))


def dem_lon_spacing_arcsec(lat: float) -> float:
    """Longitude pixel spacing of Copernicus DEM GLO-30 at latitude ``lat`` (arc-seconds).

    1" up to 50 deg, 1.5" to 60, 2" to 70, 3" to 80, 5" to 85, 10" beyond (the product's rule).
    """
    a = abs(lat)
    for limit, spacing in ((50.0, 1.0), (60.0, 1.5), (70.0, 2.0), (80.0, 3.0), (85.0, 5.0)):
        if a < limit:
            return spacing
    return 10.0


@dataclass(frozen=True)
class DemGrid:
    """An EPSG:4326 grid with pixel centres on whole multiples of its spacing (COP-DEM style).

    Attributes
    ----------
    col0, row0:
        Index of the west-most column and north-most row: pixel centres are at
        ``lon = (col0 + j) * dlon`` and ``lat = (row0 - i) * dlat``.
    dlon_arcsec, dlat_arcsec:
        Pixel spacing in arc-seconds.
    shape:
        (rows, cols).
    """

    col0: int
    row0: int
    dlon_arcsec: float
    dlat_arcsec: float
    shape: tuple[int, int]

    @property
    def transform(self) -> Affine:
        dlon = self.dlon_arcsec / 3600.0
        dlat = self.dlat_arcsec / 3600.0
        return Affine(dlon, 0.0, (self.col0 - 0.5) * dlon, 0.0, -dlat, (self.row0 + 0.5) * dlat)

    def lonlat(self) -> tuple[np.ndarray, np.ndarray]:
        """(lon, lat) of pixel centres, each (rows, cols) float64 degrees."""
        rows, cols = self.shape
        lon = (self.col0 + np.arange(cols)) * (self.dlon_arcsec / 3600.0)
        lat = (self.row0 - np.arange(rows)) * (self.dlat_arcsec / 3600.0)
        return np.meshgrid(lon, lat)

    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        rows, cols = self.shape
        return t.c, t.f + rows * t.e, t.c + cols * t.a, t.f


def dem_grid(scene: SceneGrid) -> DemGrid:
    """The 1 arc-second (latitude) DEM grid covering ``scene`` plus :data:`DEM_MARGIN_PX` pixels."""
    west, south, east, north = scene.bbox_lonlat()
    dlat = 1.0
    dlon = dem_lon_spacing_arcsec((south + north) / 2.0)
    col0 = math.floor(west * 3600.0 / dlon) - DEM_MARGIN_PX
    col1 = math.ceil(east * 3600.0 / dlon) + DEM_MARGIN_PX
    row0 = math.ceil(north * 3600.0 / dlat) + DEM_MARGIN_PX
    row1 = math.floor(south * 3600.0 / dlat) - DEM_MARGIN_PX
    return DemGrid(col0, row0, dlon, dlat, (row0 - row1 + 1, col1 - col0 + 1))


def block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor`` x ``factor`` blocks of the last two axes.

    Parameters
    ----------
    a:
        (..., H, W) with H and W divisible by ``factor``.

    Returns
    -------
    numpy.ndarray
        (..., H/factor, W/factor), same dtype as ``a`` (float input expected).
    """
    *lead, h, w = a.shape
    if h % factor or w % factor:
        raise ValueError(f"shape {(h, w)} is not divisible by {factor}; scene sizes must be multiples of 60 m")
    b = a.reshape(*lead, h // factor, factor, w // factor, factor)
    return b.mean(axis=(-3, -1), dtype=np.float64).astype(a.dtype)
