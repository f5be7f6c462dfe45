"""The two scalar modalities: location on the unit sphere and the acquisition date.

Both are 3-vectors that the backbone sees as a (1, 1, 3) "image" (shape ``(..., 1, 1, 3)`` here). They
are encoded in float64 and cast to float32 once at the end, as the official code does, which makes
the encodings bit-exact with the golden vectors.

* Location: ``x = cos(lat) cos(lon), y = cos(lat) sin(lon), z = sin(lat)``; decoded with
  ``lat = asin(clamp(z, -1, 1))``, ``lon = atan2(y, x)`` (no renormalisation of the vector).
* Date: ``[sin(2 pi doy / n), cos(2 pi doy / n), 2 (year - 1950) / 100 - 1]`` with n = 366 in leap
  years. Dates are calendar dates in **UTC**; this module never uses the local time zone (the official
  ``pre_process_data`` does, via ``datetime.fromtimestamp``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import torch

from copgen_core.normalize_common import Array, Mode, Normalized, check_mode, to_torch

YEAR_ORIGIN = 1950
YEAR_SPAN = 100
"""year_norm = 2 (year - YEAR_ORIGIN) / YEAR_SPAN - 1 maps 1950..2050 onto [-1, 1]."""

DateLike = dt.date | dt.datetime


def _as_float64(values: object) -> tuple[np.ndarray, torch.device | None]:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().to(torch.float64).numpy(), values.device
    return np.asarray(values, dtype=np.float64), None


def _restore(arr: np.ndarray, device: torch.device | None) -> Array:
    return arr if device is None else torch.from_numpy(arr).to(device)


def encode_latlon(lat: float | np.ndarray, lon: float | np.ndarray) -> np.ndarray:
    """Unit-sphere encoding of points, float64 math then float32.

    Parameters
    ----------
    lat, lon:
        Degrees, broadcastable (python floats or arrays; float32 values are used as they are).

    Returns
    -------
    numpy.ndarray
        float32 of shape ``broadcast_shape + (1, 1, 3)``: [x, y, z].
    """
    lat_r = np.deg2rad(np.asarray(lat, dtype=np.float64))
    lon_r = np.deg2rad(np.asarray(lon, dtype=np.float64))
    xyz = np.stack(np.broadcast_arrays(np.cos(lat_r) * np.cos(lon_r), np.cos(lat_r) * np.sin(lon_r),
                                       np.sin(lat_r)), axis=-1)
    return xyz.astype(np.float32)[..., None, None, :]


def latlon_pre(values: Array, *, mode: Mode = "strict") -> Normalized:
    """``[lat, lon]`` in degrees, shape (..., 2), to the (..., 1, 1, 3) float32 condition.

    Strict mode raises for NaN/inf, |lat| > 90 or |lon| > 180; official mode encodes anything.

    Raises
    ------
    ValueError
        Last axis not of size 2; strict-mode range violations (the message gives the value).
    """
    check_mode(mode)
    arr, device = _as_float64(values)
    if arr.ndim == 0 or arr.shape[-1] != 2:
        raise ValueError(f"lat/lon: expected [lat, lon] along the last axis (shape (..., 2)), got {arr.shape}")
    lat, lon = arr[..., 0], arr[..., 1]
    if mode == "strict":
        if not np.all(np.isfinite(arr)):
            raise ValueError("lat/lon: input holds NaN or inf; pass finite degrees")
        if np.any(np.abs(lat) > 90):
            raise ValueError(f"lat/lon: latitude {lat[np.abs(lat) > 90].ravel()[0]!r} is outside [-90, 90]; "
                             "check the (lat, lon) order")
        if np.any(np.abs(lon) > 180):
            raise ValueError(f"lat/lon: longitude {lon[np.abs(lon) > 180].ravel()[0]!r} is outside [-180, 180]; "
                             "wrap it with ((lon + 180) % 360) - 180")
    return Normalized(_restore(encode_latlon(lat, lon), device), ())


def latlon_post(y: Array) -> Array:
    """(..., 3) unit-sphere vectors to (..., 2) ``[lat, lon]`` degrees, float32 (official float32 path).

    ``z`` is clamped to [-1, 1]; the vector is not renormalised; at the poles the longitude is atan2
    of rounding noise; (-1, +-0, 0) decodes to lon +-180.
    """
    t, as_np = to_torch(y)
    if t.ndim == 0 or t.shape[-1] != 3:
        raise ValueError(f"lat/lon: expected [x, y, z] along the last axis (shape (..., 3)), got {tuple(t.shape)}")
    lat = torch.asin(torch.clamp(t[..., 2], -1, 1)) * 180 / np.pi
    lon = torch.atan2(t[..., 1], t[..., 0]) * 180 / np.pi
    out = torch.stack([lat, lon], dim=-1)
    return out.numpy() if as_np else out


def _is_leap(year: np.ndarray) -> np.ndarray:
    return (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))


def _year_start(year: np.ndarray) -> np.ndarray:
    return (year - 1970).astype("datetime64[Y]").astype("datetime64[D]")


def day_of_year(year: int | np.ndarray, month: int | np.ndarray, day: int | np.ndarray) -> np.ndarray:
    """Day of year 1..366 of calendar dates, vectorised (int64).

    Raises
    ------
    ValueError
        For a month outside 1..12 or a day that does not exist in its month (e.g. 2021-02-29).
    """
    y, m, d = (np.asarray(v, dtype=np.int64) for v in np.broadcast_arrays(year, month, day))
    if np.any((m < 1) | (m > 12) | (d < 1)):
        raise ValueError(f"invalid date among year/month/day {np.stack([y, m, d], -1).reshape(-1, 3).tolist()[:5]}; "
                         "months run 1..12 and days from 1")
    months = ((y - 1970) * 12 + (m - 1)).astype("datetime64[M]")
    days = months.astype("datetime64[D]") + (d - 1).astype("timedelta64[D]")
    bad = days.astype("datetime64[M]") != months
    if np.any(bad):
        first = np.stack([y, m, d], -1)[bad][0].tolist()
        raise ValueError(f"date {first[0]:04d}-{first[1]:02d}-{first[2]:02d} does not exist; check day and month")
    return (days - _year_start(y)).astype(np.int64) + 1


def encode_date(year: int | np.ndarray, month: int | np.ndarray, day: int | np.ndarray) -> np.ndarray:
    """Date condition of calendar dates: float32 of shape ``broadcast_shape + (1, 1, 3)``.

    ``[sin(2 pi doy / n), cos(2 pi doy / n), 2 (year - 1950) / 100 - 1]``, n = 366 in leap years,
    in float64, then cast to float32.

    Raises
    ------
    ValueError
        For dates that do not exist.
    """
    y = np.asarray(year, dtype=np.int64)
    doy = day_of_year(year, month, day)
    y = np.broadcast_to(y, doy.shape)
    n = np.where(_is_leap(y), 366, 365)
    angle = 2 * np.pi * doy / n
    year_norm = 2 * (y - YEAR_ORIGIN) / YEAR_SPAN - 1
    vec = np.stack([np.sin(angle), np.cos(angle), year_norm], axis=-1)
    return vec.astype(np.float32)[..., None, None, :]


def _utc_ymd(when: DateLike) -> tuple[int, int, int]:
    if isinstance(when, dt.datetime):
        if when.tzinfo is not None:
            when = when.astimezone(dt.UTC)
        return when.year, when.month, when.day
    if isinstance(when, dt.date):
        return when.year, when.month, when.day
    raise TypeError(f"expected a datetime.date or datetime.datetime, got {type(when).__name__}")


def encode_datetime(when: DateLike | Sequence[DateLike]) -> np.ndarray:
    """Date condition of datetimes (aware ones converted to UTC; naive ones taken as UTC) or dates.

    Returns (1, 1, 3) for one value, (N, 1, 1, 3) for a sequence; float32.
    """
    if isinstance(when, dt.date):
        return encode_date(*_utc_ymd(when))
    ymd = np.array([_utc_ymd(w) for w in when], dtype=np.int64).reshape(-1, 3)
    return encode_date(ymd[:, 0], ymd[:, 1], ymd[:, 2])


def encode_timestamp(seconds: float | np.ndarray) -> np.ndarray:
    """Date condition of POSIX timestamps (seconds since 1970-01-01T00:00Z), using the **UTC** date.

    Returns float32 of shape ``shape + (1, 1, 3)``. This equals the official
    ``pre_process_data(timestamp)`` run with TZ=UTC.
    """
    ts = np.asarray(seconds, dtype=np.float64)
    if not np.all(np.isfinite(ts)):
        raise ValueError("timestamps hold NaN or inf; pass seconds since 1970-01-01 UTC")
    days = np.floor_divide(np.floor(ts), 86400.0).astype(np.int64).astype("datetime64[D]")
    year = days.astype("datetime64[Y]").astype(np.int64) + 1970
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (days - days.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
    return encode_date(year, month, day)


def date_pre(values: object, *, mode: Mode = "strict") -> Normalized:
    """Dates to the (..., 1, 1, 3) float32 condition.

    Parameters
    ----------
    values:
        A ``datetime.date``/``datetime.datetime`` (UTC), a sequence of them, or an integer array
        (..., 3) of ``[year, month, day]``.
    mode:
        Strict mode adds a note for years outside 1950..2050 (year_norm outside [-1, 1]).

    Raises
    ------
    ValueError
        For dates that do not exist or an array whose last axis is not 3.
    """
    check_mode(mode)
    if isinstance(values, dt.date) or (
        isinstance(values, Sequence) and len(values) > 0 and isinstance(values[0], dt.date)
    ):
        dates = [values] if isinstance(values, dt.date) else list(values)  # type: ignore[list-item]
        ymd = np.array([_utc_ymd(w) for w in dates], dtype=np.int64)
        vec = encode_datetime(values)  # type: ignore[arg-type]
        device = None
    else:
        arr, device = _as_float64(values)
        if arr.ndim == 0 or arr.shape[-1] != 3 or not np.all(arr == np.round(arr)):
            raise ValueError(f"dates: expected integer [year, month, day] along the last axis, got shape {arr.shape}")
        ymd = arr.astype(np.int64)
        vec = encode_date(ymd[..., 0], ymd[..., 1], ymd[..., 2])
    notes: list[str] = []
    if mode == "strict":
        years = ymd[..., 0]
        outside = (years < YEAR_ORIGIN) | (years > YEAR_ORIGIN + YEAR_SPAN)
        if np.any(outside):
            notes.append(f"dates: years {sorted(set(years[outside].tolist()))[:10]} lie outside "
                         f"{YEAR_ORIGIN}..{YEAR_ORIGIN + YEAR_SPAN}, so year_norm leaves [-1, 1]")
    return Normalized(_restore(vec, device), tuple(notes))


def decode_date(y: Array) -> Array:
    """(..., 3) date vectors to int64 (..., 3) ``[day, month, year]``, as the official decoder.

    ``year = round((yn + 1) / 2 * 100 + 1950)`` with Python's half-to-even rounding; ``n`` = 365/366
    from that year; ``doy = round(atan2(s, c) (+2 pi if negative) * n / 2 pi) mod n`` and 0 -> n, so
    the angle-0 vector decodes to 31 December. Works on numpy (numpy out) and torch (torch out).

    Raises
    ------
    ValueError
        If the last axis is not 3 or a vector holds NaN/inf.
    """
    v, device = _as_float64(y)
    if v.ndim == 0 or v.shape[-1] != 3:
        raise ValueError(f"dates: expected [sin, cos, year_norm] along the last axis, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("dates: a date vector holds NaN or inf; it cannot be decoded")
    year = np.rint((v[..., 2] + 1) / 2 * YEAR_SPAN + YEAR_ORIGIN).astype(np.int64)
    n = np.where(_is_leap(year), 366, 365)
    angle = np.arctan2(v[..., 0], v[..., 1])
    angle = np.where(angle < 0, angle + 2 * np.pi, angle)
    doy = np.rint(angle * n / (2 * np.pi)).astype(np.int64) % n
    doy = np.where(doy == 0, n, doy)
    days = _year_start(year) + (doy - 1).astype("timedelta64[D]")
    month_start = days.astype("datetime64[M]")
    month = month_start.astype(np.int64) % 12 + 1
    day = (days - month_start.astype("datetime64[D]")).astype(np.int64) + 1
    return _restore(np.stack([day, month, year], axis=-1), device)
