"""Terrain: elevation, valleys, rivers, lakes and sea as pure functions of position.

The relief is built in a region's local metric frame (see :func:`sampleworld.geometry.region_xy`):

* a **valley network** along the zero-contour of a low-frequency noise field ``v``; ``|v| / |grad v|``
  approximates the distance to the valley axis in metres, which shapes U-shaped valleys with flat
  floors and a river in the middle;
* **mountains** of mixed smooth and ridged fBm, scaled by a slow "uplift" field and faded to zero on
  the valley floors;
* **lakes** where a lake-noise field is high on a valley floor (flat water surface just below the floor),
  and **sea** below 0 m in fjord landscapes (surface at 0 m, as in Copernicus DEM).

Because everything is a function of position, the EPSG:4326 DEM and the UTM scenes sample one surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sampleworld.config import LandscapeStyle
from sampleworld.keys import stable_key
from sampleworld.noise import fbm, smoothstep

_GRAD_STEP_M = 5.0


@dataclass(frozen=True)
class TerrainSample:
    """Terrain fields at a set of points (all arrays share the points' shape).

    Attributes
    ----------
    elevation_m:
        float64 metres above sea level (water surfaces flat: lake = floor - 2 m, sea = 0 m).
    floor_m:
        float64 local valley-floor elevation in metres.
    valley_dist_m:
        float64 approximate distance to the valley axis (river centreline) in metres.
    valley_floor:
        float64 in [0, 1]: 1 on flat valley floors, 0 on the slopes.
    lake, river, sea:
        bool masks of water bodies.
    lakeness:
        float64, > 0 inside lakes, slightly negative on their shores (for wetlands).
    """

    elevation_m: np.ndarray
    floor_m: np.ndarray
    valley_dist_m: np.ndarray
    valley_floor: np.ndarray
    lake: np.ndarray
    river: np.ndarray
    sea: np.ndarray
    lakeness: np.ndarray

    @property
    def water(self) -> np.ndarray:
        """bool: lake, river or sea."""
        return self.lake | self.river | self.sea


def region_key(seed: int, region: str) -> int:
    """Base key of a region's fields (every field key derives from it)."""
    return stable_key(seed, "region", region)


def sample_terrain(x_m: np.ndarray, y_m: np.ndarray, style: LandscapeStyle, key: int) -> TerrainSample:
    """Evaluate the terrain of a region at points.

    Parameters
    ----------
    x_m, y_m:
        float64 arrays (same shape) of region-frame coordinates in metres (x east, y north).
    style:
        The region's landscape parameters.
    key:
        The region's base key (:func:`region_key`).

    Returns
    -------
    TerrainSample
        Arrays of the points' shape.
    """
    x = np.asarray(x_m, dtype=np.float64)
    y = np.asarray(y_m, dtype=np.float64)
    kv = stable_key(key, "valley")
    lv = style.valley_wavelength_m
    v = fbm(x, y, kv, lv, 3)
    vx = fbm(x + _GRAD_STEP_M, y, kv, lv, 3)
    vy = fbm(x, y + _GRAD_STEP_M, kv, lv, 3)
    grad = np.hypot(vx - v, vy - v) / _GRAD_STEP_M
    grad = np.maximum(grad, 0.08 / lv)
    dist = np.abs(v) / grad

    floor = style.floor_m + style.floor_var_m * fbm(x, y, stable_key(key, "floor"), 30000.0, 2) / 0.5
    slopes = smoothstep(style.valley_floor_m, style.valley_wall_m, dist) ** 0.85
    uplift = np.clip(0.75 + 0.8 * fbm(x, y, stable_key(key, "uplift"), 40000.0, 2), 0.2, 1.0)
    smooth = np.clip(0.5 + fbm(x, y, stable_key(key, "hills"), style.mountain_wavelength_m, 8, gain=0.55) / 1.5,
                     0.0, 1.0)
    if style.ridged > 0:
        ridged = fbm(x, y, stable_key(key, "ridges"), style.mountain_wavelength_m, 8, gain=0.55, ridged=True)
        shape = (1.0 - style.ridged) * smooth + style.ridged * np.clip((ridged + 0.7) / 1.6, 0.0, 1.0)
    else:
        shape = smooth
    rough_n = fbm(x, y, stable_key(key, "rough"), 1500.0, 3)
    rough = 30.0 * rough_n * slopes + 3.0 * (1.0 + rough_n) * (1.0 - slopes)
    relief = style.relief_m * uplift * slopes * shape**1.25
    elevation = floor + style.relief_cap_m * np.tanh(relief / style.relief_cap_m) + rough

    valley_floor = 1.0 - smoothstep(0.0, 0.35, slopes)
    q = fbm(x, y, stable_key(key, "lakes"), 5000.0, 2)
    lakeness = q - style.lake_threshold - 0.6 * dist / style.valley_wall_m
    lake = lakeness > 0.0
    wiggle = 1.0 + 0.35 * fbm(x, y, stable_key(key, "riverwidth"), 900.0, 2)
    river = (dist < style.river_halfwidth_m * wiggle) & ~lake
    elevation = np.where(lake, floor - 2.0, elevation)
    elevation = np.where(river, np.minimum(elevation, floor - 1.0), elevation)
    if style.sea:
        sea = elevation < 0.0
        elevation = np.where(sea, 0.0, elevation)
        lake &= ~sea
        river &= ~sea
    else:
        sea = np.zeros(elevation.shape, dtype=bool)
    return TerrainSample(elevation, floor, dist, valley_floor, lake, river, sea, lakeness)


def slope_and_normal(elevation_m: np.ndarray, res_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slope and surface-normal components of a north-up elevation grid.

    Parameters
    ----------
    elevation_m:
        (rows, cols) float metres; row 0 is the northern edge.
    res_m:
        Pixel size in metres.

    Returns
    -------
    (slope_deg, dz_de, dz_dn):
        (rows, cols) float64: slope in degrees, and the elevation gradients towards east and north
        (dimensionless), from which the unit normal is ``(-dz_de, -dz_dn, 1) / norm``.
    """
    d_row, d_col = np.gradient(elevation_m.astype(np.float64), res_m)
    dz_de = d_col
    dz_dn = -d_row
    slope = np.degrees(np.arctan(np.hypot(dz_de, dz_dn)))
    return np.asarray(slope), np.asarray(dz_de), np.asarray(dz_dn)
