"""STAC Items and Collections in the Planetary Computer's conventions.

Items are plain dicts, written one per line to ``stac/items/<collection>.ndjson`` (what ``pypgstac
load items`` reads). They follow the Planetary Computer collections ``sentinel-2-l2a``,
``sentinel-2-l1c``, ``sentinel-1-rtc``, ``cop-dem-glo-30`` and ``io-lulc-annual-v02``: the same asset
keys, roles, titles, ``eo:bands``, ``sat``/``sar``/``s2`` properties, plus

* per-asset projection fields: ``proj:epsg`` **and** ``proj:code`` (stackstac 0.5 reads only the
  former, odc-stac and pystac 1.15 the latter; pystac drops ``proj:epsg`` when it loads an item),
  ``proj:shape``, ``proj:transform`` (6 numbers) and ``proj:bbox``;
* ``raster:bands`` with ``nodata``, ``data_type`` and ``spatial_resolution`` on every raster asset;
* absolute ``file://`` hrefs;
* ``copgen:*`` properties: ``source`` ("sampleworld" or "terramesh"), ``scene``, ``region``, ``cells``.

Geometry and bbox are WGS84, from the reprojected (densified) footprint; for Sentinel-2 items cut by
a swath edge, from the valid-data area.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import Polygon, mapping, shape
from shapely.geometry.polygon import orient

from sampleworld.geometry import utm_to_lonlat

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
STAC_VERSION = "1.1.0"
EXT = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "sat": "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "sar": "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "view": "https://stac-extensions.github.io/view/v1.0.0/schema.json",
}
"""Schema URIs of the STAC extensions used (the versions pystac 1.15 writes)."""

COLLECTIONS = ("sentinel-2-l2a", "sentinel-2-l1c", "sentinel-1-rtc", "cop-dem-glo-30", "io-lulc-annual-v02")


@dataclass(frozen=True)
class WrittenRaster:
    """A COG on disk and the grid facts its STAC asset needs.

    Attributes
    ----------
    key:
        Asset key (``"B04"``, ``"SCL"``, ``"vv"``, ``"data"``, ...).
    path:
        Absolute file path.
    epsg:
        EPSG code of the raster's CRS.
    shape:
        (rows, cols).
    transform:
        Affine pixel -> CRS transform.
    dtype:
        numpy dtype name.
    nodata:
        Nodata value, or None.
    resolution_m:
        Nominal ground sampling distance in metres (30 for the arc-second DEM).
    nbytes:
        File size in bytes.
    """

    key: str
    path: Path
    epsg: int
    shape: tuple[int, int]
    transform: Affine
    dtype: str
    nodata: float | int | None
    resolution_m: float
    nbytes: int

    @property
    def bbox(self) -> list[float]:
        """[left, bottom, right, top] in the raster's CRS."""
        t = self.transform
        rows, cols = self.shape
        xs = (t.c, t.c + cols * t.a)
        ys = (t.f, t.f + rows * t.e)
        return [min(xs), min(ys), max(xs), max(ys)]


def proj_fields(epsg: int, shape: tuple[int, int], transform: Affine, bbox: list[float]) -> dict[str, Any]:
    """Projection-extension fields (both ``proj:epsg`` and ``proj:code``)."""
    return {
        "proj:epsg": int(epsg),
        "proj:code": f"EPSG:{int(epsg)}",
        "proj:shape": [int(shape[0]), int(shape[1])],
        "proj:transform": [float(v) for v in tuple(transform)[:6]],
        "proj:bbox": [float(v) for v in bbox],
    }


def raster_asset(
    w: WrittenRaster,
    *,
    title: str,
    roles: list[str],
    description: str | None = None,
    unit: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The STAC asset of a written COG (href, type, roles, projection and raster fields)."""
    asset: dict[str, Any] = {"href": w.path.resolve().as_uri(), "type": COG_TYPE, "title": title}
    if description:
        asset["description"] = description
    asset["roles"] = roles
    asset["gsd"] = float(w.resolution_m)
    band: dict[str, Any] = {"data_type": w.dtype, "spatial_resolution": float(w.resolution_m)}
    if w.nodata is not None:
        band = {"nodata": _json_number(w.nodata), **band}
    if unit:
        band["unit"] = unit
    asset["raster:bands"] = [band]
    asset.update(proj_fields(w.epsg, w.shape, w.transform, w.bbox))
    asset["file:size"] = int(w.nbytes)
    if extra:
        asset.update(extra)
    return asset


def _json_number(v: float | int) -> float | int:
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)
    return int(f) if f.is_integer() else f


def footprint_geometry(ring_lonlat: list[tuple[float, float]]) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON polygon and bbox of a (closed) lon/lat ring."""
    poly = shapely.set_precision(Polygon(ring_lonlat), 1e-9)
    poly = orient(poly, 1.0)
    return _round_geometry(mapping(poly)), [round(float(v), 9) for v in poly.bounds]


def valid_area_geometry(valid: np.ndarray, transform: Affine, epsg: int, densify_m: float = 240.0
                        ) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON polygon and bbox (lon/lat) of the True pixels of ``valid`` on a UTM grid.

    Raises
    ------
    ValueError
        If no pixel is valid (such acquisitions get no item).
    """
    polys = [shape(g) for g, v in rasterio.features.shapes(valid.astype(np.uint8), transform=transform)
             if v == 1]
    if not polys:
        raise ValueError("no valid pixel: an acquisition entirely outside the swath has no item")
    area = shapely.union_all(polys).simplify(1.0)
    if area.geom_type != "Polygon":
        area = max(area.geoms, key=lambda g: g.area)
    area = shapely.segmentize(area, densify_m)
    xs, ys = np.asarray(area.exterior.coords).T
    lon, lat = utm_to_lonlat(epsg, xs, ys)
    return footprint_geometry(list(zip(lon.tolist(), lat.tolist(), strict=True)))


def _round_geometry(geom: Any) -> dict[str, Any]:
    def rnd(c: Any) -> Any:
        if isinstance(c, (list, tuple)) and c and isinstance(c[0], (int, float)):
            return [round(float(v), 9) for v in c]
        return [rnd(x) for x in c]

    return {"type": geom["type"], "coordinates": rnd(geom["coordinates"])}


def item_dict(
    *,
    item_id: str,
    collection: str,
    collection_href: str,
    geometry: dict[str, Any],
    bbox: list[float],
    properties: dict[str, Any],
    assets: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Assemble a STAC Item dict (STAC 1.1, one ``collection`` link).

    ``stac_extensions`` lists exactly the extensions whose fields (``eo:``, ``proj:``, ``raster:``,
    ``sat:``, ``sar:``, ``file:``, ``view:``) appear in the properties or assets.
    """
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": sorted(EXT[e] for e in _prefixes_used([properties, assets])),
        "id": item_id,
        "geometry": geometry,
        "bbox": bbox,
        "properties": properties,
        "links": [{"rel": "collection", "href": collection_href, "type": "application/json"}],
        "assets": assets,
        "collection": collection,
    }


def _prefixes_used(obj: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            prefix = k.split(":", 1)[0] if ":" in k else None
            if prefix in EXT:
                found.add(prefix)
            found |= _prefixes_used(v)
    elif isinstance(obj, list):
        for v in obj:
            found |= _prefixes_used(v)
    return found


_COLLECTION_TEXT: dict[str, tuple[str, str]] = {
    "sentinel-2-l2a": ("Sentinel-2 Level-2A (sample world)",
                       "Synthetic Sentinel-2 L2A surface reflectance (uint16 DN = reflectance x 10000, + 1000 "
                       "from processing baseline 04.00) with the scene classification map (SCL) at 20 m."),
    "sentinel-2-l1c": ("Sentinel-2 Level-1C (sample world)",
                       "Synthetic Sentinel-2 L1C top-of-atmosphere reflectance, 13 bands at their native "
                       "10/20/60 m grids, with a 4-class cloud mask (0 clear, 1 thick, 2 thin, 3 shadow) at 10 m."),
    "sentinel-1-rtc": ("Sentinel-1 Radiometrically Terrain Corrected (sample world)",
                       "Synthetic Sentinel-1 IW RTC gamma0, VV and VH, linear power (float32), 10 m."),
    "cop-dem-glo-30": ("Copernicus DEM GLO-30 (sample world)",
                       "Synthetic elevation (float32 metres) on the 1 arc-second EPSG:4326 grid of Copernicus "
                       "DEM GLO-30 (longitude spacing widens above 50 degrees)."),
    "io-lulc-annual-v02": ("10m Annual Land Use Land Cover (9-class) V2 (sample world)",
                           "Synthetic Esri/Impact Observatory annual land cover, 10 m, UTM, uint8 class codes."),
}


def collection_dict(collection: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A STAC Collection covering ``items`` (extent = union of their bboxes and datetimes).

    Raises
    ------
    ValueError
        If ``items`` is empty (a collection needs an extent).
    """
    if not items:
        raise ValueError(f"collection {collection} has no items; a STAC collection needs at least one")
    bboxes = np.asarray([it["bbox"] for it in items], dtype=np.float64)
    bbox = [float(bboxes[:, 0].min()), float(bboxes[:, 1].min()), float(bboxes[:, 2].max()),
            float(bboxes[:, 3].max())]
    times = []
    for it in items:
        p = it["properties"]
        times += [t for t in (p.get("datetime"), p.get("start_datetime"), p.get("end_datetime")) if t]
    title, description = _COLLECTION_TEXT[collection]
    sources = sorted({it["properties"].get("copgen:source", "sampleworld") for it in items})
    extensions = sorted({e for it in items for e in it["stac_extensions"]})
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": extensions,
        "id": collection,
        "title": title,
        "description": description + " Sources: " + ", ".join(sources) + ".",
        "license": "other",
        "keywords": ["copgen", "sample world", *sources],
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [[min(times), max(times)]]}},
        "summaries": {"copgen:source": sources},
        "links": [],
    }
