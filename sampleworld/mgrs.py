"""Military Grid Reference System 100 km square names (``s2:mgrs_tile`` such as ``31TGL``)."""

from __future__ import annotations

import math

_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COL_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")  # indexed by zone % 3
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"


def latitude_band(lat: float) -> str:
    """MGRS latitude band letter (C..X; X spans 72-84 deg N)."""
    if not -80.0 <= lat <= 84.0:
        raise ValueError(f"latitude {lat} is outside the MGRS/UTM range [-80, 84] degrees")
    return _BANDS[min(int(math.floor((lat + 80.0) / 8.0)), len(_BANDS) - 1)]


def mgrs_tile(zone: int, lat: float, easting_m: float, northing_m: float) -> str:
    """The 100 km MGRS square holding a UTM point, e.g. ``mgrs_tile(47, 81.4, 450000, 9050000) == "47XML"``.

    Parameters
    ----------
    zone:
        UTM zone 1..60.
    lat:
        Latitude of the point (for the band letter), degrees.
    easting_m, northing_m:
        UTM coordinates in that zone (southern northings include the 10 000 km false northing).
    """
    col_letter = _COL_SETS[zone % 3][int(math.floor(easting_m / 100000.0)) - 1]
    row_index = int(math.floor(northing_m / 100000.0)) % 20
    if zone % 2 == 0:
        row_index = (row_index + 5) % 20
    return f"{zone:02d}{latitude_band(lat)}{col_letter}{_ROW_LETTERS[row_index]}"
