"""Clouds, cirrus and cloud shadows of one acquisition.

Each (region, date) has three continuous cloud fields in the region's frame, so a cloud that crosses
two scenes is the same cloud in both:

* **thick** cumulus-like cloud, opacity 0..1, with tops at ``style.cloud_top_m`` (+-300 m per date);
* **thin** semi-transparent cloud, opacity up to 0.45;
* **cirrus**, a high thin layer seen mostly in B10 (reflectance up to 0.05).

A ground point is in **shadow** when the thick cloud lies on its line of sight to the sun: the thick
field is read at the point shifted towards the sun by ``(cloud_top - elevation) * tan(sun_zenith)``.
Thresholds come from the date's target cloud share assuming roughly normal fBm values, so the
realised cover varies around the target; items report the realised cover.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from sampleworld.keys import stable_key, unit_hash
from sampleworld.noise import fbm, smoothstep

_FBM_STD = 0.285
_THICK_WAVELENGTH_M = 1500.0
THICK_SHARE, THIN_SHARE, CIRRUS_SHARE = 0.6, 0.4, 0.25


@dataclass(frozen=True)
class CloudFields:
    """Cloud state at a set of points (arrays of the points' shape, float32).

    Attributes
    ----------
    thick, thin:
        Opacities in [0, 1] of the thick and thin layers.
    cirrus:
        Cirrus reflectance in [0, 0.05].
    shadow:
        Thick-cloud opacity on the line of sight to the sun, [0, 1].
    """

    thick: np.ndarray
    thin: np.ndarray
    cirrus: np.ndarray
    shadow: np.ndarray

    @property
    def opacity(self) -> np.ndarray:
        """Combined opacity of the thick and thin layers."""
        return 1.0 - (1.0 - self.thick) * (1.0 - self.thin)


def _threshold(share: float) -> float:
    share = min(max(share, 1e-4), 0.9999)
    return _FBM_STD * NormalDist().inv_cdf(1.0 - share)


def cloud_fields(
    x_m: np.ndarray,
    y_m: np.ndarray,
    elevation_m: np.ndarray,
    *,
    key: int,
    cloud: float,
    cloud_top_m: float,
    sun_zenith_deg: float,
    sun_azimuth_deg: float,
) -> CloudFields:
    """Evaluate the clouds of one (region, date) at points.

    Parameters
    ----------
    x_m, y_m, elevation_m:
        Region-frame coordinates (metres) and ground elevation (metres) of the points, same shape.
    key:
        Key of the (region, date) (e.g. ``stable_key(seed, region, "clouds", "2022-06-21")``).
    cloud:
        Target share of cloudy (thick + thin) ground, 0..1.
    cloud_top_m:
        Mean cloud-top height of the landscape, metres above sea level.
    sun_zenith_deg, sun_azimuth_deg:
        Sun position (azimuth clockwise from north).

    Returns
    -------
    CloudFields
    """
    shape = np.shape(x_m)
    if cloud <= 0.0:
        z = np.zeros(shape, dtype=np.float32)
        return CloudFields(z, z, z, z)
    top = cloud_top_m + 600.0 * (unit_hash(key, "top") - 0.5)
    k_thick = stable_key(key, "thick")
    t_thick = _threshold(cloud * THICK_SHARE)
    thick = smoothstep(t_thick, t_thick + 0.05, fbm(x_m, y_m, k_thick, _THICK_WAVELENGTH_M, 4))
    t_thin = _threshold(cloud * THIN_SHARE)
    thin = 0.45 * smoothstep(t_thin, t_thin + 0.12, fbm(x_m, y_m, stable_key(key, "thin"), 3000.0, 3))
    t_ci = _threshold(cloud * CIRRUS_SHARE)
    cirrus = 0.05 * smoothstep(t_ci, t_ci + 0.15, fbm(x_m, y_m, stable_key(key, "cirrus"), 5000.0, 3))
    reach = np.maximum(top - elevation_m, 100.0) * math.tan(math.radians(min(sun_zenith_deg, 85.0)))
    az = math.radians(sun_azimuth_deg)
    sx = x_m + reach * math.sin(az)
    sy = y_m + reach * math.cos(az)
    shadow = smoothstep(t_thick, t_thick + 0.05, fbm(sx, sy, k_thick, _THICK_WAVELENGTH_M, 4))
    f32 = np.float32
    return CloudFields(thick.astype(f32), thin.astype(f32), cirrus.astype(f32), shadow.astype(f32))
