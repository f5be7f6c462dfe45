"""Land cover on a scene's 10 m grid, derived from terrain, slope, moisture and settlements.

Two layers come out: the Esri/IO annual class code (what ``io-lulc-annual-v02`` stores) and a finer
:class:`Cover` kind that the optical and radar models use (deciduous vs coniferous trees, crop type,
rock vs soil, road vs town). Rules, in priority order:

1. **Water** (1): lakes, rivers, sea.
2. **Snow/ice** (9): above the permanent snow line (noisy), unless too steep to hold snow.
3. **Bare ground** (8): rock and scree above the rock line or on cliffs; gravel bars beside rivers.
4. **Built area** (7): towns on valley floors (a jittered lattice of sites, kept only where the site is
   low, flat and dry) and roads along the valleys.
5. **Flooded vegetation** (4): flat, wet ground on lake shores and river banks.
6. **Trees** (2): forest noise above a threshold, more on steep slopes, never above the tree line;
   conifers above an elevation, deciduous below.
7. **Crops** (5): parcels of rotated strips on flat, low ground; each parcel is cropped (one of three
   crop calendars), a woodlot, or pasture.
8. **Rangeland** (11): everything else (pasture, meadows, alpine grassland).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from sampleworld.config import LandscapeStyle
from sampleworld.keys import stable_key
from sampleworld.noise import fbm, lattice_values, smoothstep
from sampleworld.terrain import TerrainSample, sample_terrain

WATER, TREES, FLOODED, CROPS, BUILT, BARE, SNOW, CLOUDS, RANGELAND = 1, 2, 4, 5, 7, 8, 9, 10, 11
LULC_NODATA = 0

LULC_CLASSES: dict[int, str] = {
    0: "No Data", 1: "Water", 2: "Trees", 4: "Flooded vegetation", 5: "Crops", 7: "Built area",
    8: "Bare ground", 9: "Snow/ice", 10: "Clouds", 11: "Rangeland",
}
"""Esri/IO 10 m annual land-cover codes (``io-lulc-annual-v02``)."""


class Cover(IntEnum):
    """Fine land-cover kinds behind each Esri class (drive spectra, phenology and backscatter)."""

    WATER = 0
    DECIDUOUS = 10
    CONIFER = 11
    WETLAND = 20
    WINTER_CEREAL = 30
    MAIZE = 31
    ROOT_CROP = 32
    TOWN = 40
    ROAD = 41
    ROCK = 50
    SOIL = 51
    GRAVEL = 52
    GLACIER = 60
    PASTURE = 70
    ALPINE_MEADOW = 71


LULC_OF_COVER: dict[Cover, int] = {
    Cover.WATER: WATER, Cover.DECIDUOUS: TREES, Cover.CONIFER: TREES, Cover.WETLAND: FLOODED,
    Cover.WINTER_CEREAL: CROPS, Cover.MAIZE: CROPS, Cover.ROOT_CROP: CROPS, Cover.TOWN: BUILT,
    Cover.ROAD: BUILT, Cover.ROCK: BARE, Cover.SOIL: BARE, Cover.GRAVEL: BARE, Cover.GLACIER: SNOW,
    Cover.PASTURE: RANGELAND, Cover.ALPINE_MEADOW: RANGELAND,
}
"""The Esri class of every fine cover kind."""

_ROW_H_M = 170.0
_HEDGE_M = 10.0


@dataclass(frozen=True)
class TownSite:
    """A settlement centre in region-frame metres with its radius."""

    x_m: float
    y_m: float
    radius_m: float


@dataclass(frozen=True)
class LandCover:
    """Land cover of a grid (all arrays (rows, cols)).

    Attributes
    ----------
    lulc:
        uint8 Esri/IO class codes.
    cover:
        uint8 :class:`Cover` kinds.
    parcel_phase_days:
        float32 per-parcel shift of the crop calendar (days; 0 outside parcels).
    brightness:
        float32 multiplicative texture of surface reflectance (about 0.85-1.15).
    """

    lulc: np.ndarray
    cover: np.ndarray
    parcel_phase_days: np.ndarray
    brightness: np.ndarray


def town_sites(
    x_m: np.ndarray, y_m: np.ndarray, style: LandscapeStyle, key: int
) -> list[TownSite]:
    """Settlement sites near the points' extent, kept only on low, flat, dry valley floors.

    Sites sit on a jittered lattice of spacing ``style.town_spacing_m``; each lattice cell holds at
    most one, decided by hashes of the cell's indices, so a site is the same for every scene.
    """
    s = style.town_spacing_m
    pad = style.town_radius_m[1] * 1.5
    i0, i1 = int(np.floor((np.min(x_m) - pad) / s)), int(np.floor((np.max(x_m) + pad) / s))
    j0, j1 = int(np.floor((np.min(y_m) - pad) / s)), int(np.floor((np.max(y_m) + pad) / s))
    ii2, jj2 = np.meshgrid(np.arange(i0, i1 + 1), np.arange(j0, j1 + 1))
    ii, jj = ii2.ravel(), jj2.ravel()
    k = stable_key(key, "towns")
    u = [(lattice_values(ii, jj, np.uint64(stable_key(k, n))) + 1.0) / 2.0 for n in range(4)]
    cx = (ii + 0.15 + 0.7 * u[0]) * s
    cy = (jj + 0.15 + 0.7 * u[1]) * s
    exists = u[2] < style.town_probability
    radius = style.town_radius_m[0] + (style.town_radius_m[1] - style.town_radius_m[0]) * u[3] ** 2
    probe = np.array([[0.0, 0.0], [80.0, 0.0], [-80.0, 0.0], [0.0, 80.0], [0.0, -80.0]])
    px = cx[:, None] + probe[None, :, 0]
    py = cy[:, None] + probe[None, :, 1]
    t = sample_terrain(px, py, style, key)
    h = t.elevation_m
    relief = h.max(axis=1) - h.min(axis=1)
    ok = (
        exists
        & ~t.water.any(axis=1)
        & (relief < 160.0 * np.tan(np.radians(9.0)))
        & (h[:, 0] < min(style.treeline_m - 300.0, style.arable_max_m + 300.0))
        & (t.valley_dist_m[:, 0] > style.river_halfwidth_m * 3)
    )
    return [TownSite(float(a), float(b), float(r)) for a, b, r in zip(cx[ok], cy[ok], radius[ok], strict=True)]


def _parcels(x: np.ndarray, y: np.ndarray, style: LandscapeStyle, key: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parcel decision value, crop choice, phase shift and hedge mask for every point."""
    a = np.radians(style.parcel_angle_deg)
    u = x * np.cos(a) + y * np.sin(a)
    w = -x * np.sin(a) + y * np.cos(a)
    row = np.floor(w / _ROW_H_M).astype(np.int64)
    k = stable_key(key, "parcels")
    row_len = 140.0 + 120.0 * (lattice_values(row, row * 0, np.uint64(stable_key(k, "len"))) + 1.0)
    row_off = 500.0 * (lattice_values(row, row * 0, np.uint64(stable_key(k, "off"))) + 1.0)
    uu = (u + row_off) / row_len
    col = np.floor(uu).astype(np.int64)
    decide = (lattice_values(row, col, np.uint64(stable_key(k, "use"))) + 1.0) / 2.0
    crop = (lattice_values(row, col, np.uint64(stable_key(k, "crop"))) + 1.0) / 2.0
    phase = 9.0 * lattice_values(row, col, np.uint64(stable_key(k, "phase")))
    hedge = ((w / _ROW_H_M - row) * _ROW_H_M < _HEDGE_M) | ((uu - col) * row_len < _HEDGE_M)
    return decide, crop, phase, hedge


def classify(
    x_m: np.ndarray,
    y_m: np.ndarray,
    terrain: TerrainSample,
    slope_deg: np.ndarray,
    style: LandscapeStyle,
    key: int,
    sites: list[TownSite],
) -> LandCover:
    """Land cover of a grid from its terrain.

    Parameters
    ----------
    x_m, y_m:
        (rows, cols) float64 region-frame coordinates of the pixel centres, metres.
    terrain:
        :func:`sampleworld.terrain.sample_terrain` at the same points.
    slope_deg:
        (rows, cols) slope in degrees (from the same elevation grid).
    style, key:
        The region's landscape and base key.
    sites:
        Settlements from :func:`town_sites`.

    Returns
    -------
    LandCover
    """
    x, y = x_m, y_m
    h = terrain.elevation_m
    cover = np.full(h.shape, Cover.PASTURE, dtype=np.uint8)
    free = np.ones(h.shape, dtype=bool)

    def put(mask: np.ndarray, kind: Cover | np.ndarray) -> None:
        m = mask & free
        cover[m] = kind if isinstance(kind, Cover) else kind[m]
        free[m] = False

    put(terrain.water, Cover.WATER)

    n_snow = fbm(x, y, stable_key(key, "snow"), 700.0, 3)
    put((h > style.snowline_summer_m + 250.0 * n_snow) & (slope_deg < 52.0), Cover.GLACIER)

    n_rock = fbm(x, y, stable_key(key, "rock"), 600.0, 3)
    rock = (h > style.rockline_m + 250.0 * n_rock) | ((slope_deg > 44.0 + 8.0 * n_rock) & (h > 1000.0))
    put(rock, Cover.ROCK if style.bare_is_rock else Cover.SOIL)

    n_gravel = fbm(x, y, stable_key(key, "gravel"), 300.0, 2)
    bank = terrain.valley_dist_m - style.river_halfwidth_m
    put((bank < 25.0) & (n_gravel > 0.18) & (slope_deg < 8.0), Cover.GRAVEL)

    town = np.zeros(h.shape, dtype=bool)
    n_town = fbm(x, y, stable_key(key, "townshape"), 250.0, 3)
    for s in sites:
        r = s.radius_m * 1.4
        if (x.max() < s.x_m - r or x.min() > s.x_m + r or y.max() < s.y_m - r or y.min() > s.y_m + r):
            continue
        d = np.hypot(x - s.x_m, y - s.y_m)
        town |= d < s.radius_m * (1.0 + 0.35 * n_town)
    n_green = fbm(x, y, stable_key(key, "gardens"), 120.0, 2)
    put(town & (slope_deg < 16.0) & (n_green < 0.28), Cover.TOWN)
    road_at = style.valley_floor_m * 0.55
    put((np.abs(terrain.valley_dist_m - road_at) < 5.0) & (terrain.valley_floor > 0.6) & (slope_deg < 10.0),
        Cover.ROAD)

    n_wet = fbm(x, y, stable_key(key, "wet"), 400.0, 3)
    wet = ((terrain.lakeness > -0.05) | (bank < 60.0)) & (slope_deg < 3.0) & (n_wet > 0.05)
    put(wet & (h < style.treeline_m), Cover.WETLAND)

    decide, crop_u, phase, hedge = _parcels(x, y, style, key)
    arable = (slope_deg < style.arable_max_slope_deg) & (h < style.arable_max_m)

    n_forest = fbm(x, y, stable_key(key, "forest"), 1500.0, 4)
    forest_score = n_forest + 0.35 * smoothstep(12.0, 32.0, slope_deg) - 0.25 * arable
    n_tl = fbm(x, y, stable_key(key, "treeline"), 500.0, 2)
    below_treeline = h < style.treeline_m + 120.0 * n_tl
    n_type = fbm(x, y, stable_key(key, "treetype"), 350.0, 3)
    conifer = h + 300.0 * n_type > style.conifer_from_m
    trees = np.where(conifer, Cover.CONIFER, Cover.DECIDUOUS).astype(np.uint8)
    put((forest_score > style.forest_threshold) & below_treeline, trees)

    woodlot = decide < style.woodlot_fraction
    cropped = (decide >= style.woodlot_fraction) & (decide < style.woodlot_fraction + style.crop_fraction)
    crop_kind = np.select([crop_u < 0.45, crop_u < 0.8], [Cover.WINTER_CEREAL, Cover.MAIZE],
                          Cover.ROOT_CROP).astype(np.uint8)
    put(arable & woodlot & below_treeline, trees)
    put(arable & cropped & ~hedge, crop_kind)

    alpine = h > style.treeline_m - 150.0
    put(alpine, Cover.ALPINE_MEADOW)

    lut = np.zeros(256, dtype=np.uint8)
    for kind, code in LULC_OF_COVER.items():
        lut[kind] = code
    lulc = lut[cover]
    in_parcel = np.isin(cover, (Cover.WINTER_CEREAL, Cover.MAIZE, Cover.ROOT_CROP))
    phase_days = np.where(in_parcel, phase, 0.0).astype(np.float32)
    tex = fbm(x, y, stable_key(key, "texture"), 90.0, 3)
    parcel_tone = 0.06 * np.where(in_parcel, decide * 2.0 - 1.0, 0.0)
    brightness = (1.0 + 0.12 * tex + parcel_tone).astype(np.float32)
    return LandCover(lulc, cover, phase_days, brightness)
