"""A single-scattering atmosphere that turns surface reflectance into top-of-atmosphere (L1C).

``TOA = path + T * surface`` per band, with

* Rayleigh optical depth ``tau_R(lambda)`` (Hansen & Travis form) scaled by surface pressure
  ``exp(-h / 8 km)``, so high peaks have less blue haze;
* aerosol optical depth ``AOT550 * (lambda / 0.55)^-1.3`` scaled by ``exp(-h / 2 km)``; the AOT varies
  smoothly in space (haze banks);
* water vapour ``2 cm * exp(-h / 2.2 km)`` absorbing B09 strongly and B10 (1375 nm) almost completely,
  so B10 is dark except for cirrus and the driest, highest summits.
"""

from __future__ import annotations

import math

import numpy as np

from sampleworld.spectra import BANDS

_WAVELENGTH = np.array([b.center_wavelength for b in BANDS])
_GAS_K = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.01, 0.01, 0.25, 3.0, 0.012, 0.03])
"""Water-vapour absorption coefficient per band, per cm of precipitable water per air mass."""


def rayleigh_depth(wavelength_um: np.ndarray) -> np.ndarray:
    """Rayleigh optical depth at sea level for wavelengths in micrometres."""
    w = np.asarray(wavelength_um, dtype=np.float64)
    return 0.008569 * w**-4 * (1.0 + 0.0113 * w**-2 + 0.00013 * w**-4)


def to_toa(
    surface: np.ndarray, elevation_m: np.ndarray, aot550: np.ndarray, sun_zenith_deg: float
) -> np.ndarray:
    """Top-of-atmosphere reflectance of all 13 bands.

    Parameters
    ----------
    surface:
        (13, N) float32 surface reflectance (with terrain illumination applied).
    elevation_m:
        (N,) ground elevation, metres.
    aot550:
        (N,) aerosol optical thickness at 550 nm.
    sun_zenith_deg:
        Sun zenith angle (nadir view assumed).

    Returns
    -------
    numpy.ndarray
        (13, N) float32 TOA reflectance.
    """
    mu_s = math.cos(math.radians(sun_zenith_deg))
    airmass = 1.0 / mu_s + 1.0
    h = elevation_m.astype(np.float64)[None, :]
    tau_r = rayleigh_depth(_WAVELENGTH)[:, None] * np.exp(-h / 8000.0)
    tau_a = aot550.astype(np.float64)[None, :] * (_WAVELENGTH[:, None] / 0.55) ** -1.3 * np.exp(-h / 2000.0)
    path = (0.95 * tau_r + 0.45 * tau_a) / (4.0 * mu_s)
    water_cm = 2.0 * np.exp(-h / 2200.0)
    trans = np.exp(-(0.5 * tau_r + 0.17 * tau_a) * airmass - _GAS_K[:, None] * water_cm * airmass)
    return (path + trans * surface).astype(np.float32)
