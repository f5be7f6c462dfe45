"""Specification of the Major TOM grid (copgen_core.grid) against the official golden vectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copgen_core import grid
from copgen_core.refcheck import grid as grid_check
from tests.paths import REAL, REFERENCE

GRID_DIR = REFERENCE / "grid"
needs_reference = pytest.mark.skipif(
    not GRID_DIR.is_dir(), reason=f"golden grid vectors not found at {GRID_DIR}"
)


@pytest.fixture(scope="module")
def points() -> dict:
    return json.loads((GRID_DIR / "points.json").read_text())


@pytest.fixture(scope="module")
def cells() -> list[dict]:
    return json.loads((GRID_DIR / "cells.json").read_text())["cells"]


def _epsg(values: list[str]) -> list[int]:
    return [int(v.split(":")[1]) for v in values]


# --- golden vectors ---------------------------------------------------------------------------


@needs_reference
def test_every_golden_point_lands_in_the_official_cell(points: dict) -> None:
    rows, cols = grid.latlon_to_cell(np.array(points["lat"]), np.array(points["lon"]))
    assert rows.tolist() == points["row_idx"]
    assert cols.tolist() == points["col_idx"]
    assert grid.cell_ids(rows, cols).tolist() == points["cell"]
    assert [
        grid.cell_of(a, b) for a, b in zip(points["lat"][:50], points["lon"][:50], strict=True)
    ] == points["cell"][:50]


@needs_reference
def test_golden_points_bottom_left_is_bit_exact(points: dict) -> None:
    got = [grid.cell_bottom_left(n) for n in points["cell"]]
    assert got == list(zip(points["bl_lat"], points["bl_lon"], strict=True))


@needs_reference
def test_golden_points_epsg_of_cell_and_of_point(points: dict) -> None:
    assert [grid.cell_epsg(n) for n in points["cell"]] == _epsg(points["cell_epsg"])
    assert np.asarray(grid.utm_epsg(np.array(points["lat"]), np.array(points["lon"]))).tolist() == _epsg(
        points["point_epsg"]
    )


@needs_reference
def test_golden_signed_row_and_col_numbers(points: dict) -> None:
    rows, cols = np.array(points["row_idx"]), np.array(points["col_idx"])
    assert (rows - grid.equator_row()).tolist() == points["row_int"]
    assert (cols - grid.zero_col(rows)).tolist() == points["col_int"]


@needs_reference
def test_golden_cells_indices_counts_and_epsg(cells: list[dict]) -> None:
    for c in cells:
        assert grid.parse_cell(c["cell"]) == (c["row_idx"], c["col_idx"]), c["cell"]
        assert grid.cell_bottom_left(c["cell"]) == (c["bl_lat"], c["bl_lon"]), c["cell"]
        assert grid.num_cols(c["row_idx"]) == c["num_cols_in_row"]
        assert f"EPSG:{grid.cell_epsg(c['cell'])}" == c["epsg"]


@needs_reference
def test_golden_cell_centres_are_bit_exact_float32(cells: list[dict]) -> None:
    for c in cells:
        assert list(grid.cell_centre(c["cell"])) == c["centre_latlon_f32"], c["cell"]
        assert grid.cell_centre_xyz(c["cell"]).dtype == np.float32
        assert grid.cell_centre_xyz(c["cell"]).astype(np.float64).tolist() == c["centre_xyz_f32"], c["cell"]


@needs_reference
def test_golden_patch_centres_are_bit_exact_float32(cells: list[dict]) -> None:
    with_patches = [c for c in cells if "patch_centres_latlon_f32" in c]
    assert len(with_patches) >= 10
    for c in with_patches:
        latlon = grid.patch_centres(c["cell"])
        xyz = grid.patch_centres(c["cell"], "xyz")
        assert latlon.shape == (6, 6, 2) and xyz.shape == (6, 6, 3)
        assert latlon.astype(np.float64).tolist() == c["patch_centres_latlon_f32"]
        assert xyz.astype(np.float64).tolist() == c["patch_centres_xyz_f32"]
        assert latlon[0, 0, 0] > latlon[5, 0, 0], "row 0 must be the north row"


@needs_reference
def test_every_row_matches_the_official_row_table() -> None:
    rows = json.loads((GRID_DIR / "rows.json").read_text())
    assert grid.num_rows() == len(rows["name"]) == 1893
    assert grid.row_lats().tolist() == rows["lat_bottom"]
    assert np.asarray(grid.num_cols(np.arange(grid.num_rows()))).tolist() == rows["num_cols"]
    assert [grid.row_name(i) for i in range(grid.num_rows())] == rows["name"]
    assert int(np.sum(grid.num_cols(np.arange(grid.num_rows())))) == 5_094_350


# --- construction ------------------------------------------------------------------------------


def test_column_tables_equal_the_literal_official_construction_for_every_row() -> None:
    for row in range(grid.num_rows()):
        n = grid.num_cols(row)
        literal = np.sort(np.mod(np.linspace(-180, 180, n + 1)[:-1], 360) - 180)
        assert np.array_equal(grid.column_lons(row), literal), row


def test_twelve_even_rows_end_at_plus_180_instead_of_starting_at_minus_180() -> None:
    quirky = [r for r in range(grid.num_rows()) if grid.column_lons(r)[-1] == 180.0]
    assert len(quirky) == 12  # six column counts, each in both hemispheres
    assert sorted({grid.num_cols(r) for r in quirky}) == [1248, 1284, 2458, 2744, 2758, 2830]
    for r in quirky:
        assert grid.num_cols(r) % 2 == 0 and grid.column_lons(r)[0] > -180.0
        # A point just east of -180 wraps into the last cell, whose grid point is +180.
        rows, cols = grid.latlon_to_cell(float(grid.row_lats()[r]) + 1e-6, -179.99999)
        assert (int(rows), int(cols)) == (r, grid.num_cols(r) - 1)


@pytest.mark.parametrize("row", [0, 1, 146, 500, 945, 946, 1500, 1746, 1891, 1892])
def test_every_grid_point_of_a_row_goes_south_west_and_one_ulp_north_east_stays(row: int) -> None:
    lons_row = grid.column_lons(row)
    n = len(lons_row)
    lat_in = np.full(n, np.nextafter(grid.row_lats()[row], 90.0))
    _, on_point = grid.latlon_to_cell(lat_in, lons_row)
    assert on_point.tolist() == ((np.arange(n) - 1) % n).tolist()
    inside = lons_row < 180.0
    rows, cols = grid.latlon_to_cell(lat_in[inside], np.nextafter(lons_row[inside], 180.0))
    assert (rows == row).all() and cols.tolist() == np.arange(n)[inside].tolist()


def test_documented_quirks() -> None:
    assert grid.cell_of(0.0, 0.0) == "1D_1L"  # corners go to the cell below/left
    assert grid.cell_of(1e-9, 1e-9) == "0U_0R"
    assert grid.cell_of(0.0, -180.0) == grid.cell_of(0.0, 180.0) == "1D_2003R"  # antimeridian wrap
    lowest = float(grid.row_lats()[0])
    assert grid.cell_of(lowest, -20.0).startswith("946U_")  # bottom-row quirk wraps to the top row
    assert grid.cell_of(np.nextafter(lowest, 90.0), -20.0).startswith("946D_")
    assert grid.cell_of(86.0, 1.0) == "946U_0R"
    assert grid.cell_of(19.35, 96.99) == "215U_1019R"
    assert grid.cell_of(55.55, -4.7) == "618U_30L"


def test_scalar_and_array_inputs() -> None:
    rows, cols = grid.latlon_to_cell(19.35, 96.99)
    assert rows.shape == () and cols.shape == ()
    rows, cols = grid.latlon_to_cell(np.full((2, 3), 19.35), 96.99)
    assert rows.shape == cols.shape == (2, 3) and rows.dtype == np.int64
    assert grid.utm_epsg(19.35, 96.99) == 32647 and isinstance(grid.utm_epsg(19.35, 96.99), int)


@pytest.mark.parametrize(
    ("lat", "lon", "epsg"),
    [
        (60.0, 5.0, 32632),
        (56.0, 2.999, 32631),
        (56.0, 3.0, 32632),
        (63.999, 11.999, 32632),
        (64.0, 5.0, 32631),
        (72.0, 0.0, 32631),
        (75.0, 8.999, 32631),
        (75.0, 9.0, 32633),
        (80.0, 21.0, 32635),
        (83.9, 33.0, 32637),
        (83.9, 41.99, 32637),
        (84.0, 20.0, 32634),
        (0.0, 0.0, 32631),
        (-0.0, 0.0, 32631),
        (-1e-9, 0.0, 32731),
        (0.0, 180.0, 32601),
        (0.0, -180.0, 32601),
        (-36.0, 175.7, 32760),
    ],
)
def test_utm_zone_exceptions_and_hemispheres(lat: float, lon: float, epsg: int) -> None:
    assert grid.utm_epsg(lat, lon) == epsg


@pytest.mark.parametrize(
    "name",
    [
        "215U1019R",
        "215U_1019",
        "0D_0R",
        "1D_0L",
        "947U_0R",
        "947D_0R",
        "01U_0R",
        "215U_01R",
        "215X_1R",
        "",
        "215U_1892R",
        "215U_1892L",
        " 215U_1019R",
    ],
)
def test_parse_cell_rejects_malformed_or_out_of_grid_names(name: str) -> None:
    if name == " 215U_1019R":  # surrounding whitespace is tolerated
        assert grid.parse_cell(name) == (1161, 2910)
        return
    with pytest.raises(ValueError, match="215U_1019R|outside"):
        grid.parse_cell(name)


def test_invalid_coordinates_and_indices_raise_with_the_value() -> None:
    with pytest.raises(ValueError, match="NaN"):
        grid.latlon_to_cell(np.nan, 0.0)
    with pytest.raises(ValueError, match="91"):
        grid.latlon_to_cell(91.0, 0.0)
    with pytest.raises(ValueError, match="181"):
        grid.utm_epsg(0.0, 181.0)
    with pytest.raises(IndexError, match="1893"):
        grid.num_cols(1893)
    with pytest.raises(IndexError, match="4008"):
        grid.cell_id(945, 4008)
    with pytest.raises(ValueError, match="fmt|format"):
        grid.patch_centres("215U_1019R", "rgb")


def test_grid_row_accessor() -> None:
    row = grid.grid_row(1161)
    assert (row.name, row.num_cols) == ("215U", 3783)
    assert row.lons().shape == (3783,) and row.lons()[grid.zero_col(1161)] == 0.0
    assert row.lat_bottom == grid.cell_bottom_left("215U_0R")[0]


# --- properties --------------------------------------------------------------------------------

lats_in_grid = st.floats(min_value=-84.97, max_value=85.0, allow_nan=False)
lons = st.floats(min_value=-180.0, max_value=180.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(lat=lats_in_grid, lon=lons)
def test_point_lies_within_one_cell_step_north_east_of_its_bottom_left(lat: float, lon: float) -> None:
    rows, cols = grid.latlon_to_cell(lat, lon)
    r, c = int(rows), int(cols)
    bl_lat, bl_lon = grid.cell_bottom_left(grid.cell_id(r, c))
    lat_top = grid.row_lats()[r + 1] if r + 1 < grid.num_rows() else 90.0
    assert bl_lat < lat <= lat_top
    table = grid.column_lons(r)
    if c == len(table) - 1 and lon <= table[0]:  # antimeridian wrap: cell spans +-180
        assert bl_lon > lon
        assert lon + 360.0 - bl_lon <= 360.0 / len(table) + 1e-9
    else:
        east = table[c + 1] if c + 1 < len(table) else table[0] + 360.0
        assert bl_lon < lon <= east
        assert east - bl_lon <= 360.0 / len(table) + 1e-9


@settings(max_examples=300, deadline=None)
@given(row=st.integers(0, 1892), frac=st.floats(0.0, 1.0, exclude_max=True))
def test_cell_id_and_parse_cell_round_trip(row: int, frac: float) -> None:
    col = int(frac * grid.num_cols(row))
    name = grid.cell_id(row, col)
    assert grid.parse_cell(name) == (row, col)
    bl_lat, bl_lon = grid.cell_bottom_left(name)
    if bl_lon < 180.0:  # a point one ulp north-east of the grid point lies in that cell
        got = grid.latlon_to_cell(np.nextafter(bl_lat, 90.0), np.nextafter(bl_lon, 180.0))
        assert (int(got[0]), int(got[1])) == (row, col)


# --- real data ---------------------------------------------------------------------------------

TERRAMESH = REAL / "terramesh"


@pytest.mark.skipif(not TERRAMESH.is_dir(), reason=f"real TerraMesh tiles not found at {TERRAMESH}")
@pytest.mark.parametrize("tile", ["637U_59R_1_3", "38D_378R_2_3"])
def test_real_terramesh_tiles_sit_on_their_cell(tile: str) -> None:
    """TerraMesh sub-tile <cell>_<a>_<b>: UL = BL + (-340 + 2640 a, 10340 - 2640 b) m in the cell's UTM zone."""
    rasterio = pytest.importorskip("rasterio")
    pyproj = pytest.importorskip("pyproj")
    row, col, a, b = tile.split("_")
    cell = f"{row}_{col}"
    with rasterio.open(TERRAMESH / "DEM" / f"{tile}.tif") as ds:
        epsg, ul_x, ul_y = ds.crs.to_epsg(), ds.transform.c, ds.transform.f
    assert grid.cell_epsg(cell) == epsg
    lat, lon = grid.cell_bottom_left(cell)
    bl_x, bl_y = pyproj.Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    assert abs(bl_x - 340 + 2640 * int(a) - ul_x) < 0.01
    assert abs(bl_y + 10340 - 2640 * int(b) - ul_y) < 0.01


# --- the reference check itself ----------------------------------------------------------------


@needs_reference
def test_reference_check_passes_on_the_golden_set() -> None:
    results = grid_check.run(REFERENCE)
    assert len(results) >= 20
    assert [r.line() for r in results if not r.ok] == []


@needs_reference
def test_reference_check_fails_on_perturbed_copies(tmp_path: Path) -> None:
    shutil.copytree(GRID_DIR, tmp_path / "grid")
    points_path, rows_path = tmp_path / "grid" / "points.json", tmp_path / "grid" / "rows.json"
    p = json.loads(points_path.read_text())
    p["cell"][7] = "215U_1019R"
    p["bl_lat"][3] = float(np.nextafter(p["bl_lat"][3], 90.0))  # one ulp must be caught
    points_path.write_text(json.dumps(p))
    r = json.loads(rows_path.read_text())
    r["num_cols"][100] += 1
    rows_path.write_text(json.dumps(r))
    failed = {res.name for res in grid_check.run(tmp_path) if not res.ok}
    assert failed == {"points/cell", "points/bottom_left", "rows/num_cols"}


def test_reference_check_needs_a_grid_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="points.json"):
        grid_check.run(tmp_path)
