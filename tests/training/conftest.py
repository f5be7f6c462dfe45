"""Fixtures of the training tests: a tiny real-data cube written with the preprocessing writer.

The cube has 3 x 3 windows of 60 m S2 L2A (B01, B09) and DEM at two time slots, filled with smooth
synthetic fields. Window (row 2601, col 152) misses its DEM at t=1 and window (2600, 152) has an
incomplete S2 block at t=0, as the ledger records them, so skipping is exercised.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from copgen_core.modalities import BY_KEY
from transforms.cube import CubeSpec, create_cube, write_window
from transforms.windows import WindowKey, iter_grid

S2_60 = "S2L2A_B01_B09"
DEM = "DEM_DEM"
LATLON = "3d_cartesian_lat_lon"
DATE = "mean_timestamps"
TIMES = (datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))
MISSING = (WindowKey(32632, 2601, 152), 1)
INCOMPLETE = (WindowKey(32632, 2600, 152), 0)


def field(key: WindowKey, t: int, modality: str) -> np.ndarray:
    """Smooth synthetic values of one modality on its native grid, in physical units."""
    mod = BY_KEY[modality]
    n = mod.pixel_size
    yy, xx = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    rng = np.random.default_rng([key.row, key.col, t, len(modality)])
    phase = rng.uniform(0, 2 * np.pi, size=len(mod.channels))
    planes = [np.sin(2 * np.pi * (xx + yy) + p) for p in phase]
    base = np.stack(planes)
    if modality == DEM:
        return (400.0 + 150.0 * base).astype(np.float32)
    return (1500.0 + 800.0 * base + rng.normal(0, 20, base.shape)).astype(np.float32)


def build_cube(url: str) -> CubeSpec:
    windows = tuple(iter_grid(32632, range(2600, 2603), range(150, 153)))
    spec = CubeSpec(url=url, modalities=(S2_60, DEM), windows=windows, times=TIMES)
    create_cube(spec)
    for w in windows:
        for t in range(len(TIMES)):
            arrays: dict[str, Any] = {m: field(w.key, t, m) for m in spec.modalities}
            valid = {m: 1.0 for m in arrays}
            if (w.key, t) == MISSING:
                del arrays[DEM]
                del valid[DEM]
            if (w.key, t) == INCOMPLETE:
                valid[S2_60] = 0.75
            prov = {"valid_fraction": valid, "missing": [m for m in spec.modalities if m not in arrays]}
            write_window(spec, w.key, t, arrays, prov)
    return spec


@pytest.fixture(scope="session")
def tiny_cube(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = str(tmp_path_factory.mktemp("training") / "cube.zarr")
    build_cube(url)
    return url
