"""Register the real TerraMesh patches (``../shared/data/real/terramesh``) as catalog items.

Each location (e.g. ``637U_59R_1_3``) has five co-registered 224 x 224 px GeoTIFFs at 10 m in UTM.
They are split into one COG per band and catalogued in the same five collections as the synthetic
world, with their quirks kept and stated on every item and asset:

* S2 L2A/L1C: the 20 m and 60 m bands come resampled to 10 m (all assets are 10 m grids); values are
  reflectance x 10000 as distributed (source int16, stored uint16; no +1000 offset assumed);
* S1 RTC: VV and VH in **dB** (the sentinel-1-rtc collection is otherwise linear power);
* DEM: Copernicus DEM resampled to the 10 m UTM grid (not the arc-second grid);
* LULC: classes renumbered 1..9 (1 Water, 2 Trees, 3 Flooded vegetation, 4 Crops, 5 Built area, 6 Bare
  ground, 7 Snow/ice, 8 Clouds, 9 Rangeland), i.e. Esri codes 1, 2, 4, 5, 7, 8, 9, 10, 11; this mapping
  is inferred from the data (see the shared README), a documented assumption.

The acquisition dates are unknown: items carry a nominal datetime and ``copgen:datetime_nominal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from sampleworld.cog import write_cog
from sampleworld.config import CogConfig
from sampleworld.geometry import utm_to_lonlat
from sampleworld.products import asset_path, collection_href
from sampleworld.spectra import BANDS, L1C_BANDS, L2A_BANDS
from sampleworld.stac_items import WrittenRaster, footprint_geometry, item_dict, proj_fields, raster_asset

MODALITIES: dict[str, str] = {
    "S2L2A": "sentinel-2-l2a",
    "S2L1C": "sentinel-2-l1c",
    "S1RTC": "sentinel-1-rtc",
    "DEM": "cop-dem-glo-30",
    "LULC": "io-lulc-annual-v02",
}
"""TerraMesh folder -> STAC collection."""

NOMINAL_DATETIME = "2021-07-01T00:00:00Z"
LICENSE = "CC-BY-SA-4.0"
ATTRIBUTION = ("TerraMesh validation patch (IBM/terramind examples); contains modified Copernicus Sentinel "
               "data and Copernicus DEM data; land cover from Esri/Impact Observatory; CC-BY-SA-4.0.")

TERRAMESH_LULC_TO_ESRI: dict[int, int] = {1: 1, 2: 2, 3: 4, 4: 5, 5: 7, 6: 8, 7: 9, 8: 10, 9: 11}
"""TerraMesh LULC code -> Esri/IO code (inferred from the data; a documented assumption)."""

_LULC_NAMES = ("Water", "Trees", "Flooded vegetation", "Crops", "Built area", "Bare ground", "Snow/ice",
               "Clouds", "Rangeland")
_BAND = {b.name: b for b in BANDS}


@dataclass(frozen=True)
class TerraMeshLocation:
    """One TerraMesh location: its name and the source file of each modality folder."""

    name: str
    files: dict[str, Path]

    @property
    def cell(self) -> str:
        """The Major TOM cell in the name (``637U_59R_1_3`` -> ``637U_59R``)."""
        return "_".join(self.name.split("_")[:2])


def find_locations(terramesh_dir: Path) -> list[TerraMeshLocation]:
    """The locations under a TerraMesh folder (one per file name present in all five folders).

    Raises
    ------
    FileNotFoundError
        If the folder or one of its modality folders (S2L2A, S2L1C, S1RTC, DEM, LULC) is missing, or
        no location has all five files.
    """
    root = Path(terramesh_dir)
    missing = [m for m in MODALITIES if not (root / m).is_dir()]
    if not root.is_dir() or missing:
        raise FileNotFoundError(
            f"{root} is not a TerraMesh folder (missing {missing or 'the folder itself'}); pass the folder "
            "holding S2L2A/ S2L1C/ S1RTC/ DEM/ LULC/, e.g. ../shared/data/real/terramesh, or --no-terramesh"
        )
    names = sorted(set.intersection(*({p.stem for p in (root / m).glob("*.tif")} for m in MODALITIES)))
    if not names:
        raise FileNotFoundError(f"{root} has no location with all of {list(MODALITIES)}; check the files")
    return [TerraMeshLocation(n, {m: root / m / f"{n}.tif" for m in MODALITIES}) for n in names]


def planned_items(terramesh_dir: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """(collection, item id, asset keys) of every item :func:`terramesh_items` will write."""
    out = []
    for loc in find_locations(terramesh_dir):
        for mod, coll in MODALITIES.items():
            out.append((coll, item_id(loc.name, mod), _asset_keys(mod)))
    return out


def item_id(location: str, modality: str) -> str:
    """``terramesh-<location>-<modality>``, e.g. ``terramesh-637U_59R_1_3-S2L2A``."""
    return f"terramesh-{location}-{modality}"


def _asset_keys(modality: str) -> tuple[str, ...]:
    return {"S2L2A": L2A_BANDS, "S2L1C": L1C_BANDS, "S1RTC": ("vv", "vh"), "DEM": ("data",),
            "LULC": ("data",)}[modality]


def _read(path: Path) -> tuple[np.ndarray, int, Any]:
    with rasterio.open(path) as src:
        epsg = src.crs.to_epsg()
        if epsg is None:
            raise ValueError(f"{path}: CRS {src.crs} has no EPSG code; TerraMesh files are in UTM")
        return src.read(), int(epsg), src.transform


def terramesh_items(terramesh_dir: Path, out_dir: Path, cog: CogConfig) -> list[dict[str, Any]]:
    """Write per-band COGs of every TerraMesh location into the world and return their items.

    Raises
    ------
    FileNotFoundError
        See :func:`find_locations`.
    ValueError
        If a source file is not what the README describes (band count, negative reflectance).
    """
    items = []
    for loc in find_locations(terramesh_dir):
        for mod, coll in MODALITIES.items():
            data, epsg, transform = _read(loc.files[mod])
            keys = _asset_keys(mod)
            if data.shape[0] != len(keys):
                raise ValueError(f"{loc.files[mod]} has {data.shape[0]} bands, expected {len(keys)} ({keys}); "
                                 "is this the TerraMesh layout described in shared/data/real/README.md?")
            iid = item_id(loc.name, mod)
            assets = {}
            for i, key in enumerate(keys):
                plane, nodata, unit = _convert(mod, data[i], loc.files[mod])
                path = asset_path(out_dir, coll, iid, key)
                nbytes = write_cog(path, plane, crs=epsg, transform=transform, nodata=nodata,
                                   categorical=mod == "LULC", cog=cog, description=key)
                w = WrittenRaster(key, path, epsg, (int(plane.shape[0]), int(plane.shape[1])), transform,
                                  plane.dtype.name, nodata, 10.0, nbytes)
                assets[key] = _asset(mod, key, w, unit)
            items.append(_item(loc, mod, coll, iid, epsg, transform, data.shape[1:], assets, out_dir))
    return items


def _convert(mod: str, plane: np.ndarray, path: Path) -> tuple[np.ndarray, float | int | None, str | None]:
    if mod in ("S2L2A", "S2L1C"):
        if plane.min() < 0:
            raise ValueError(f"{path} holds negative reflectance ({plane.min()}); expected DN >= 0")
        return plane.astype(np.uint16), 0, None
    if mod == "S1RTC":
        return plane.astype(np.float32), -32768.0, "dB"
    if mod == "DEM":
        return plane.astype(np.float32), -32767.0, "metre"
    return plane.astype(np.uint8), 0, None


def _asset(mod: str, key: str, w: WrittenRaster, unit: str | None) -> dict[str, Any]:
    if mod in ("S2L2A", "S2L1C"):
        band = _BAND[key]
        note = "" if band.gsd_m == 10 else f" Native {band.gsd_m} m, resampled to 10 m by TerraMesh."
        return raster_asset(w, title=f"{band.description} - 10m", roles=["data", "reflectance"],
                            description="TerraMesh patch, reflectance x 10000 as distributed (source int16)." + note,
                            extra={"eo:bands": [band.eo_band()], "copgen:native_gsd": float(band.gsd_m)})
    if mod == "S1RTC":
        pol = key.upper()
        return raster_asset(w, title=f"{pol}: gamma naught in dB", roles=["data"], unit=unit,
                            description=f"TerraMesh patch, {pol} backscatter in dB (not linear power).")
    if mod == "DEM":
        return raster_asset(w, title="Elevation", roles=["data"], unit=unit,
                            description="TerraMesh patch: Copernicus DEM resampled to the 10 m UTM grid "
                                        "(source int16 metres).")
    values = [{"values": [code], "summary": name} for code, name in zip(range(1, 10), _LULC_NAMES, strict=True)]
    return raster_asset(w, title="Land use/land cover classes (renumbered 1..9)", roles=["data"],
                        description="TerraMesh patch: Esri/IO classes renumbered 1..9 (Esri 1, 2, 4, 5, 7, 8, 9, "
                                    "10, 11); mapping inferred from the data.",
                        extra={"file:values": values})


def _item(loc: TerraMeshLocation, mod: str, coll: str, iid: str, epsg: int, transform: Any,
          shape: tuple[int, int], assets: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    rows, cols = shape
    corners = [(0, rows), (cols, rows), (cols, 0), (0, 0)]
    xs, ys = [], []
    for c, r in corners:
        for s in np.linspace(0.0, 1.0, 4, endpoint=False):
            nc, nr = corners[(corners.index((c, r)) + 1) % 4]
            x, y = transform * (c + (nc - c) * s, r + (nr - r) * s)
            xs.append(x)
            ys.append(y)
    lon, lat = utm_to_lonlat(epsg, np.array(xs), np.array(ys))
    ring = [*zip(lon.tolist(), lat.tolist(), strict=True)]
    geometry, bbox = footprint_geometry([*ring, ring[0]])
    west, north = transform * (0, 0)
    east, south = transform * (cols, rows)
    props: dict[str, Any] = {
        "datetime": NOMINAL_DATETIME,
        "copgen:datetime_nominal": True,
        "license": LICENSE,
        **proj_fields(epsg, (rows, cols), transform, [west, south, east, north]),
        "copgen:source": "terramesh",
        "copgen:location": loc.name,
        "copgen:scene": f"terramesh-{loc.name}",
        "copgen:cells": [loc.cell],
        "copgen:notes": ATTRIBUTION,
    }
    if mod in ("S2L2A", "S2L1C"):
        props.update({"constellation": "Sentinel 2", "instruments": ["msi"], "eo:cloud_cover": 0.0,
                      "s2:product_type": "S2MSI2A" if mod == "S2L2A" else "S2MSI1C", "copgen:dn_offset": 0,
                      "copgen:quirks": ["20/60 m bands resampled to 10 m", "cloud cover assumed 0 (curated patch)",
                                        "processing baseline unknown; DN offset assumed 0"]})
    elif mod == "S1RTC":
        props.update({"constellation": "Sentinel-1", "sar:instrument_mode": "IW", "sar:frequency_band": "C",
                      "sar:polarizations": ["VV", "VH"], "sar:product_type": "GRD",
                      "copgen:s1_units": "dB", "copgen:quirks": ["backscatter in dB, not linear power"]})
    elif mod == "DEM":
        props.update({"gsd": 10, "copgen:quirks": ["resampled to 10 m UTM (not the arc-second grid)"]})
    else:
        props.update({"datetime": None, "start_datetime": "2021-01-01T00:00:00Z",
                      "end_datetime": "2022-01-01T00:00:00Z", "copgen:lulc_codes": "terramesh-1..9",
                      "copgen:quirks": ["classes renumbered 1..9 (see file:values)"]})
    if mod in ("S2L2A", "S2L1C"):
        # baseline unknown: declare the DN -> reflectance map explicitly (Earth Search style), offset 0
        for asset in assets.values():
            if "eo:bands" in asset:
                asset["raster:bands"][0].update({"scale": 0.0001, "offset": 0.0})
    return item_dict(item_id=iid, collection=coll, collection_href=collection_href(out_dir, coll),
                     geometry=geometry, bbox=bbox, properties=props, assets=assets)
