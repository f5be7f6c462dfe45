"""The static state of one scene: terrain, slope and land cover on its 10 m grid.

Built once per scene and reused by every acquisition (optical, radar) and by the LULC product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sampleworld.config import LandscapeStyle, RegionConfig, WorldConfig
from sampleworld.geometry import SceneGrid, region_xy
from sampleworld.keys import stable_key
from sampleworld.landcover import LandCover, classify, town_sites
from sampleworld.noise import fbm
from sampleworld.terrain import TerrainSample, region_key, sample_terrain, slope_and_normal


@dataclass(frozen=True)
class SceneState:
    """Everything about a scene that does not change with the date (10 m arrays, (rows, cols)).

    Attributes
    ----------
    grid, region, style:
        Where the scene is and what landscape it shows.
    key:
        The region's base key (fields are shared by all scenes of the region).
    x_m, y_m:
        float64 region-frame coordinates of the 10 m pixel centres, metres.
    terrain:
        Elevation and water at the 10 m pixel centres.
    slope_deg, dz_de, dz_dn:
        float64 slope (degrees) and east/north elevation gradients.
    land:
        Land cover (Esri class and fine kind).
    snow_patchiness:
        float32 noise in [-1, 1] that makes seasonal snow lines ragged.
    """

    grid: SceneGrid
    region: RegionConfig
    style: LandscapeStyle
    key: int
    x_m: np.ndarray
    y_m: np.ndarray
    terrain: TerrainSample
    slope_deg: np.ndarray
    dz_de: np.ndarray
    dz_dn: np.ndarray
    land: LandCover
    snow_patchiness: np.ndarray


def build_scene(config: WorldConfig, grid: SceneGrid, seed: int) -> SceneState:
    """Compute the static state of ``grid`` for world ``seed``."""
    region = config.region(grid.region)
    style = config.style_of(grid.region)
    key = region_key(seed, region.name)
    lon, lat = grid.lonlat(10)
    x, y = region_xy(region, lon, lat)
    terrain = sample_terrain(x, y, style, key)
    slope, dz_de, dz_dn = slope_and_normal(terrain.elevation_m, 10.0)
    land = classify(x, y, terrain, slope, style, key, town_sites(x, y, style, key))
    patchy = fbm(x, y, stable_key(key, "snowpatch"), 500.0, 3).astype(np.float32)
    return SceneState(grid, region, style, key, x, y, terrain, slope, dz_de, dz_dn, land, patchy)
