"""Sentinel-1 RTC backscatter (VV, VH) of one pass: linear gamma0, float32.

Per 10 m pixel, the cover kind sets a mean gamma0 in dB (calm water very low, forest high in VH,
towns high in VV from double bounce), modified by the season (crop growth, leaf-off, dry vs wet
snow), the pass's soil moisture and wind (rough water is brighter). Terrain leaves a residual after
radiometric terrain correction: ``(cos(theta_local) / cos(theta_ellipsoid))^0.7`` with the local
incidence angle from the DEM gradients and the pass's look direction (slopes facing the radar are
brighter; radar shadow is dark). Multiplicative speckle is gamma-distributed with ENL 4.4 (mean 1).
Values are rounded to ``s1_mantissa_bits`` mantissa bits (relative error < 0.03 %) so they compress.
"""

from __future__ import annotations

import math

import numpy as np

from sampleworld.acquisitions import RadarAcquisition
from sampleworld.keys import rng_for
from sampleworld.landcover import Cover
from sampleworld.optical import seasonal_snow
from sampleworld.scene import SceneState
from sampleworld.spectra import calendar

S1_NODATA = -32768.0
ENL = 4.4
"""Equivalent number of looks of the RTC product (Planetary Computer ``sar:looks_equivalent_number``)."""

# Mean gamma0 in dB (VV, VH) per cover kind, before season and terrain.
_BASE_DB: dict[Cover, tuple[float, float]] = {
    Cover.WATER: (-23.0, -29.0),
    Cover.DECIDUOUS: (-7.5, -13.0),
    Cover.CONIFER: (-7.0, -12.5),
    Cover.WETLAND: (-6.0, -16.0),
    Cover.WINTER_CEREAL: (-12.5, -21.0),
    Cover.MAIZE: (-12.5, -21.0),
    Cover.ROOT_CROP: (-12.5, -21.0),
    Cover.TOWN: (-2.5, -10.0),
    Cover.ROAD: (-9.0, -18.0),
    Cover.ROCK: (-10.5, -18.5),
    Cover.SOIL: (-12.0, -21.0),
    Cover.GRAVEL: (-12.0, -20.0),
    Cover.GLACIER: (-13.0, -21.0),
    Cover.PASTURE: (-11.0, -18.0),
    Cover.ALPINE_MEADOW: (-11.5, -18.5),
}


def _season_db(state: SceneState, acq: RadarAcquisition) -> tuple[np.ndarray, np.ndarray]:
    """Mean (VV, VH) dB per pixel for the pass's day, before terrain and speckle."""
    cover = state.land.cover
    vv = np.zeros(cover.shape, dtype=np.float64)
    vh = np.zeros(cover.shape, dtype=np.float64)
    for kind, (a, b) in _BASE_DB.items():
        m = cover == kind
        vv[m] = a
        vh[m] = b
    doy = acq.day.timetuple().tm_yday - state.style.phenology_shift_days - state.land.parcel_phase_days
    wet = acq.soil_moisture - 0.5
    for kind, prefix in ((Cover.WINTER_CEREAL, "cereal"), (Cover.MAIZE, "maize"), (Cover.ROOT_CROP, "root")):
        m = cover == kind
        g = calendar(f"{prefix}_green", doy[m])
        vv[m] += 3.5 * g + 3.0 * wet * (1.0 - g)
        vh[m] += 8.0 * g + 1.5 * wet
    leaf = calendar("leaf_on", doy)
    m = cover == Cover.DECIDUOUS
    vv[m] -= 1.0 * (1.0 - leaf[m])
    vh[m] -= 2.0 * (1.0 - leaf[m])
    for kind in (Cover.PASTURE, Cover.ALPINE_MEADOW, Cover.SOIL, Cover.GRAVEL):
        m = cover == kind
        vv[m] += 2.5 * wet
        vh[m] += 1.5 * wet
    m = cover == Cover.WATER
    vv[m] += 9.0 * acq.wind
    vh[m] += 4.0 * acq.wind
    snow = seasonal_snow(state, acq.day.timetuple().tm_yday)
    melting = 90 <= acq.day.timetuple().tm_yday <= 170
    snow_vv, snow_vh = (-20.0, -27.0) if melting else (-12.5, -20.5)
    vv = (1.0 - snow) * vv + snow * snow_vv
    vh = (1.0 - snow) * vh + snow * snow_vh
    texture = 20.0 * np.log10(state.land.brightness)
    return vv + texture, vh + texture


def local_incidence_cos(state: SceneState, acq: RadarAcquisition) -> np.ndarray:
    """cos of the local incidence angle per pixel: the surface normal against the line of sight."""
    theta = math.radians(acq.incidence_deg)
    look = math.radians(acq.look_azimuth_deg)
    lx, ly, lz = -math.sin(theta) * math.sin(look), -math.sin(theta) * math.cos(look), math.cos(theta)
    gx, gy = state.dz_de, state.dz_dn
    return (-gx * lx - gy * ly + lz) / np.sqrt(1.0 + gx * gx + gy * gy)


def quantise_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 values to ``bits`` mantissa bits (round half up on the magnitude)."""
    drop = 23 - bits
    if drop <= 0:
        return values.astype(np.float32)
    raw = values.astype(np.float32).view(np.uint32)
    half = np.uint32(1 << (drop - 1))
    mask = np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return ((raw + half) & mask).view(np.float32)


def render_radar(state: SceneState, acq: RadarAcquisition, seed: int, mantissa_bits: int
                 ) -> dict[str, np.ndarray]:
    """VV and VH linear gamma0 of one pass.

    Parameters
    ----------
    state:
        The scene.
    acq:
        The pass (day, incidence, look direction, wind, soil moisture).
    seed:
        World seed (speckle keys derive from it, the scene and the day).
    mantissa_bits:
        float32 mantissa bits kept.

    Returns
    -------
    dict
        ``{"vv": (rows, cols) float32, "vh": (rows, cols) float32}``, linear power, > 0.
    """
    vv_db, vh_db = _season_db(state, acq)
    cos_loc = local_incidence_cos(state, acq)
    cos_ref = math.cos(math.radians(acq.incidence_deg))
    terrain = np.clip(cos_loc / cos_ref, 0.02, 3.0) ** 0.7
    shadow = cos_loc < 0.05
    out = {}
    for pol, db in (("vv", vv_db), ("vh", vh_db)):
        gamma0 = 10.0 ** (db / 10.0) * terrain
        gamma0 = np.where(shadow, 10.0 ** (-27.0 / 10.0), gamma0)
        rng = rng_for(seed, state.grid.name, acq.day.isoformat(), "S1", pol)
        speckle = rng.gamma(ENL, 1.0 / ENL, size=gamma0.shape)
        out[pol] = quantise_mantissa((gamma0 * speckle).astype(np.float32), mantissa_bits)
    return out
