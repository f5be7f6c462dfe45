"""Solar position (NOAA low-precision algorithm, about 0.1 deg accuracy between 1950 and 2050)."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def solar_position(when: datetime, lat: float, lon: float) -> tuple[float, float]:
    """Sun zenith and azimuth seen from a point at a UTC instant.

    Parameters
    ----------
    when:
        Timezone-aware UTC datetime (naive values are taken as UTC).
    lat, lon:
        Degrees (WGS84).

    Returns
    -------
    (zenith_deg, azimuth_deg):
        Zenith angle from the vertical and azimuth clockwise from north, both in degrees.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    start = datetime(when.year, 1, 1, tzinfo=UTC)
    days_in_year = (datetime(when.year + 1, 1, 1, tzinfo=UTC) - start).days
    hours = when.hour + when.minute / 60.0 + when.second / 3600.0
    doy = (when - start).days + 1
    g = 2.0 * math.pi / days_in_year * (doy - 1 + (hours - 12.0) / 24.0)
    eqtime = 229.18 * (
        0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g) - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g) - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g)
    )
    true_solar_min = hours * 60.0 + eqtime + 4.0 * lon
    hour_angle = math.radians(true_solar_min / 4.0 - 180.0)
    phi = math.radians(lat)
    cos_zen = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    zen = math.acos(max(-1.0, min(1.0, cos_zen)))
    az = math.degrees(
        math.atan2(math.sin(hour_angle), math.cos(hour_angle) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    )
    return math.degrees(zen), (az + 180.0) % 360.0
