"""Sentinel-2 L2A and L1C rasters of one acquisition, with SCL and the 4-class cloud mask.

For every 10 m pixel: endmember mix for the cover and day (:mod:`sampleworld.spectra`), seasonal
snow, texture, terrain illumination from the sun and the DEM (direct light by the local incidence
angle, diffuse light by the sky view), cloud shadows, then clouds on top. L2A is that surface
reflectance; L1C passes it through :mod:`sampleworld.atmosphere` (path radiance, haze, water vapour).
20 m and 60 m bands are block means of the 10 m values, so they agree with the 10 m bands exactly
where they overlap. Sensor noise is added at each band's own resolution, then values become DN
(reflectance x 10000, + 1000 from processing baseline 04.00) in uint16; pixels beyond the swath edge
are 0 in every band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sampleworld.acquisitions import OpticalAcquisition, edge_signed_distance
from sampleworld.atmosphere import to_toa
from sampleworld.clouds import CloudFields, cloud_fields
from sampleworld.geometry import block_mean
from sampleworld.keys import rng_for, stable_key
from sampleworld.landcover import WATER
from sampleworld.noise import fbm, smoothstep
from sampleworld.scene import SceneState
from sampleworld.spectra import (
    BANDS,
    CLOUD_SPECTRUM,
    DIFFUSE_FRACTION,
    ENDMEMBER_NAMES,
    L1C_BANDS,
    L2A_BANDS,
    SNOW_SEEN_THROUGH,
    endmember_fractions,
    endmember_matrix,
    snowline_m,
)

S2_NODATA = 0
CLOUD_MASK_NODATA = 255
CLEAR, THICK, THIN, SHADOW = 0, 1, 2, 3
"""The 4-class cloud mask codes (COP-GEN ``S2L1C_cloud_mask``)."""

SCL_NODATA, SCL_SHADOW, SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER = 0, 3, 4, 5, 6
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 8, 9, 10, 11
SCL_CLASSES: dict[int, str] = {
    0: "No data", 3: "Cloud shadows", 4: "Vegetation", 5: "Not vegetated", 6: "Water",
    8: "Cloud medium probability", 9: "Cloud high probability", 10: "Thin cirrus", 11: "Snow or ice",
}
"""The Sen2Cor scene-classification codes this world uses."""

_SCL_PRIORITY = {9: 9, 8: 8, 10: 7, 3: 6, 11: 5, 6: 4, 4: 3, 5: 2, 0: 1}

THICK_OPACITY = 0.5
THIN_OPACITY = 0.12
CIRRUS_FLAG = 0.008
SHADOW_OPACITY = 0.4

@dataclass(frozen=True)
class OpticalProducts:
    """The rasters and statistics of one acquisition.

    Attributes
    ----------
    l2a, l1c:
        Band name -> uint16 DN array at the band's native resolution (10 m: (n, n), 20 m: (n/2, n/2),
        60 m: (n/6, n/6)). L2A has 12 bands (no B10), L1C 13.
    scl:
        uint8 scene classification at 20 m (0 beyond the swath).
    cloud_mask:
        uint8 4-class mask at 10 m (0 clear, 1 thick, 2 thin, 3 shadow; 255 beyond the swath).
    valid_fraction:
        Share of the scene inside the swath.
    l2a_cloud_cover, l1c_cloud_cover:
        Percent of valid pixels that are cloud (SCL 8/9/10; mask 1/2).
    scl_percentages:
        Planetary Computer ``s2:*_percentage`` fields computed from the SCL.
    valid_60m:
        bool (n/6, n/6) mask of 60 m pixels inside the swath.
    """

    l2a: dict[str, np.ndarray]
    l1c: dict[str, np.ndarray]
    scl: np.ndarray
    cloud_mask: np.ndarray
    valid_fraction: float
    l2a_cloud_cover: float
    l1c_cloud_cover: float
    scl_percentages: dict[str, float]
    valid_60m: np.ndarray

def seasonal_snow(state: SceneState, doy: int) -> np.ndarray:
    """Visible fraction of lying snow per 10 m pixel on a day of year: (rows, cols) float32 in [0, 1]."""
    line = snowline_m(state.style, doy)
    h = state.terrain.elevation_m
    snow = smoothstep(-60.0, 60.0, h - line + 150.0 * state.snow_patchiness)
    through = np.ones(256, dtype=np.float32)
    for kind, share in SNOW_SEEN_THROUGH.items():
        through[kind] = share
    snow = snow * through[state.land.cover]
    snow = np.where(state.slope_deg > 55.0, 0.3 * snow, snow)
    return snow.astype(np.float32)

def surface_reflectance(state: SceneState, doy: int) -> tuple[np.ndarray, np.ndarray]:
    """Surface reflectance of all 13 bands before illumination, and the visible snow fraction.

    Returns
    -------
    (reflectance, snow):
        (13, N) float32 with N = rows * cols, and (N,) float32.
    """
    cover = state.land.cover.ravel()
    pixel_doy = doy - state.style.phenology_shift_days - state.land.parcel_phase_days.ravel()
    fractions = endmember_fractions(cover, pixel_doy)
    snow = seasonal_snow(state, doy).ravel()
    snow_row = ENDMEMBER_NAMES.index("snow")
    fractions *= 1.0 - snow
    fractions[snow_row] += snow
    refl = endmember_matrix() @ fractions
    refl *= state.land.brightness.ravel()[None, :]
    return refl.astype(np.float32), snow

def illumination(state: SceneState, acq: OpticalAcquisition, shadow: np.ndarray) -> np.ndarray:
    """Per-band illumination factor (13, N): diffuse sky light plus direct sun on the sloped surface.

    The direct term is ``cos(i) / cos(sun_zenith)`` (``i`` the local incidence angle from the DEM
    gradients, 0 on faces turned away from the sun, capped at 3.5) and is dimmed by cloud shadow.
    """
    zen = math.radians(acq.sun_zenith_deg)
    az = math.radians(acq.sun_azimuth_deg)
    sx, sy, sz = math.sin(zen) * math.sin(az), math.sin(zen) * math.cos(az), math.cos(zen)
    gx = state.dz_de.ravel()
    gy = state.dz_dn.ravel()
    norm = np.sqrt(1.0 + gx * gx + gy * gy)
    cos_i = (-gx * sx - gy * sy + sz) / norm
    direct = np.clip(cos_i / sz, 0.0, 3.5) * (1.0 - 0.92 * shadow.ravel())
    sky_view = 0.5 * (1.0 + 1.0 / norm)
    diffuse = np.asarray(DIFFUSE_FRACTION, dtype=np.float64)[:, None]
    return (diffuse * sky_view[None, :] + (1.0 - diffuse) * direct[None, :]).astype(np.float32)

def _valid_60m(state: SceneState, acq: OpticalAcquisition) -> np.ndarray:
    n = state.grid.shape(60)
    if acq.edge is None:
        return np.ones(n, dtype=bool)
    lon, lat = state.grid.lonlat(60)
    return edge_signed_distance(state.region, acq.edge, lon, lat) >= 0.0

def _to_native(stack: np.ndarray, side: int) -> dict[str, np.ndarray]:
    """(13, side*side) float reflectance -> band name -> array at the band's native resolution."""
    cube = stack.reshape(len(BANDS), side, side)
    out = {}
    for i, band in enumerate(BANDS):
        plane = cube[i]
        if band.gsd_m > 10:
            plane = block_mean(plane, band.gsd_m // 10)
        out[band.name] = plane
    return out

def _quantise(planes: dict[str, np.ndarray], names: tuple[str, ...], valid_60m: np.ndarray,
              offset_dn: int, rng_key: tuple[str | int, ...]) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        plane = planes[name]
        rng = rng_for(*rng_key, name)
        sigma = 0.0005 + 0.002 * np.abs(plane)
        noisy = plane + sigma * rng.standard_normal(plane.shape, dtype=np.float32)
        dn = np.rint(np.clip(noisy, 0.0, 6.0) * 10000.0) + offset_dn
        dn = np.clip(dn, 1, 65535).astype(np.uint16)
        factor = plane.shape[0] // valid_60m.shape[0]
        valid = np.repeat(np.repeat(valid_60m, factor, axis=0), factor, axis=1)
        dn[~valid] = S2_NODATA
        out[name] = dn
    return out

def cloud_mask_codes(clouds: CloudFields) -> np.ndarray:
    """4-class cloud mask (uint8, shape of the fields) from the cloud fields."""
    mask = np.full(clouds.thick.shape, CLEAR, dtype=np.uint8)
    mask[clouds.shadow >= SHADOW_OPACITY] = SHADOW
    mask[(clouds.opacity >= THIN_OPACITY) | (clouds.cirrus >= CIRRUS_FLAG)] = THIN
    mask[clouds.thick >= THICK_OPACITY] = THICK
    return mask

def _scl_10m(clouds: CloudFields, mask: np.ndarray, snow: np.ndarray, water: np.ndarray,
             ndvi: np.ndarray) -> np.ndarray:
    scl = np.where(ndvi >= 0.4, SCL_VEGETATION, SCL_NOT_VEGETATED).astype(np.uint8)
    scl[water & (snow < 0.5)] = SCL_WATER
    scl[snow >= 0.5] = SCL_SNOW
    scl[mask == SHADOW] = SCL_SHADOW
    scl[mask == THIN] = SCL_CIRRUS
    scl[mask == THICK] = SCL_CLOUD_MEDIUM
    scl[clouds.thick >= 0.85] = SCL_CLOUD_HIGH
    return scl

def mode_2x2(codes: np.ndarray) -> np.ndarray:
    """Most frequent code in each 2x2 block (ties go to the higher-priority class: clouds first)."""
    h, w = codes.shape
    blocks = codes.reshape(h // 2, 2, w // 2, 2)
    best = np.zeros((h // 2, w // 2), dtype=np.int32)
    out = np.zeros((h // 2, w // 2), dtype=np.uint8)
    for code, prio in _SCL_PRIORITY.items():
        count = (blocks == code).sum(axis=(1, 3))
        score = np.where(count > 0, count * 16 + prio, 0)
        better = score > best
        out[better] = code
        best = np.maximum(best, score)
    return out

def render_optical(state: SceneState, acq: OpticalAcquisition, seed: int) -> OpticalProducts:
    """All Sentinel-2 rasters of one acquisition of one scene.

    Parameters
    ----------
    state:
        The scene (:func:`sampleworld.scene.build_scene`).
    acq:
        The acquisition (date, sun, orbit, baseline, swath edge).
    seed:
        World seed (noise and clouds derive their keys from it).

    Returns
    -------
    OpticalProducts
    """
    side = state.grid.shape(10)[0]
    doy = acq.day.timetuple().tm_yday
    day_key = stable_key(seed, state.region.name, "clouds", acq.day.isoformat())
    h = state.terrain.elevation_m
    clouds = cloud_fields(state.x_m, state.y_m, h, key=day_key, cloud=acq.cloud,
                          cloud_top_m=state.style.cloud_top_m, sun_zenith_deg=acq.sun_zenith_deg,
                          sun_azimuth_deg=acq.sun_azimuth_deg)
    refl, snow = surface_reflectance(state, doy)
    lit = refl * illumination(state, acq, clouds.shadow)

    opacity = clouds.opacity.ravel()[None, :]
    cirrus = clouds.cirrus.ravel()[None, :]
    cloud_l2a = np.asarray(CLOUD_SPECTRUM, dtype=np.float32)[:, None] * 0.97
    l2a = opacity * cloud_l2a + (1.0 - opacity) * lit + 0.8 * cirrus

    aot = acq.aot550 * (1.0 + 0.35 * fbm(state.x_m, state.y_m, stable_key(day_key, "haze"), 15000.0, 2))
    toa = to_toa(lit, h.ravel(), np.clip(aot, 0.01, None).ravel(), acq.sun_zenith_deg)
    cloud_toa = np.asarray(CLOUD_SPECTRUM, dtype=np.float32)[:, None]
    l1c = opacity * cloud_toa + (1.0 - opacity) * toa + 0.8 * cirrus
    l1c[L1C_BANDS.index("B10")] += 0.2 * cirrus[0]

    valid_60 = _valid_60m(state, acq)
    valid_10 = np.repeat(np.repeat(valid_60, 6, axis=0), 6, axis=1)
    l2a_dn = _quantise(_to_native(l2a, side), L2A_BANDS, valid_60, acq.offset_dn,
                       (seed, state.grid.name, acq.day.isoformat(), "L2A"))
    l1c_dn = _quantise(_to_native(l1c, side), L1C_BANDS, valid_60, acq.offset_dn,
                       (seed, state.grid.name, acq.day.isoformat(), "L1C"))

    mask = cloud_mask_codes(clouds)
    red = lit[L2A_BANDS.index("B04")].reshape(side, side)
    nir = lit[L2A_BANDS.index("B08")].reshape(side, side)
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    water = state.land.lulc == WATER
    scl10 = _scl_10m(clouds, mask, snow.reshape(side, side), water, ndvi)
    scl10[~valid_10] = SCL_NODATA
    scl = mode_2x2(scl10)
    mask[~valid_10] = CLOUD_MASK_NODATA

    valid_scl = scl != SCL_NODATA
    n_valid = max(int(valid_scl.sum()), 1)

    def pct(*codes: int) -> float:
        return round(100.0 * float(np.isin(scl, codes).sum()) / n_valid, 6)

    percentages = {
        "s2:high_proba_clouds_percentage": pct(SCL_CLOUD_HIGH),
        "s2:medium_proba_clouds_percentage": pct(SCL_CLOUD_MEDIUM),
        "s2:thin_cirrus_percentage": pct(SCL_CIRRUS),
        "s2:cloud_shadow_percentage": pct(SCL_SHADOW),
        "s2:vegetation_percentage": pct(SCL_VEGETATION),
        "s2:not_vegetated_percentage": pct(SCL_NOT_VEGETATED),
        "s2:water_percentage": pct(SCL_WATER),
        "s2:snow_ice_percentage": pct(SCL_SNOW),
        "s2:nodata_pixel_percentage": round(100.0 * float((~valid_scl).mean()), 6),
    }
    valid_mask = mask != CLOUD_MASK_NODATA
    l1c_cover = 100.0 * float(np.isin(mask, (THICK, THIN)).sum()) / max(int(valid_mask.sum()), 1)
    return OpticalProducts(
        l2a=l2a_dn, l1c=l1c_dn, scl=scl, cloud_mask=mask, valid_fraction=float(valid_60.mean()),
        l2a_cloud_cover=pct(SCL_CLOUD_HIGH, SCL_CLOUD_MEDIUM, SCL_CIRRUS),
        l1c_cloud_cover=round(l1c_cover, 6), scl_percentages=percentages, valid_60m=valid_60,
    )
