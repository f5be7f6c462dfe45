"""Band naming conventions of the big catalogs, mapped onto copgen's canonical band names.

Canonical names: Sentinel-2 ``B01``..``B12`` and ``B8A``, ``SCL`` and ``cloud_mask``; Sentinel-1 ``vv``
and ``vh``; ``DEM``; ``LULC``. The catalogs spell them differently:

================================  ===========  ==============  ==================
band                              Planetary    Earth Search    Copernicus Data
                                  Computer                     Space (CDSE)
================================  ===========  ==============  ==================
Sentinel-2 red                    ``B04``      ``red``         ``B04_10m`` (also
                                                               ``B04_20m``/``_60m``)
Sentinel-2 scene classification   ``SCL``      ``scl``         ``SCL_20m``
Sentinel-1 RTC                    ``vv``       --              --
DEM, land cover                   ``data``     ``data``        --
================================  ===========  ==============  ==================

Assets that name no canonical band this way (``visual``, ``AOT``, metadata, previews) are not bands.
A single-band asset whose ``eo:bands``/``bands`` entry carries a canonical Sentinel-2 name is accepted
as a last resort, ranked below key matches (Earth Search's ``red-jp2`` loses to ``red``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class ProductKind(StrEnum):
    """What product an item is, which decides its bands and value conventions."""

    S2_L2A = "S2L2A"
    S2_L1C = "S2L1C"
    S1_RTC = "S1RTC"
    DEM = "DEM"
    LULC = "LULC"

    @property
    def is_s2(self) -> bool:
        return self in (ProductKind.S2_L2A, ProductKind.S2_L1C)


S2_SPECTRAL_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)
"""Sentinel-2 MSI spectral bands (DN = reflectance x 10000, plus 1000 from baseline 04.00)."""

S2_NATIVE_GSD_M: dict[str, float] = {
    **{b: 10.0 for b in ("B02", "B03", "B04", "B08")},
    **{b: 20.0 for b in ("B05", "B06", "B07", "B8A", "B11", "B12", "SCL")},
    **{b: 60.0 for b in ("B01", "B09", "B10")},
    "cloud_mask": 10.0,
}
"""Native ground sampling distance of each Sentinel-2 band, in metres."""

EARTH_SEARCH_S2_KEYS: dict[str, str] = {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
    "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
    "cirrus": "B10", "swir16": "B11", "swir22": "B12", "scl": "SCL",
}
"""Earth Search (element84) asset keys -> canonical Sentinel-2 band."""

_CDSE_KEY = re.compile(r"^(B\d{2}|B8A|SCL)_(\d+)m$", re.IGNORECASE)

KNOWN_COLLECTIONS: dict[str, ProductKind] = {
    "sentinel-2-l2a": ProductKind.S2_L2A,  # Planetary Computer, CDSE, Earth Search v1
    "sentinel-2-c1-l2a": ProductKind.S2_L2A,  # Earth Search collection 1
    "sentinel-2-l1c": ProductKind.S2_L1C,
    "sentinel-2-c1-l1c": ProductKind.S2_L1C,
    "sentinel-1-rtc": ProductKind.S1_RTC,  # Planetary Computer
    "cop-dem-glo-30": ProductKind.DEM,
    "cop-dem-glo-90": ProductKind.DEM,
    "io-lulc": ProductKind.LULC,  # Esri 10 m land cover 2020 (v01)
    "io-lulc-9-class": ProductKind.LULC,
    "io-lulc-annual-v02": ProductKind.LULC,
}
"""Collection id -> product kind, for the collections copgen reads."""

PRODUCT_TYPES: dict[str, ProductKind] = {"S2MSI2A": ProductKind.S2_L2A, "S2MSI1C": ProductKind.S2_L1C}
"""``s2:product_type`` / ``product:type`` values -> product kind (for collections not listed above)."""

DEFAULT_DTYPES: dict[str, str] = {
    **{b: "uint16" for b in S2_SPECTRAL_BANDS},
    "SCL": "uint8", "cloud_mask": "uint8", "vv": "float32", "vh": "float32", "DEM": "float32", "LULC": "uint8",
}
"""Data type of each band as the products ship it, used when an asset does not declare one."""

# Match quality: a lower rank wins when several assets map to the same band.
RANK_EXACT_KEY = 0
RANK_KEY_CONVENTION = 1
RANK_BAND_METADATA = 2


def expected_bands(kind: ProductKind) -> tuple[str, ...]:
    """Canonical bands an item of ``kind`` can carry."""
    if kind.is_s2:
        return (*S2_SPECTRAL_BANDS, "SCL", "cloud_mask")
    if kind is ProductKind.S1_RTC:
        return ("vv", "vh")
    return (kind.value,)


def _single_band_name(asset: Mapping[str, Any]) -> str | None:
    """Name in the asset's ``eo:bands`` (STAC 1.0) or ``bands`` (STAC 1.1) list, if it has exactly one."""
    for field in ("eo:bands", "bands"):
        entries = asset.get(field)
        if isinstance(entries, list) and len(entries) == 1 and isinstance(entries[0], Mapping):
            name = entries[0].get("name")
            if isinstance(name, str):
                return name
    return None


def canonical_band(kind: ProductKind, key: str, asset: Mapping[str, Any]) -> tuple[str, int, float | None] | None:
    """Which canonical band asset ``key`` holds for an item of ``kind``.

    Returns
    -------
    (band, rank, key_gsd_m) or None
        ``band`` is the canonical name, ``rank`` how the match was made (``RANK_*``; lower is better),
        ``key_gsd_m`` the resolution the key names (CDSE ``B04_20m`` -> 20.0), else None.
        None when the asset is not one of the kind's bands.
    """
    if kind.is_s2:
        upper = key.upper()
        if upper in S2_SPECTRAL_BANDS or upper == "SCL":
            return upper, RANK_EXACT_KEY, None
        if key == "cloud_mask":
            return "cloud_mask", RANK_EXACT_KEY, None
        cdse = _CDSE_KEY.match(key)
        if cdse:
            return cdse.group(1).upper(), RANK_KEY_CONVENTION, float(cdse.group(2))
        if key in EARTH_SEARCH_S2_KEYS:
            return EARTH_SEARCH_S2_KEYS[key], RANK_KEY_CONVENTION, None
        name = _single_band_name(asset)
        if name is not None and name.upper() in S2_SPECTRAL_BANDS:
            return name.upper(), RANK_BAND_METADATA, None
        return None
    if kind is ProductKind.S1_RTC:
        lower = key.lower()
        return (lower, RANK_EXACT_KEY, None) if lower in ("vv", "vh") else None
    # DEM and LULC items carry one raster; Planetary Computer and Earth Search call it "data".
    if key.upper() == kind.value:
        return kind.value, RANK_EXACT_KEY, None
    if key == "data":
        return kind.value, RANK_KEY_CONVENTION, None
    return None
