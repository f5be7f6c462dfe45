"""Render, write and catalogue every product of one scene (DEM, LULC, S2 L2A/L1C, S1 RTC).

:func:`scene_items` is the unit of work of world generation: it depends only on the config, the
scene, the seed and the output folder, so scenes can run in any order or process.
Assets go to ``<out>/assets/<collection>/<item_id>/<asset>.tif``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS

from sampleworld.acquisitions import (
    OpticalAcquisition,
    RadarAcquisition,
    optical_acquisitions,
    radar_acquisitions,
)
from sampleworld.cog import write_cog
from sampleworld.config import WorldConfig
from sampleworld.geometry import SceneGrid, dem_grid, region_xy
from sampleworld.landcover import LULC_CLASSES, LULC_NODATA
from sampleworld.mgrs import mgrs_tile
from sampleworld.optical import CLOUD_MASK_NODATA, S2_NODATA, OpticalProducts, render_optical
from sampleworld.radar import ENL, S1_NODATA, render_radar
from sampleworld.scene import SceneState, build_scene
from sampleworld.spectra import BANDS, L1C_BANDS, L2A_BANDS
from sampleworld.stac_items import (
    WrittenRaster,
    footprint_geometry,
    item_dict,
    proj_fields,
    raster_asset,
    valid_area_geometry,
)
from sampleworld.terrain import sample_terrain

DEM_NODATA = -32767.0
_BAND = {b.name: b for b in BANDS}


def iso(when: datetime | date) -> str:
    """RFC 3339 UTC timestamp with whole seconds (``2022-06-21T10:06:00Z``)."""
    if not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day, tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def asset_path(out_dir: Path, collection: str, item_id: str, key: str) -> Path:
    """Where an asset's COG lives under the world folder."""
    return out_dir / "assets" / collection / item_id / f"{key}.tif"


def collection_href(out_dir: Path, collection: str) -> str:
    return (out_dir / "stac" / "collections" / f"{collection}.json").resolve().as_uri()


def _write(out_dir: Path, collection: str, item_id: str, key: str, data: np.ndarray, *, epsg: int,
           grid_transform: Any, nodata: float | int | None, categorical: bool, resolution_m: float,
           config: WorldConfig) -> WrittenRaster:
    path = asset_path(out_dir, collection, item_id, key)
    nbytes = write_cog(path, data, crs=CRS.from_epsg(epsg), transform=grid_transform, nodata=nodata,
                       categorical=categorical, cog=config.cog, description=key)
    return WrittenRaster(key, path, epsg, (int(data.shape[0]), int(data.shape[1])), grid_transform,
                         data.dtype.name, nodata, resolution_m, nbytes)


def _common(state: SceneState) -> dict[str, Any]:
    return {
        "copgen:source": "sampleworld",
        "copgen:scene": state.grid.name,
        "copgen:region": state.region.name,
        "copgen:cells": list(state.grid.cells),
    }


def _scene_geometry(grid: SceneGrid) -> tuple[dict[str, Any], list[float]]:
    return footprint_geometry(grid.footprint_lonlat(16))


def lulc_item(state: SceneState, config: WorldConfig, out_dir: Path) -> dict[str, Any]:
    """Write the scene's land cover (uint8, 10 m, UTM) and return its ``io-lulc-annual-v02`` item."""
    grid = state.grid
    coll = "io-lulc-annual-v02"
    item_id = f"{grid.name}-{config.lulc_year}"
    w = _write(out_dir, coll, item_id, "data", state.land.lulc, epsg=grid.epsg, grid_transform=grid.transform(10),
               nodata=LULC_NODATA, categorical=True, resolution_m=10.0, config=config)
    values = [{"values": [code], "summary": name} for code, name in LULC_CLASSES.items()]
    asset = raster_asset(w, title="Land use/land cover classes", roles=["data"], extra={"file:values": values})
    geometry, bbox = _scene_geometry(grid)
    props = {
        "datetime": None,
        "start_datetime": f"{config.lulc_year}-01-01T00:00:00Z",
        "end_datetime": f"{config.lulc_year + 1}-01-01T00:00:00Z",
        "io:tile_id": grid.name,
        **proj_fields(grid.epsg, w.shape, w.transform, w.bbox),
        **_common(state),
    }
    return item_dict(item_id=item_id, collection=coll, collection_href=collection_href(out_dir, coll),
                     geometry=geometry, bbox=bbox, properties=props, assets={"data": asset})


def dem_item(state: SceneState, config: WorldConfig, out_dir: Path) -> dict[str, Any]:
    """Write the scene's DEM on the 1 arc-second EPSG:4326 grid and return its ``cop-dem-glo-30`` item."""
    grid = state.grid
    coll = "cop-dem-glo-30"
    item_id = f"copgen_DSM_COG_10_{grid.name}_DEM"
    dg = dem_grid(grid)
    lon, lat = dg.lonlat()
    x, y = region_xy(state.region, lon, lat)
    elevation = sample_terrain(x, y, state.style, state.key).elevation_m.astype(np.float32)
    w = _write(out_dir, coll, item_id, "data", elevation, epsg=4326, grid_transform=dg.transform,
               nodata=DEM_NODATA, categorical=False, resolution_m=30.0, config=config)
    asset = raster_asset(w, title=f"{grid.name} elevation", roles=["data"], unit="metre")
    west, south, east, north = dg.bounds()
    ring = [(west, south), (east, south), (east, north), (west, north), (west, south)]
    geometry, bbox = footprint_geometry(ring)
    props = {
        "gsd": 30,
        "datetime": iso(config.dem_date),
        "platform": "TanDEM-X",
        **proj_fields(4326, w.shape, w.transform, w.bbox),
        **_common(state),
    }
    return item_dict(item_id=item_id, collection=coll, collection_href=collection_href(out_dir, coll),
                     geometry=geometry, bbox=bbox, properties=props, assets={"data": asset})


def _s2_band_title(name: str) -> str:
    b = _BAND[name]
    return f"{b.description} - {b.gsd_m}m"


def s2_items(state: SceneState, acq: OpticalAcquisition, products: OpticalProducts, config: WorldConfig,
             out_dir: Path) -> list[dict[str, Any]]:
    """Write one acquisition's L2A and L1C COGs and return their two items."""
    grid = state.grid
    lon_c, lat_c = grid.centre_lonlat()
    left, bottom, right, top = grid.bounds
    tile = mgrs_tile(grid.epsg % 100, lat_c, (left + right) / 2.0, (bottom + top) / 2.0)
    if products.valid_fraction < 1.0:
        geometry, bbox = valid_area_geometry(products.valid_60m, grid.transform(60), grid.epsg)
    else:
        geometry, bbox = _scene_geometry(grid)
    out = []
    for level, coll, bands in (("L2A", "sentinel-2-l2a", L2A_BANDS), ("L1C", "sentinel-2-l1c", L1C_BANDS)):
        item_id = acq.item_id(level)
        planes = products.l2a if level == "L2A" else products.l1c
        assets: dict[str, dict[str, Any]] = {}
        for name in bands:
            res = _BAND[name].gsd_m
            w = _write(out_dir, coll, item_id, name, planes[name], epsg=grid.epsg,
                       grid_transform=grid.transform(res), nodata=S2_NODATA, categorical=False,
                       resolution_m=float(res), config=config)
            assets[name] = raster_asset(w, title=_s2_band_title(name), roles=["data", "reflectance"],
                                        extra={"eo:bands": [_BAND[name].eo_band()]})
        if level == "L2A":
            w = _write(out_dir, coll, item_id, "SCL", products.scl, epsg=grid.epsg,
                       grid_transform=grid.transform(20), nodata=0, categorical=True, resolution_m=20.0,
                       config=config)
            assets["SCL"] = raster_asset(w, title="Scene classfication map (SCL)", roles=["data"])
            cloud_cover = products.l2a_cloud_cover
        else:
            w = _write(out_dir, coll, item_id, "cloud_mask", products.cloud_mask, epsg=grid.epsg,
                       grid_transform=grid.transform(10), nodata=CLOUD_MASK_NODATA, categorical=True,
                       resolution_m=10.0, config=config)
            values = [{"values": [c], "summary": s}
                      for c, s in ((0, "clear"), (1, "thick cloud"), (2, "thin cloud"), (3, "cloud shadow"))]
            assets["cloud_mask"] = raster_asset(
                w, title="Cloud mask (0 clear, 1 thick cloud, 2 thin cloud, 3 cloud shadow)",
                roles=["data", "cloud"], extra={"file:values": values})
            cloud_cover = products.l1c_cloud_cover
        props: dict[str, Any] = {
            "datetime": iso(acq.when),
            "platform": acq.platform,
            "constellation": "Sentinel 2",
            "instruments": ["msi"],
            "eo:cloud_cover": cloud_cover,
            "sat:orbit_state": "descending",
            "sat:relative_orbit": acq.relative_orbit,
            "s2:mgrs_tile": tile,
            "s2:product_type": "S2MSI2A" if level == "L2A" else "S2MSI1C",
            "s2:processing_baseline": acq.processing_baseline,
            "s2:mean_solar_zenith": round(acq.sun_zenith_deg, 6),
            "s2:mean_solar_azimuth": round(acq.sun_azimuth_deg, 6),
            "s2:datatake_type": "INS-NOBS",
            "s2:nodata_pixel_percentage": products.scl_percentages["s2:nodata_pixel_percentage"],
            **proj_fields(grid.epsg, grid.shape(10), grid.transform(10), list(grid.bounds)),
            "copgen:dn_offset": acq.offset_dn,
            **_common(state),
        }
        if level == "L2A":
            props.update(products.scl_percentages)
        out.append(item_dict(item_id=item_id, collection=coll, collection_href=collection_href(out_dir, coll),
                             geometry=geometry, bbox=bbox, properties=props, assets=assets))
    return out


_S1_TEXT = {
    "vv": ("VV: vertical transmit, vertical receive",
           "Terrain-corrected gamma naught values of signal transmitted with vertical polarization and "
           "received with vertical polarization with radiometric terrain correction applied."),
    "vh": ("VH: vertical transmit, horizontal receive",
           "Terrain-corrected gamma naught values of signal transmitted with vertical polarization and "
           "received with horizontal polarization with radiometric terrain correction applied."),
}


def s1_item(state: SceneState, acq: RadarAcquisition, seed: int, config: WorldConfig, out_dir: Path
            ) -> dict[str, Any]:
    """Render and write one Sentinel-1 pass (vv, vh) and return its ``sentinel-1-rtc`` item."""
    grid = state.grid
    coll = "sentinel-1-rtc"
    item_id = acq.item_id()
    planes = render_radar(state, acq, seed, config.cog.s1_mantissa_bits)
    assets = {}
    for pol in ("vh", "vv"):
        w = _write(out_dir, coll, item_id, pol, planes[pol], epsg=grid.epsg, grid_transform=grid.transform(10),
                   nodata=S1_NODATA, categorical=False, resolution_m=10.0, config=config)
        title, description = _S1_TEXT[pol]
        assets[pol] = raster_asset(w, title=title, description=description, roles=["data"])
    geometry, bbox = _scene_geometry(grid)
    props = {
        "datetime": iso(acq.when),
        "platform": "SENTINEL-1A",
        "constellation": "Sentinel-1",
        "sat:orbit_state": acq.orbit_state,
        "sat:relative_orbit": acq.relative_orbit,
        "sat:absolute_orbit": acq.absolute_orbit,
        "sar:instrument_mode": "IW",
        "sar:frequency_band": "C",
        "sar:center_frequency": 5.405,
        "sar:polarizations": ["VV", "VH"],
        "sar:product_type": "GRD",
        "sar:resolution_range": 20,
        "sar:resolution_azimuth": 22,
        "sar:pixel_spacing_range": 10,
        "sar:pixel_spacing_azimuth": 10,
        "sar:looks_range": 5,
        "sar:looks_azimuth": 1,
        "sar:looks_equivalent_number": ENL,
        "sar:observation_direction": "right",
        "view:incidence_angle": round(acq.incidence_deg, 4),
        "s1:resolution": "high",
        **proj_fields(grid.epsg, grid.shape(10), grid.transform(10), list(grid.bounds)),
        "copgen:look_azimuth": round(acq.look_azimuth_deg, 4),
        **_common(state),
    }
    return item_dict(item_id=item_id, collection=coll, collection_href=collection_href(out_dir, coll),
                     geometry=geometry, bbox=bbox, properties=props, assets=assets)


def scene_items(config: WorldConfig, grid: SceneGrid, seed: int, out_dir: Path) -> list[dict[str, Any]]:
    """Generate and write every product of one scene; return its STAC items.

    Parameters
    ----------
    config:
        The world configuration.
    grid:
        The scene's grid (from :func:`sampleworld.geometry.scene_grid`).
    seed:
        World seed.
    out_dir:
        Absolute world folder.
    """
    state = build_scene(config, grid, seed)
    items = [dem_item(state, config, out_dir), lulc_item(state, config, out_dir)]
    for acq in optical_acquisitions(config, grid):
        items += s2_items(state, acq, render_optical(state, acq, seed), config, out_dir)
    for racq in radar_acquisitions(config, grid, seed):
        items.append(s1_item(state, racq, seed, config, out_dir))
    return items
