"""The Major TOM 10 km grid, bit-exact with the official ``Grid(10)`` that COP-GEN was trained on.

A cell is named ``<row>_<col>`` (``"215U_1019R"``) after its **bottom-left** grid point. Rows run from
946D (southernmost, about -84.97 deg) through 1D, 0U (the equator) to 946U: 1,893 rows. Each row has its
own column count ``n = ceil(2 pi R cos(lat) / 10 km)``; column 0R sits at longitude 0, columns kR east
and kL west of it.

The construction is reproduced operation by operation in float64 (copgen-model.md §14.4); the
closed-form values ``k * 180/2004`` differ from it by up to 1.5e-14 deg and put exact corners in the
wrong cell. Official behaviours kept on purpose, because the training data follows them:

* **Corners go south-west.** A point exactly on a cell's bottom or left edge belongs to the cell below
  or to the left: ``(0, 0) -> "1D_1L"``.
* **Antimeridian wrap.** A point west of a row's first grid point (or at lon -180 exactly) gets the
  row's *last* column, whose cell spans the antimeridian, so its bottom-left longitude is east of
  the point. Twelve rows (six even column counts, in both hemispheres) end on a grid point
  at +180 instead of starting at -180.
* **Bottom-row quirk.** A latitude at or below the lowest row (-84.97006 deg) wraps to the *top* row
  (946U); a latitude above 85 deg stays in the top row.

Indices: ``row_idx`` 0 is the southernmost row (946D), 1892 the northernmost (946U); ``col_idx`` 0 is
the westernmost column of its row. Everything is vectorised numpy; the row tables are built once,
lazily, and each row's column table is computed elementwise on demand.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np

DIST_KM = 10.0
"""Nominal cell side of the grid, in km."""

EARTH_RADIUS_EQUATOR_KM = 6378.137
"""WGS84 equatorial radius used by the official grid, in km."""

LATITUDE_RANGE = (-85.0, 85.0)
"""Latitudes of the grid rows kept (inclusive), in degrees."""

NUM_LAT_DIVISIONS = math.ceil(math.pi * EARTH_RADIUS_EQUATOR_KM / DIST_KM)
"""Latitude divisions pole to pole (2004); the nominal row height is 180/2004 deg."""

ROW_HEIGHT_DEG = 180.0 / NUM_LAT_DIVISIONS
"""Nominal row height in degrees (about 0.0898204), as used for cell and patch centres."""

PATCHES_PER_SIDE = 6
"""Training sub-patches per cell side (6 x 6 lat/lon conditions per cell)."""

_CELL_RE = re.compile(r"^(0|[1-9][0-9]*)([UD])_(0|[1-9][0-9]*)([LR])$")


@dataclass(frozen=True)
class _RowTables:
    """Per-row constants of the grid, all of shape (num_rows,)."""

    lat_bottom: np.ndarray  # float64, degrees, south to north
    num_cols: np.ndarray  # int64
    lon_step: np.ndarray  # float64, 360/n as numpy computes it
    first_k: np.ndarray  # int64: first linspace index k with -180 + k*step >= 0
    zero_col: np.ndarray  # int64: col_idx of column 0R (where lon == 0)
    first_lon: np.ndarray  # float64: lon of col_idx 0
    zero_row: int  # row_idx of 0U


@functools.cache
def _tables() -> _RowTables:
    lats = np.linspace(-90.0, 90.0, NUM_LAT_DIVISIONS + 1)[:-1]
    lats = np.sort(np.mod(lats, 180.0) - 90.0)
    zero_row_unclipped = int(np.searchsorted(lats, 0.0))
    keep = (lats >= LATITUDE_RANGE[0]) & (lats <= LATITUDE_RANGE[1])
    zero_row = zero_row_unclipped - int(np.argmax(keep))
    lats = lats[keep]
    # Same operation order as the official circumference: 2 pi (R cos(lat pi / 180)) / dist.
    circumference = 2.0 * np.pi * (EARTH_RADIUS_EQUATOR_KM * np.cos(lats * np.pi / 180.0))
    num_cols = np.ceil(circumference / DIST_KM).astype(np.int64)
    # np.linspace(-180, 180, n + 1) computes element k as k * (360 / n) + (-180).
    lon_step = 360.0 / num_cols.astype(np.float64)
    half = num_cols // 2
    # For even n the middle element k = n/2 can round to just below 0 and then maps to +180 instead of
    # -180 (twelve rows); detect the first non-negative element exactly rather than assuming k = n/2.
    first_k = np.where(half * lon_step + -180.0 >= 0.0, half, half + 1)
    zero_col = num_cols - first_k
    first_lon = np.mod(first_k * lon_step + -180.0, 360.0) - 180.0
    for arr in (lats, num_cols, lon_step, first_k, zero_col, first_lon):
        arr.setflags(write=False)
    return _RowTables(lats, num_cols, lon_step, first_k, zero_col, first_lon, zero_row)


def num_rows() -> int:
    """Number of grid rows (1,893)."""
    return int(_tables().lat_bottom.shape[0])


def row_lats() -> np.ndarray:
    """Bottom latitudes of all rows, south to north.

    Returns
    -------
    numpy.ndarray
        (1893,) float64, degrees, read-only; exactly the official values.
    """
    return _tables().lat_bottom


def equator_row() -> int:
    """Row index of 0U, the row whose bottom edge is the equator (946)."""
    return _tables().zero_row


def zero_col(row_idx: int | np.ndarray) -> int | np.ndarray:
    """Column index of 0R (the grid point at lon 0) in a row, vectorised; ``col_idx - zero_col`` is the
    official signed column number (kR positive, kL negative)."""
    rows = _check_rows(row_idx)
    out = _tables().zero_col[rows]
    return int(out) if np.ndim(out) == 0 else out


def num_cols(row_idx: int | np.ndarray) -> int | np.ndarray:
    """Column count of a row (or of each row in an array of indices).

    Raises
    ------
    IndexError
        If a row index is outside [0, 1892].
    """
    rows = _check_rows(row_idx)
    out = _tables().num_cols[rows]
    return int(out) if np.ndim(out) == 0 else out


def column_lon(row_idx: int | np.ndarray, col_idx: int | np.ndarray) -> np.ndarray:
    """Exact longitude of the grid point(s) ``(row_idx, col_idx)``, vectorised.

    Parameters
    ----------
    row_idx, col_idx:
        Integer arrays broadcast together; ``col_idx`` must lie in [0, num_cols(row_idx)).

    Returns
    -------
    numpy.ndarray
        float64 degrees, equal bit for bit to the official sorted column table of the row.

    Raises
    ------
    IndexError
        If a row or column index is out of range.
    """
    rows = _check_rows(row_idx)
    cols = np.asarray(col_idx, dtype=np.int64)
    rows, cols = np.broadcast_arrays(rows, cols)
    t = _tables()
    n = t.num_cols[rows]
    bad = (cols < 0) | (cols >= n)
    if np.any(bad):
        i = np.flatnonzero(bad.ravel())[0]
        raise IndexError(
            f"column index {int(cols.ravel()[i])} is outside [0, {int(n.ravel()[i])}) for row "
            f"{int(rows.ravel()[i])}; use num_cols(row_idx) for the valid range"
        )
    return _lon_of(rows, cols)


def _lon_of(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Column longitudes without range checks (cols in [0, n))."""
    t = _tables()
    zero = t.zero_col[rows]
    # Sorted position j holds linspace element k: the non-negative elements first (they map to
    # [-180, 0)), then k = 0, 1, ... (mapped to [0, 180]).
    k = np.where(cols < zero, t.first_k[rows] + cols, cols - zero)
    return np.mod(k * t.lon_step[rows] + -180.0, 360.0) - 180.0


def column_lons(row_idx: int) -> np.ndarray:
    """The full, sorted column table of one row: (num_cols,) float64 degrees."""
    row = int(_check_rows(row_idx))
    cols = np.arange(int(_tables().num_cols[row]), dtype=np.int64)
    return _lon_of(np.full_like(cols, row), cols)


def _check_rows(row_idx: int | np.ndarray) -> np.ndarray:
    rows = np.asarray(row_idx)
    if rows.dtype.kind not in "iu":
        raise TypeError(f"row index must be an integer array, got dtype {rows.dtype}")
    rows = rows.astype(np.int64)
    n = num_rows()
    if np.any((rows < 0) | (rows >= n)):
        bad = rows[(rows < 0) | (rows >= n)].ravel()[0]
        raise IndexError(f"row index {int(bad)} is outside [0, {n}); row 0 is 946D, row {n - 1} is 946U")
    return rows


def _as_degrees(lat: float | np.ndarray, lon: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lat_a = np.asarray(lat, dtype=np.float64)
    lon_a = np.asarray(lon, dtype=np.float64)
    lat_a, lon_a = np.broadcast_arrays(lat_a, lon_a)
    if not (np.all(np.isfinite(lat_a)) and np.all(np.isfinite(lon_a))):
        raise ValueError("latitude/longitude contain NaN or inf; drop or fill those points first")
    if np.any(np.abs(lat_a) > 90.0):
        bad = lat_a[np.abs(lat_a) > 90.0].ravel()[0]
        raise ValueError(f"latitude {bad!r} is outside [-90, 90] degrees; pass (lat, lon) in that order, in degrees")
    if np.any(np.abs(lon_a) > 180.0):
        bad = lon_a[np.abs(lon_a) > 180.0].ravel()[0]
        raise ValueError(f"longitude {bad!r} is outside [-180, 180] degrees; wrap it first, e.g. ((lon + 180) % 360) - 180")
    return lat_a, lon_a


def latlon_to_cell(lat: float | np.ndarray, lon: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell indices of points, exactly as the official ``latlon2rowcol``.

    Parameters
    ----------
    lat, lon:
        Degrees (WGS84), any broadcastable shapes; scalars give 0-d arrays.

    Returns
    -------
    (row_idx, col_idx):
        int64 arrays of the broadcast shape. Corners go to the cell below/left, points west of a
        row's first grid point wrap to its last column, and latitudes at or below the lowest row wrap
        to the top row (see the module docstring).

    Raises
    ------
    ValueError
        For NaN/inf, |lat| > 90 or |lon| > 180.
    """
    lat_a, lon_a = _as_degrees(lat, lon)
    t = _tables()
    nrows = t.lat_bottom.shape[0]
    rows = np.searchsorted(t.lat_bottom, lat_a, side="left") - 1
    rows = np.where(rows < 0, rows + nrows, rows)
    n = t.num_cols[rows]
    # Estimate the number of grid points west of lon, then settle it against the exact table:
    # col = count(lons < lon) - 1 (searchsorted side='left' minus one).
    est = np.floor((lon_a - t.first_lon[rows]) / t.lon_step[rows]).astype(np.int64)
    col = np.clip(est, -1, n - 1)
    for _ in range(2):
        down = (col >= 0) & (_lon_of(rows, np.clip(col, 0, n - 1)) >= lon_a)
        col = np.where(down, col - 1, col)
    for _ in range(2):
        nxt = np.clip(col + 1, 0, n - 1)
        up = (col + 1 < n) & (_lon_of(rows, nxt) < lon_a)
        col = np.where(up, col + 1, col)
    col = np.where(col < 0, col + n, col)
    return rows.astype(np.int64), col.astype(np.int64)


def row_name(row_idx: int) -> str:
    """Row name of a row index: ``"946D"`` ... ``"1D"``, ``"0U"`` ... ``"946U"``."""
    k = int(_check_rows(row_idx)) - _tables().zero_row
    return f"{k}U" if k >= 0 else f"{-k}D"


def col_name(row_idx: int, col_idx: int) -> str:
    """Column name of ``col_idx`` in its row: ``"0R"`` at lon 0, ``"kR"`` east, ``"kL"`` west."""
    row = int(_check_rows(row_idx))
    n = int(_tables().num_cols[row])
    if not 0 <= int(col_idx) < n:
        raise IndexError(f"column index {int(col_idx)} is outside [0, {n}) for row {row_name(row)}")
    k = int(col_idx) - int(_tables().zero_col[row])
    return f"{k}R" if k >= 0 else f"{-k}L"


def cell_id(row_idx: int, col_idx: int) -> str:
    """Cell name from indices, e.g. ``cell_id(1161, 2910) == "215U_1019R"``.

    Raises
    ------
    IndexError
        If an index is out of range.
    """
    return f"{row_name(row_idx)}_{col_name(row_idx, col_idx)}"


def cell_ids(row_idx: np.ndarray, col_idx: np.ndarray) -> np.ndarray:
    """Vectorised :func:`cell_id`: an object array of names with the broadcast shape."""
    rows, cols = np.broadcast_arrays(np.asarray(row_idx), np.asarray(col_idx))
    out = np.empty(rows.shape, dtype=object)
    for pos in np.ndindex(rows.shape):
        out[pos] = cell_id(int(rows[pos]), int(cols[pos]))
    return out


def parse_cell(name: str) -> tuple[int, int]:
    """Indices ``(row_idx, col_idx)`` of a cell name such as ``"215U_1019R"``.

    Raises
    ------
    ValueError
        If the name is malformed (expected ``<k>U|D_<k>L|R`` without leading zeros; ``0D`` and ``0L`` do
        not exist) or names a row/column outside the grid; the message gives the valid range.
    """
    m = _CELL_RE.match(name.strip()) if isinstance(name, str) else None
    if m is None:
        raise ValueError(
            f"malformed Major TOM cell name {name!r}; expected '<row>_<col>' like '215U_1019R' "
            "(rows 946D..1D, 0U..946U; columns kL west and kR east of 0R)"
        )
    t = _tables()
    rk, rdir, ck, cdir = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
    row_off = rk if rdir == "U" else -rk
    row = t.zero_row + row_off
    nrows = num_rows()
    top, bottom = nrows - 1 - t.zero_row, t.zero_row
    if (rdir == "D" and rk == 0) or not 0 <= row < nrows:
        raise ValueError(f"row {m.group(1)}{rdir} of cell {name!r} is outside the grid; rows run 1D..{bottom}D "
                         f"and 0U..{top}U")
    zero, n = int(t.zero_col[row]), int(t.num_cols[row])
    col = zero + (ck if cdir == "R" else -ck)
    if (cdir == "L" and ck == 0) or not 0 <= col < n:
        raise ValueError(f"column {m.group(3)}{cdir} of cell {name!r} is outside row {rk}{rdir}, whose columns "
                         f"run 1L..{zero}L and 0R..{n - zero - 1}R")
    return row, col


def cell_of(lat: float, lon: float) -> str:
    """Name of the cell containing one point (scalar convenience for :func:`latlon_to_cell`)."""
    rows, cols = latlon_to_cell(float(lat), float(lon))
    return cell_id(int(rows), int(cols))


def cell_bottom_left(name: str) -> tuple[float, float]:
    """Exact bottom-left grid point ``(lat, lon)`` of a cell, in float64 degrees.

    Raises
    ------
    ValueError
        If the name is malformed or outside the grid.
    """
    row, col = parse_cell(name)
    return float(_tables().lat_bottom[row]), float(_lon_of(np.asarray(row, np.int64), np.asarray(col, np.int64)))


def cell_size_deg(name: str) -> tuple[float, float]:
    """Nominal degree box ``(dlat, dlon) = (180/2004, 360/n)`` of a cell, as COP-GEN splits it."""
    row, _ = parse_cell(name)
    return ROW_HEIGHT_DEG, float(_tables().lon_step[row])


def _centres_deg(name: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 centre lat (side,) north to south and lon (side,) west to east of a side x side split."""
    bl_lat, bl_lon = cell_bottom_left(name)
    dlat, dlon = cell_size_deg(name)
    frac = (np.arange(side, dtype=np.float64) + 0.5) / side
    lats = bl_lat + dlat * frac[::-1]
    lons = bl_lon + dlon * frac
    return lats, lons


def _xyz64(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    lat_r = np.deg2rad(lat_deg)
    lon_r = np.deg2rad(lon_deg)
    return np.stack(
        [np.cos(lat_r) * np.cos(lon_r), np.cos(lat_r) * np.sin(lon_r), np.sin(lat_r)], axis=-1
    )


def cell_centre(name: str) -> tuple[float, float]:
    """Cell centre ``(lat, lon)`` as the COP-GEN benchmark conditions on it (float32 values).

    The nominal degree box is halved in float64, then cast to float32 (what the training data and the
    benchmark store); returned as Python floats holding the float32 values.
    """
    lats, lons = _centres_deg(name, 1)
    return float(np.float32(lats[0])), float(np.float32(lons[0]))


def cell_centre_xyz(name: str) -> np.ndarray:
    """Unit-sphere lat/lon condition ``(x, y, z)`` of the cell centre: (3,) float32."""
    lats, lons = _centres_deg(name, 1)
    return _xyz64(lats, lons)[0].astype(np.float32)


def patch_centres(name: str, fmt: str = "latlon") -> np.ndarray:
    """Centres of the 6 x 6 training sub-patches of a cell.

    Parameters
    ----------
    name:
        Cell name.
    fmt:
        ``"latlon"`` for degrees, ``"xyz"`` for the unit-sphere condition.

    Returns
    -------
    numpy.ndarray
        float32 of shape (6, 6, 2) [lat, lon] or (6, 6, 3) [x, y, z]; index [pr, pc] with pr = 0 the
        north row and pc = 0 the west column (LMDB key ``<cell>_patch_<pr*6+pc>``).

    Raises
    ------
    ValueError
        For an unknown ``fmt`` or a bad cell name.
    """
    lats, lons = _centres_deg(name, PATCHES_PER_SIDE)
    lat2, lon2 = np.meshgrid(lats, lons, indexing="ij")
    if fmt == "latlon":
        return np.stack([lat2, lon2], axis=-1).astype(np.float32)
    if fmt == "xyz":
        return _xyz64(lat2, lon2).astype(np.float32)
    raise ValueError(f"unknown patch-centre format {fmt!r}; use 'latlon' or 'xyz'")


def utm_zone(lat: float | np.ndarray, lon: float | np.ndarray) -> np.ndarray:
    """UTM zone number(s) 1..60 with the Norway (32V) and Svalbard (31X/33X/35X/37X) exceptions.

    ``zone = floor((lon + 180) / 6) mod 60 + 1``, so lon 180 is zone 1. Returns int64 of the broadcast
    shape. Raises ValueError like :func:`latlon_to_cell` for invalid coordinates.
    """
    lat_a, lon_a = _as_degrees(lat, lon)
    zone = np.mod(np.floor((lon_a + 180.0) / 6.0).astype(np.int64), 60) + 1
    norway = (lat_a >= 56.0) & (lat_a < 64.0) & (lon_a >= 3.0) & (lon_a < 12.0)
    zone = np.where(norway, 32, zone)
    svalbard = (lat_a >= 72.0) & (lat_a < 84.0) & (lon_a >= 0.0)
    for lo, hi, z in ((0.0, 9.0, 31), (9.0, 21.0, 33), (21.0, 33.0, 35), (33.0, 42.0, 37)):
        zone = np.where(svalbard & (lon_a >= lo) & (lon_a < hi), z, zone)
    return zone.astype(np.int64)


def utm_epsg(lat: float | np.ndarray, lon: float | np.ndarray) -> np.ndarray | int:
    """WGS84 / UTM EPSG code(s) of points: 326zz north (lat 0 included), 327zz south.

    Returns an ``int`` for scalar input, else an int64 array of the broadcast shape.
    """
    lat_a, _ = _as_degrees(lat, lon)
    epsg = np.where(lat_a >= 0.0, 32600, 32700) + utm_zone(lat, lon)
    return int(epsg) if epsg.ndim == 0 else epsg


def cell_epsg(name: str) -> int:
    """EPSG of a cell: the UTM zone of its bottom-left grid point (``utm_definition='bottomleft'``)."""
    lat, lon = cell_bottom_left(name)
    return int(utm_epsg(lat, lon))


@dataclass(frozen=True)
class GridRow:
    """One grid row: its index, name, bottom latitude (deg) and column count."""

    row_idx: int
    name: str
    lat_bottom: float
    num_cols: int

    def lons(self) -> np.ndarray:
        """The row's sorted column longitudes: (num_cols,) float64 degrees."""
        return column_lons(self.row_idx)


def grid_row(row_idx: int) -> GridRow:
    """The :class:`GridRow` at ``row_idx`` (0 = 946D, the southernmost)."""
    row = int(_check_rows(row_idx))
    t = _tables()
    return GridRow(row, row_name(row), float(t.lat_bottom[row]), int(t.num_cols[row]))
