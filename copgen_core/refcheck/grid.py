"""Golden check of the Major TOM grid against ``<ref_dir>/grid/{points,cells,rows}.json``.

Ids, indices, EPSG codes and grid coordinates must match exactly (README of the reference set); the
float32 cell and patch centres are compared with the processing tolerance (rtol = atol = 1e-6), and
their detail line says how many differ at all. Any file set with the same columnar layout works
(other points, other cells).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from copgen_core import grid
from copgen_core.refcheck import CheckResult
from copgen_core.refcheck.processing import compare_close, compare_exact

SECTION = "grid"


def _epsg_codes(values: list) -> np.ndarray:
    """``"EPSG:32631"`` strings (or ints) to int64."""
    return np.array([int(str(v).rsplit(":", 1)[-1]) for v in values], dtype=np.int64)


def _guarded(name: str, fn: Callable[[], CheckResult]) -> CheckResult:
    try:
        return fn()
    except KeyError as exc:
        return CheckResult(SECTION, name, float("inf"), 0.0, False, f"missing field {exc}")
    except Exception as exc:  # noqa: BLE001 - a crash is a failed check, reported with its message
        return CheckResult(SECTION, name, float("inf"), 0.0, False, f"{type(exc).__name__}: {exc}")


def _points(path: Path) -> list[CheckResult]:
    p = json.loads(path.read_text())
    lat, lon = np.array(p["lat"], dtype=np.float64), np.array(p["lon"], dtype=np.float64)
    rows, cols = grid.latlon_to_cell(lat, lon)
    names = [grid.cell_id(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]
    bl = np.array([grid.cell_bottom_left(n) for n in names]).reshape(-1, 2)
    checks: dict[str, Callable[[], CheckResult]] = {
        "points/row_idx": lambda: compare_exact(SECTION, "points/row_idx", rows, np.array(p["row_idx"])),
        "points/col_idx": lambda: compare_exact(SECTION, "points/col_idx", cols, np.array(p["col_idx"])),
        "points/cell": lambda: compare_exact(SECTION, "points/cell", np.array(names), np.array(p["cell"])),
        "points/row_col_names": lambda: compare_exact(
            SECTION, "points/row_col_names", np.array([n.split("_") for n in names]).reshape(-1, 2),
            np.stack([np.array(p["row"]), np.array(p["col"])], axis=-1)),
        "points/row_col_int": lambda: compare_exact(
            SECTION, "points/row_col_int",
            np.stack([rows - grid.equator_row(), cols - grid.zero_col(rows)], axis=-1),
            np.stack([np.array(p["row_int"]), np.array(p["col_int"])], axis=-1)),
        "points/bottom_left": lambda: compare_exact(
            SECTION, "points/bottom_left", bl, np.stack([np.array(p["bl_lat"]), np.array(p["bl_lon"])], -1)),
        "points/cell_epsg": lambda: compare_exact(
            SECTION, "points/cell_epsg", np.array([grid.cell_epsg(n) for n in names]), _epsg_codes(p["cell_epsg"])),
        "points/point_epsg": lambda: compare_exact(
            SECTION, "points/point_epsg", grid.utm_epsg(lat, lon), _epsg_codes(p["point_epsg"])),
        "points/bl_le_point": lambda: compare_exact(
            SECTION, "points/bl_le_point", (bl[:, 0] <= lat) & (bl[:, 1] <= lon), np.array(p["bl_le_point"])),
    }
    return [_guarded(name, fn) for name, fn in checks.items()]


def _cells(path: Path) -> list[CheckResult]:
    cells = json.loads(path.read_text())["cells"]
    names = [c["cell"] for c in cells]
    idx = np.array([grid.parse_cell(n) for n in names]).reshape(-1, 2)
    out = [
        _guarded("cells/indices", lambda: compare_exact(
            SECTION, "cells/indices", idx, np.array([[c["row_idx"], c["col_idx"]] for c in cells]).reshape(-1, 2))),
        _guarded("cells/id_round_trip", lambda: compare_exact(
            SECTION, "cells/id_round_trip", np.array([grid.cell_id(int(r), int(c)) for r, c in idx]), np.array(names))),
        _guarded("cells/bottom_left", lambda: compare_exact(
            SECTION, "cells/bottom_left", np.array([grid.cell_bottom_left(n) for n in names]).reshape(-1, 2),
            np.array([[c["bl_lat"], c["bl_lon"]] for c in cells]).reshape(-1, 2))),
        _guarded("cells/num_cols_in_row", lambda: compare_exact(
            SECTION, "cells/num_cols_in_row", grid.num_cols(idx[:, 0]), np.array([c["num_cols_in_row"] for c in cells]))),
        _guarded("cells/epsg", lambda: compare_exact(
            SECTION, "cells/epsg", np.array([grid.cell_epsg(n) for n in names]), _epsg_codes([c["epsg"] for c in cells]))),
        _guarded("cells/centre_latlon_f32", lambda: compare_close(
            SECTION, "cells/centre_latlon_f32", np.array([grid.cell_centre(n) for n in names], np.float32),
            np.array([c["centre_latlon_f32"] for c in cells], np.float32))),
        _guarded("cells/centre_xyz_f32", lambda: compare_close(
            SECTION, "cells/centre_xyz_f32", np.array([grid.cell_centre_xyz(n) for n in names]),
            np.array([c["centre_xyz_f32"] for c in cells], np.float32))),
    ]
    with_patches = [c for c in cells if "patch_centres_latlon_f32" in c or "patch_centres_xyz_f32" in c]
    for fmt in ("latlon", "xyz"):
        field = f"patch_centres_{fmt}_f32"
        sel = [c for c in with_patches if field in c]
        if not sel:
            continue
        name = f"cells/{field}"
        got = np.stack([grid.patch_centres(c["cell"], fmt) for c in sel])
        ref = np.array([c[field] for c in sel], np.float32)
        out.append(_guarded(name, partial(compare_close, SECTION, name, got, ref)))
    return out


def _rows(path: Path) -> list[CheckResult]:
    r = json.loads(path.read_text())
    n = grid.num_rows()
    ours_names = np.array([grid.row_name(i) for i in range(n)])
    return [
        _guarded("rows/name", lambda: compare_exact(SECTION, "rows/name", ours_names, np.array(r["name"]))),
        _guarded("rows/lat_bottom", lambda: compare_exact(
            SECTION, "rows/lat_bottom", grid.row_lats(), np.array(r["lat_bottom"], dtype=np.float64))),
        _guarded("rows/num_cols", lambda: compare_exact(
            SECTION, "rows/num_cols", grid.num_cols(np.arange(n)), np.array(r["num_cols"]))),
    ]


def run(ref_dir: Path) -> list[CheckResult]:
    """Compare the grid with ``ref_dir/grid/*.json``; one result per field and file.

    Raises
    ------
    FileNotFoundError
        If ``ref_dir/grid`` holds none of points.json, cells.json, rows.json.
    """
    folder = Path(ref_dir) / "grid"
    parts = {"points.json": _points, "cells.json": _cells, "rows.json": _rows}
    present = [(folder / f, fn) for f, fn in parts.items() if (folder / f).is_file()]
    if not present:
        raise FileNotFoundError(f"{folder} holds none of {list(parts)}; point the check at a directory laid out "
                                "like shared/reference/copgen/")
    out: list[CheckResult] = []
    for path, fn in present:
        out += fn(path)
    return out
