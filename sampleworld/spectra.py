"""Sentinel-2 bands, surface endmember spectra and phenology.

Surface reflectance of a 10 m pixel is a linear mix of a few endmember spectra (water, green canopy,
deciduous and conifer canopy, dry vegetation, soil, rock, snow, urban). The mix depends on the
pixel's :class:`~sampleworld.landcover.Cover` kind and the day of year: crops green up and are
harvested on their own calendars, deciduous trees lose their leaves, pastures dry out, and seasonal
snow covers everything above a snow line that drops in winter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sampleworld.config import LandscapeStyle
from sampleworld.landcover import Cover


@dataclass(frozen=True)
class Band:
    """One Sentinel-2 MSI band (Planetary Computer ``eo:bands`` fields plus its native grid)."""

    name: str
    common_name: str | None
    description: str
    center_wavelength: float  # micrometres
    full_width_half_max: float  # micrometres
    gsd_m: int

    def eo_band(self) -> dict[str, object]:
        """The band as a STAC ``eo:bands`` entry (Planetary Computer style)."""
        out: dict[str, object] = {"name": self.name}
        if self.common_name:
            out["common_name"] = self.common_name
        out.update(description=self.description, center_wavelength=self.center_wavelength,
                   full_width_half_max=self.full_width_half_max)
        return out


BANDS: tuple[Band, ...] = (
    Band("B01", "coastal", "Band 1 - Coastal aerosol", 0.443, 0.027, 60),
    Band("B02", "blue", "Band 2 - Blue", 0.49, 0.098, 10),
    Band("B03", "green", "Band 3 - Green", 0.56, 0.045, 10),
    Band("B04", "red", "Band 4 - Red", 0.665, 0.038, 10),
    Band("B05", "rededge", "Band 5 - Vegetation red edge 1", 0.704, 0.019, 20),
    Band("B06", "rededge", "Band 6 - Vegetation red edge 2", 0.74, 0.018, 20),
    Band("B07", "rededge", "Band 7 - Vegetation red edge 3", 0.783, 0.028, 20),
    Band("B08", "nir", "Band 8 - NIR", 0.842, 0.145, 10),
    Band("B8A", "rededge", "Band 8A - Vegetation red edge 4", 0.865, 0.033, 20),
    Band("B09", None, "Band 9 - Water vapor", 0.945, 0.026, 60),
    Band("B10", "cirrus", "Band 10 - SWIR - Cirrus", 1.375, 0.075, 60),
    Band("B11", "swir16", "Band 11 - SWIR (1.6)", 1.61, 0.143, 20),
    Band("B12", "swir22", "Band 12 - SWIR (2.2)", 2.19, 0.242, 20),
)
"""All 13 MSI bands in product order; L2A drops B10."""

BAND_INDEX: dict[str, int] = {b.name: i for i, b in enumerate(BANDS)}
L1C_BANDS: tuple[str, ...] = tuple(b.name for b in BANDS)
L2A_BANDS: tuple[str, ...] = tuple(b.name for b in BANDS if b.name != "B10")

# Surface reflectance (0-1) per endmember, columns in BANDS order (B10 is a surface value that the
# atmosphere all but absorbs in L1C).
ENDMEMBERS: dict[str, tuple[float, ...]] = {
    "water":   (0.055, 0.050, 0.045, 0.028, 0.022, 0.016, 0.013, 0.011, 0.010, 0.006, 0.003, 0.004, 0.003),
    "green":   (0.030, 0.035, 0.075, 0.035, 0.110, 0.300, 0.400, 0.440, 0.460, 0.420, 0.150, 0.220, 0.110),
    "decid":   (0.025, 0.030, 0.060, 0.030, 0.090, 0.270, 0.360, 0.400, 0.410, 0.380, 0.120, 0.190, 0.090),
    "conifer": (0.020, 0.022, 0.040, 0.022, 0.060, 0.160, 0.210, 0.230, 0.240, 0.220, 0.070, 0.110, 0.050),
    "dry":     (0.060, 0.075, 0.110, 0.150, 0.180, 0.210, 0.230, 0.250, 0.260, 0.260, 0.200, 0.330, 0.250),
    "soil":    (0.060, 0.075, 0.105, 0.140, 0.160, 0.180, 0.195, 0.210, 0.220, 0.225, 0.200, 0.300, 0.260),
    "rock":    (0.120, 0.150, 0.190, 0.220, 0.230, 0.240, 0.250, 0.260, 0.265, 0.260, 0.220, 0.300, 0.250),
    "snow":    (0.900, 0.920, 0.910, 0.880, 0.860, 0.830, 0.800, 0.760, 0.740, 0.600, 0.030, 0.060, 0.040),
    "urban":   (0.100, 0.120, 0.140, 0.160, 0.170, 0.180, 0.190, 0.200, 0.205, 0.200, 0.180, 0.240, 0.220),
}
ENDMEMBER_NAMES: tuple[str, ...] = tuple(ENDMEMBERS)
_E = {n: i for i, n in enumerate(ENDMEMBER_NAMES)}

CLOUD_SPECTRUM: tuple[float, ...] = (
    0.56, 0.57, 0.58, 0.58, 0.58, 0.58, 0.58, 0.58, 0.57, 0.48, 0.08, 0.45, 0.30,
)
"""Reflectance of an opaque water cloud top (bright and flat in the visible, lower in SWIR)."""

DIFFUSE_FRACTION: tuple[float, ...] = (
    0.30, 0.26, 0.20, 0.16, 0.14, 0.12, 0.11, 0.10, 0.10, 0.10, 0.08, 0.07, 0.06,
)
"""Share of diffuse sky light per band (blue skies are bright, SWIR ones dark): shadows keep it."""

# Piecewise-linear calendars: (day of year, value) knots.
_CALENDARS: dict[str, tuple[tuple[float, float], ...]] = {
    "cereal_green": ((1, 0.25), (60, 0.28), (130, 0.9), (165, 0.9), (195, 0.12), (205, 0.0), (280, 0.0),
                     (300, 0.12), (330, 0.25), (366, 0.25)),
    "cereal_dry": ((1, 0.0), (160, 0.0), (195, 0.75), (205, 0.5), (240, 0.3), (250, 0.0), (366, 0.0)),
    "maize_green": ((1, 0.0), (140, 0.0), (160, 0.08), (200, 0.85), (245, 0.85), (270, 0.3), (285, 0.0),
                    (366, 0.0)),
    "maize_dry": ((1, 0.15), (240, 0.0), (270, 0.6), (285, 0.5), (300, 0.4), (330, 0.2), (366, 0.15)),
    "root_green": ((1, 0.0), (110, 0.0), (135, 0.15), (170, 0.8), (260, 0.85), (290, 0.5), (300, 0.0),
                   (366, 0.0)),
    "root_dry": ((1, 0.05), (280, 0.05), (300, 0.3), (320, 0.1), (366, 0.05)),
    "grass_green": ((1, 0.35), (80, 0.4), (130, 0.8), (200, 0.75), (260, 0.65), (320, 0.45), (366, 0.35)),
    "alpine_green": ((1, 0.1), (150, 0.1), (180, 0.7), (230, 0.7), (270, 0.3), (300, 0.1), (366, 0.1)),
    "leaf_on": ((1, 0.0), (105, 0.0), (135, 0.92), (280, 0.92), (305, 0.2), (320, 0.0), (366, 0.0)),
}


def calendar(name: str, doy: np.ndarray | float) -> np.ndarray:
    """Value of a phenology calendar on day(s) of year ``doy`` (wrapped into 1..366)."""
    knots = _CALENDARS[name]
    d = (np.asarray(doy, dtype=np.float64) - 1.0) % 365.0 + 1.0
    return np.interp(d, [k[0] for k in knots], [k[1] for k in knots])


def snowline_m(style: LandscapeStyle, doy: int) -> float:
    """Seasonal snow line (metres): lowest in late January, back at the summer line by late summer."""
    w = (0.5 + 0.5 * np.cos(2.0 * np.pi * (doy - 25.0) / 365.0)) ** 1.5
    return float(style.snowline_summer_m + (style.snowline_winter_m - style.snowline_summer_m) * w)


def endmember_fractions(cover: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """Endmember fractions of every pixel on a day of year, before seasonal snow.

    Parameters
    ----------
    cover:
        (N,) uint8 :class:`Cover` kinds.
    doy:
        (N,) float day of year per pixel (already shifted by latitude and parcel phase).

    Returns
    -------
    numpy.ndarray
        (len(ENDMEMBERS), N) float32 fractions summing to 1 per pixel.
    """
    n = cover.shape[0]
    f = np.zeros((len(ENDMEMBER_NAMES), n), dtype=np.float32)

    def mix(mask: np.ndarray, **parts: np.ndarray | float) -> None:
        if not mask.any():
            return
        for name, value in parts.items():
            v = value[mask] if isinstance(value, np.ndarray) else value
            f[_E[name], mask] = v

    grass = calendar("grass_green", doy)
    mix(cover == Cover.WATER, water=1.0)
    leaf = calendar("leaf_on", doy)
    mix(cover == Cover.DECIDUOUS, decid=leaf, dry=0.55 * (1 - leaf), conifer=0.3 * (1 - leaf),
        soil=0.15 * (1 - leaf))
    mix(cover == Cover.CONIFER, conifer=0.92, green=0.08 * grass, dry=0.08 * (1 - grass))
    mix(cover == Cover.WETLAND, water=0.35, green=0.65 * grass, dry=0.65 * (1 - grass))
    for kind, prefix in ((Cover.WINTER_CEREAL, "cereal"), (Cover.MAIZE, "maize"), (Cover.ROOT_CROP, "root")):
        g = calendar(f"{prefix}_green", doy)
        d = np.minimum(calendar(f"{prefix}_dry", doy), 1.0 - g)
        mix(cover == kind, green=g, dry=d, soil=1.0 - g - d)
    mix(cover == Cover.TOWN, urban=0.8, green=0.2 * grass, dry=0.2 * (1 - grass))
    mix(cover == Cover.ROAD, urban=0.85, green=0.15 * grass, dry=0.15 * (1 - grass))
    mix(cover == Cover.ROCK, rock=1.0)
    mix(cover == Cover.GRAVEL, rock=0.85, water=0.15)
    mix(cover == Cover.SOIL, soil=0.9, dry=0.1)
    mix(cover == Cover.GLACIER, snow=0.85, rock=0.15)
    mix(cover == Cover.PASTURE, green=0.85 * grass, dry=0.85 * (1 - grass), soil=0.15)
    alp = calendar("alpine_green", doy)
    mix(cover == Cover.ALPINE_MEADOW, green=0.8 * alp, dry=0.8 * (1 - alp), rock=0.2)
    return f


SNOW_SEEN_THROUGH: dict[Cover, float] = {
    Cover.CONIFER: 0.35, Cover.DECIDUOUS: 0.6, Cover.TOWN: 0.7, Cover.ROAD: 0.5, Cover.WATER: 0.0,
}
"""Share of lying snow visible from above, by cover (canopies hide most of it; open water has none)."""


def endmember_matrix() -> np.ndarray:
    """(len(BANDS), len(ENDMEMBERS)) float32 reflectance matrix."""
    return np.asarray([ENDMEMBERS[n] for n in ENDMEMBER_NAMES], dtype=np.float32).T
