"""Scalar-modality metrics: location error (haversine km) and date error (absolute days).

Date layouts differ along the chain, so every date argument names its order: the model's decoder
returns ``[day, month, year]`` (``"dmy"``, the official decoder's order) while tiles and conditions hold
``[year, month, day]`` (``"ymd"``). A date that is invalid in the named order (month 13, day 2024, ...)
is refused, which catches a wrong order.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

EARTH_RADIUS_KM = 6371.0
"""Mean Earth radius of the official evaluation, km."""

DateOrder = Literal["dmy", "ymd"]
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def haversine_km(pred: np.ndarray, truth: np.ndarray, radius_km: float = EARTH_RADIUS_KM) -> np.ndarray:
    """Great-circle distance between ``[lat, lon]`` points in degrees.

    Parameters
    ----------
    pred, truth:
        (..., 2) ``[lat, lon]`` in degrees; broadcastable.

    Returns
    -------
    np.ndarray
        (...) distance in km (float64), ``2 R asin(sqrt(hav))``.

    Raises
    ------
    ValueError
        If the last axis is not 2 long.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if p.shape[-1:] != (2,) or t.shape[-1:] != (2,):
        raise ValueError(f"points must be (..., 2) [lat, lon] degrees, got shapes {p.shape} and {t.shape}")
    lat1, lon1 = np.radians(p[..., 0]), np.radians(p[..., 1])
    lat2, lon2 = np.radians(t[..., 0]), np.radians(t[..., 1])
    hav = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2.0 * radius_km * np.arcsin(np.sqrt(np.clip(hav, 0.0, 1.0)))


def _is_leap(year: np.ndarray) -> np.ndarray:
    return (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))


def days_since_epoch(year: ArrayLike, month: ArrayLike, day: ArrayLike) -> np.ndarray:
    """Days from 1970-01-01 of proleptic Gregorian dates (vectorised; int64).

    Raises
    ------
    ValueError
        If a month is outside 1..12 or a day outside its month.
    """
    y = np.asarray(year, dtype=np.int64)
    m = np.asarray(month, dtype=np.int64)
    d = np.asarray(day, dtype=np.int64)
    bad_month = (m < 1) | (m > 12)
    month_len = _DAYS_IN_MONTH[np.clip(m, 1, 12) - 1] + ((np.clip(m, 1, 12) == 2) & _is_leap(y))
    bad = bad_month | (d < 1) | (d > month_len)
    if np.any(bad):
        i = tuple(int(v) for v in np.argwhere(np.atleast_1d(bad))[0])
        yy, mm, dd = (int(np.atleast_1d(a)[i]) for a in np.broadcast_arrays(y, m, d))
        raise ValueError(
            f"invalid date year={yy} month={mm} day={dd}; check the date order ('dmy' for the model's "
            "[day, month, year] output, 'ymd' for [year, month, day] conditions and tiles)"
        )
    # days_from_civil (H. Hinnant): era-based, exact for all proleptic Gregorian dates
    yp = y - (m <= 2)
    era = np.floor_divide(yp, 400)
    yoe = yp - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _split(dates: np.ndarray, order: DateOrder, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(dates)
    if a.shape[-1:] != (3,):
        raise ValueError(f"{name} must be (..., 3) dates, got shape {a.shape}")
    if a.dtype.kind == "f" and (not np.all(np.isfinite(a)) or np.any(a != np.round(a))):
        raise ValueError(f"{name} must hold whole numbers (day, month, year)")
    if order == "dmy":
        return a[..., 2], a[..., 1], a[..., 0]
    if order == "ymd":
        return a[..., 0], a[..., 1], a[..., 2]
    raise ValueError(f"unknown date order {order!r}; use 'dmy' or 'ymd'")


def date_error_days(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    pred_order: DateOrder = "dmy",
    truth_order: DateOrder = "ymd",
) -> np.ndarray:
    """Absolute difference in days between predicted and true dates.

    Parameters
    ----------
    pred:
        (..., 3) dates; by default ``[day, month, year]`` as the model returns them.
    truth:
        (..., 3) dates, broadcastable to ``pred``; by default ``[year, month, day]`` as conditions and
        tiles hold them.
    pred_order, truth_order:
        ``"dmy"`` or ``"ymd"``.

    Returns
    -------
    np.ndarray
        (...) int64 absolute day difference (across years: 2020-12-31 vs 2021-01-01 is 1 day).

    Raises
    ------
    ValueError
        On a bad shape, order, or a date that is invalid in the given order.
    """
    py, pm, pd = _split(pred, pred_order, "pred")
    ty, tm, td = _split(truth, truth_order, "truth")
    return np.abs(days_since_epoch(py, pm, pd) - days_since_epoch(ty, tm, td))


__all__ = ["EARTH_RADIUS_KM", "DateOrder", "date_error_days", "days_since_epoch", "haversine_km"]
