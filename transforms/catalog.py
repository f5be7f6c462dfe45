"""Catalog conventions: one description of a STAC item, whichever catalog it came from.

:func:`describe_item` is the single code path from a pystac ``Item`` (or its dict) of Planetary
Computer, Earth Search, the Copernicus Data Space or the sample world to a :class:`CatalogItem`:
product kind, UTC datetime, EPSG code, and per canonical band the href, grid, nodata, dtype and the
:class:`ValueMap` that turns DNs into physical values (``physical = DN * scale + offset``).

The conventions it resolves:

* band asset keys (``B04`` / ``red`` / ``B04_10m``), see :mod:`transforms.catalog_bands`;
* ``proj:epsg`` (STAC 1.0) or ``proj:code`` (STAC 1.1, ``"EPSG:32632"``), at asset or item level;
  likewise ``proj:shape`` and ``proj:transform`` (3x3 transforms are cut to their 6 affine terms);
* ``raster:bands`` (``scale``, ``offset``, ``nodata``, ``data_type``), STAC 1.1 asset fields
  (``raster:scale``, ``raster:offset``, ``nodata``, ``data_type``), or nothing at all;
* Sentinel-2 DNs: reflectance = DN / 10000, and from processing baseline 04.00 the products add 1000,
  so reflectance = (DN - 1000) / 10000. A declared scale/offset wins (Earth Search gives
  scale 1e-4, offset -0.1); without one the baseline decides (Planetary Computer);
* Sentinel-1 backscatter in linear power or dB: a declared ``unit`` wins, else the collection's
  documented convention (Planetary Computer ``sentinel-1-rtc``: linear gamma0).

Anything it cannot resolve raises ``ValueError`` naming the item id, the missing field and a fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from transforms.catalog_bands import (
    DEFAULT_DTYPES,
    KNOWN_COLLECTIONS,
    PRODUCT_TYPES,
    S2_NATIVE_GSD_M,
    S2_SPECTRAL_BANDS,
    ProductKind,
    canonical_band,
    expected_bands,
)

__all__ = [
    "BandAsset",
    "CatalogItem",
    "ProductKind",
    "S1Units",
    "ValueMap",
    "describe_item",
]

S2_REFLECTANCE_SCALE = 1e-4
S2_BASELINE_OFFSET_DN = 1000
"""DN added to Sentinel-2 L1C/L2A reflectances from processing baseline 04.00 (January 2022) on."""


class S1Units(StrEnum):
    """How Sentinel-1 backscatter values are expressed."""

    LINEAR = "linear"  # gamma0 as linear power ratio
    DB = "dB"  # 10 * log10(linear)


S1_UNITS_BY_COLLECTION: dict[str, S1Units] = {"sentinel-1-rtc": S1Units.LINEAR}
"""Documented units of collections that do not declare them (Planetary Computer RTC: linear power)."""


@dataclass(frozen=True)
class ValueMap:
    """Affine DN -> physical value map: ``physical = DN * scale + offset``."""

    scale: float = 1.0
    offset: float = 0.0

    def apply(self, dn: Any) -> Any:
        """Physical values of ``dn`` (a number or a NumPy array; arrays come back as float)."""
        return dn * self.scale + self.offset

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0


@dataclass(frozen=True)
class BandAsset:
    """One canonical band of an item.

    Attributes
    ----------
    band:
        Canonical name: ``B01``..``B12``, ``B8A``, ``SCL``, ``cloud_mask``, ``vv``, ``vh``, ``DEM``, ``LULC``.
    asset_key:
        The asset's key in the source item (``"red"``, ``"B04_10m"``, ``"data"``...).
    href:
        Absolute href of the raster (``https://``, ``s3://``, ``file://``...).
    shape:
        ``proj:shape`` as (rows, cols), or None when the catalog does not say.
    transform:
        ``proj:transform`` as the 6 affine terms (a, b, c, d, e, f), or None when the catalog does not say.
    nodata:
        Declared nodata value; None means "use the file's own tag".
    dtype:
        Declared data type, else the type the product ships in (``uint16`` for S2 DNs...).
    value_map:
        ``physical = DN * scale + offset``: reflectance for S2 bands, backscatter for S1, metres for DEM,
        class codes (identity) for SCL, LULC and the cloud mask.
    code_map:
        Land cover only: (stored code, Esri/IO code) pairs when the asset codes its classes otherwise
        (declared by ``classification:classes`` or ``file:values`` class names); None when it uses the
        Esri codes already.
    """

    band: str
    asset_key: str
    href: str
    shape: tuple[int, int] | None
    transform: tuple[float, float, float, float, float, float] | None
    nodata: float | None
    dtype: str | None
    value_map: ValueMap
    code_map: tuple[tuple[int, int], ...] | None = None

    @property
    def gsd_m(self) -> float | None:
        """Pixel size in CRS units (metres for UTM), from the transform."""
        return abs(self.transform[0]) if self.transform is not None else None


@dataclass(frozen=True)
class CatalogItem:
    """What copgen needs to know about one STAC item, in one convention.

    Attributes
    ----------
    id, collection:
        STAC item and collection ids.
    kind:
        Product kind.
    datetime:
        Acquisition time, timezone-aware UTC (``start_datetime`` when ``datetime`` is null).
    epsg:
        EPSG code of the item's rasters.
    bbox:
        (west, south, east, north) in degrees, from the item.
    bands:
        Canonical bands in canonical order (B01..B08, B8A, B09..B12, SCL, cloud_mask; vv, vh).
    cloud_cover:
        ``eo:cloud_cover`` in percent, or None.
    s2_processing_baseline:
        Sentinel-2 processing baseline (``"05.10"``), None if not S2 or not stated.
    s2_dn_offset_applies:
        Sentinel-2 only: True when the DNs carry the +1000 offset of baseline 04.00+, so reflectance is
        (DN - 1000) / 10000; the band value maps already include it. None for other products.
    s1_units:
        Sentinel-1 only: linear power or dB. None for other products.
    """

    id: str
    collection: str
    kind: ProductKind
    datetime: datetime
    epsg: int
    bbox: tuple[float, float, float, float]
    bands: tuple[BandAsset, ...]
    cloud_cover: float | None = None
    s2_processing_baseline: str | None = None
    s2_dn_offset_applies: bool | None = None
    s1_units: S1Units | None = None

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.band for b in self.bands)

    def band(self, name: str) -> BandAsset:
        """The band called ``name`` (canonical name).

        Raises
        ------
        KeyError
            If the item has no such band; the message lists those it has.
        """
        for b in self.bands:
            if b.band == name:
                return b
        raise KeyError(f"item {self.id!r} ({self.collection}) has no band {name!r}; it has {list(self.band_names)}")


def _fail(item_id: str, what: str, fix: str) -> ValueError:
    return ValueError(f"STAC item {item_id!r}: {what}. {fix}")


def _as_dict(item: Any) -> dict[str, Any]:
    """The item as a dict, asset hrefs made absolute when the item knows its location."""
    if isinstance(item, Mapping):
        return dict(item)
    to_dict = getattr(item, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"describe_item needs a pystac.Item or an item dict, got {type(item).__name__}")
    d: dict[str, Any] = to_dict(include_self_link=False, transform_hrefs=False)
    assets = getattr(item, "assets", {})
    d["assets"] = {
        key: {**value, "href": assets[key].get_absolute_href() or value["href"]} if key in assets else value
        for key, value in d.get("assets", {}).items()
    }
    return d


def _kind_of(item_id: str, collection: str, props: Mapping[str, Any]) -> ProductKind:
    if collection in KNOWN_COLLECTIONS:
        return KNOWN_COLLECTIONS[collection]
    for field in ("s2:product_type", "product:type"):
        value = props.get(field)
        if isinstance(value, str) and value in PRODUCT_TYPES:
            return PRODUCT_TYPES[value]
    raise _fail(
        item_id,
        f"unknown product: collection {collection!r} is not one of {sorted(KNOWN_COLLECTIONS)} and "
        "'s2:product_type'/'product:type' is missing or unknown",
        "Pass kind=ProductKind.<KIND> to describe_item, or add the collection to "
        "transforms.catalog_bands.KNOWN_COLLECTIONS.",
    )


def _parse_datetime(item_id: str, field: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise _fail(item_id, f"{field!r} is {value!r}, not an RFC 3339 string", "Fix the item's properties.")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise _fail(item_id, f"{field!r} = {value!r} is not an RFC 3339 date-time",
                    "Write it like '2024-04-19T09:55:49Z'.") from None
    # STAC date-times are UTC; a missing zone is read as UTC rather than as local time.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _item_datetime(item_id: str, props: Mapping[str, Any]) -> datetime:
    if props.get("datetime") is not None:
        return _parse_datetime(item_id, "datetime", props["datetime"])
    if props.get("start_datetime") is not None:
        return _parse_datetime(item_id, "start_datetime", props["start_datetime"])
    raise _fail(item_id, "no 'datetime' and no 'start_datetime' in properties",
                "Every STAC item needs one of them; fix the catalog or the item.")


def _epsg_of(item_id: str, where: str, fields: Mapping[str, Any]) -> int | None:
    """EPSG code from ``proj:epsg`` or ``proj:code``, or None when neither is there."""
    epsg = fields.get("proj:epsg")
    if epsg is not None:
        if isinstance(epsg, bool) or not isinstance(epsg, int | float) or int(epsg) != epsg:
            raise _fail(item_id, f"{where} 'proj:epsg' is {epsg!r}, not an integer EPSG code", "Fix the item.")
        return int(epsg)
    code = fields.get("proj:code")
    if code is not None:
        match = re.fullmatch(r"EPSG:(\d+)", str(code).strip(), flags=re.IGNORECASE)
        if match is None:
            raise _fail(item_id, f"{where} 'proj:code' is {code!r}, not 'EPSG:<code>'",
                        "copgen reads EPSG-coded rasters only; reproject or give 'proj:code': 'EPSG:<code>'.")
        return int(match.group(1))
    return None


def _shape_of(value: Any) -> tuple[int, int] | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def _transform_of(value: Any) -> tuple[float, float, float, float, float, float] | None:
    if isinstance(value, list | tuple) and len(value) in (6, 9):
        a, b, c, d, e, f = (float(v) for v in value[:6])
        return a, b, c, d, e, f
    return None


def _bbox_of(item_id: str, d: Mapping[str, Any]) -> tuple[float, float, float, float]:
    bbox = d.get("bbox")
    if isinstance(bbox, list | tuple) and len(bbox) in (4, 6):
        values = [float(v) for v in bbox]
        if len(values) == 6:
            values = [values[0], values[1], values[3], values[4]]
        return values[0], values[1], values[2], values[3]
    raise _fail(item_id, f"'bbox' is {bbox!r}, not [west, south, east, north]",
                "Every STAC item with a geometry needs a bbox; fix the catalog or the item.")


def _raster_fields(asset: Mapping[str, Any]) -> dict[str, Any]:
    """scale/offset/nodata/data_type/unit of a single-band asset, whichever STAC version wrote them."""
    out: dict[str, Any] = {}
    bands = asset.get("raster:bands")
    if isinstance(bands, list) and bands and isinstance(bands[0], Mapping):  # raster extension 1.x
        for key in ("scale", "offset", "nodata", "data_type", "unit"):
            if key in bands[0]:
                out[key] = bands[0][key]
    stac11_bands = asset.get("bands")
    first = stac11_bands[0] if isinstance(stac11_bands, list) and stac11_bands else {}
    for source in (first if isinstance(first, Mapping) else {}, asset):  # STAC 1.1 / raster 2.0
        for key, field in (("scale", "raster:scale"), ("offset", "raster:offset"), ("nodata", "nodata"),
                           ("data_type", "data_type"), ("unit", "unit")):
            if field in source and key not in out:
                out[key] = source[field]
    return out


def _declared_value_map(fields: Mapping[str, Any]) -> ValueMap | None:
    if "scale" not in fields and "offset" not in fields:
        return None
    scale = fields.get("scale")
    offset = fields.get("offset")
    return ValueMap(scale=1.0 if scale is None else float(scale), offset=0.0 if offset is None else float(offset))


def _s2_baseline(props: Mapping[str, Any], item_id: str) -> str | None:
    for field in ("s2:processing_baseline", "processing:version", "sentinel:processing_baseline"):
        value = props.get(field)
        if value is not None:
            text = str(value).strip()
            if re.fullmatch(r"\d{1,2}\.\d{1,2}", text):
                major, minor = text.split(".")
                return f"{int(major):02d}.{int(minor):02d}"
    # Sentinel-2 product names carry the baseline: S2B_MSIL2A_20240419T095549_N0510_R122_...
    for name in (props.get("s2:product_uri"), props.get("sentinel:product_id"), item_id):
        match = re.search(r"_N(\d{2})(\d{2})_", str(name or ""))
        if match:
            return f"{match.group(1)}.{match.group(2)}"
    return None


def _s2_baseline_offset(baseline: str) -> bool:
    major, minor = (int(p) for p in baseline.split("."))
    return (major, minor) >= (4, 0)


def _s2_value_map(item_id: str, band: str, declared: ValueMap | None, baseline: str | None) -> ValueMap:
    if band not in S2_SPECTRAL_BANDS:
        return declared or ValueMap()  # SCL and the cloud mask are class codes
    if declared is not None:
        return declared
    if baseline is None:
        raise _fail(
            item_id,
            f"cannot tell whether band {band} carries the +{S2_BASELINE_OFFSET_DN} DN offset: its asset has no "
            "'raster:bands' scale/offset and the item has no 's2:processing_baseline' (or 'processing:version', "
            "or an _Nxxyy_ baseline in its product id)",
            "Add one of these fields to the item.",
        )
    offset_dn = S2_BASELINE_OFFSET_DN if _s2_baseline_offset(baseline) else 0
    return ValueMap(scale=S2_REFLECTANCE_SCALE, offset=-offset_dn * S2_REFLECTANCE_SCALE)


def _s1_units(item_id: str, collection: str, units_declared: set[str]) -> S1Units:
    declared: set[S1Units] = set()
    for unit in units_declared:
        u = unit.strip().lower()
        if u in ("db", "decibel", "decibels"):
            declared.add(S1Units.DB)
        elif u in ("linear", "linear power", "power", "1"):
            declared.add(S1Units.LINEAR)
        else:
            raise _fail(item_id, f"Sentinel-1 unit {unit!r} is neither dB nor linear",
                        "Set raster:bands unit to 'dB' or 'linear'.")
    if len(declared) > 1:
        raise _fail(item_id, "its vv/vh assets declare different units (dB and linear)", "Fix the item.")
    if declared:
        return declared.pop()
    if collection in S1_UNITS_BY_COLLECTION:
        return S1_UNITS_BY_COLLECTION[collection]
    raise _fail(
        item_id,
        f"cannot tell whether Sentinel-1 backscatter is linear power or dB: no 'unit' in the vv/vh assets' "
        f"'raster:bands' and collection {collection!r} has no known convention",
        "Add raster:bands[].unit ('dB' or 'linear') or add the collection to "
        "transforms.catalog.S1_UNITS_BY_COLLECTION.",
    )


def _pick(kind: ProductKind, band: str, candidates: list[tuple[int, float | None, float | None, str]]) -> str:
    """Asset key to use among those mapping to ``band``: best rank, then native resolution, then finest."""
    native = S2_NATIVE_GSD_M.get(band) if kind.is_s2 else None

    def order(c: tuple[int, float | None, float | None, str]) -> tuple[int, int, float, str]:
        rank, key_gsd, asset_gsd, key = c
        gsd = key_gsd if key_gsd is not None else asset_gsd
        return (rank, 0 if native is not None and gsd == native else 1, gsd if gsd is not None else math.inf, key)

    return min(candidates, key=order)[3]


ESRI_LULC_CODES_BY_NAME: dict[str, int] = {
    "water": 1, "trees": 2, "flooded vegetation": 4, "crops": 5, "built area": 7, "built": 7, "built-up areas": 7,
    "bare ground": 8, "snow/ice": 9, "clouds": 10, "rangeland": 11, "no data": 0, "nodata": 0,
}
"""Esri/Impact Observatory class names (lower case, as catalogs spell them) -> Esri raster code."""


def _lulc_code_map(item_id: str, key: str, asset: Mapping[str, Any]) -> tuple[tuple[int, int], ...] | None:
    """(stored, Esri) pairs from the asset's declared classes, or None if it already stores Esri codes."""
    declared: list[tuple[int, str]] = []
    for c in asset.get("classification:classes") or []:
        declared.append((int(c["value"]), str(c.get("description") or c.get("name") or "")))
    if not declared:
        for v in asset.get("file:values") or []:
            for value in v.get("values", []):
                declared.append((int(value), str(v.get("summary", ""))))
    if not declared:
        return None
    pairs = []
    for value, name in declared:
        # names outside the v02 legend (e.g. 'Grass', 'Scrub/shrub' of the 2020 v01 product) keep their code:
        # the 2020 product shares Esri's numbering; strict normalisation then reports codes 3 and 6
        code = ESRI_LULC_CODES_BY_NAME.get(name.strip().lower().replace("_", " "), value)
        pairs.append((value, code))
    if all(v == c for v, c in pairs):
        return None
    return tuple(sorted(pairs))


def describe_item(item: Any, *, kind: ProductKind | None = None) -> CatalogItem:
    """Describe a STAC item of any supported catalog in copgen's one convention.

    Parameters
    ----------
    item:
        A ``pystac.Item`` or an item dict (GeoJSON Feature), STAC 1.0 or 1.1.
    kind:
        Product kind; by default taken from the collection id (see ``KNOWN_COLLECTIONS``) or from
        ``s2:product_type``/``product:type``.

    Returns
    -------
    CatalogItem
        Frozen, comparable; bands in canonical order.

    Raises
    ------
    ValueError
        If a convention cannot be resolved (unknown collection, no datetime, no EPSG code, no band
        asset, S2 offset or S1 units undecidable); the message names the item, the field and the fix.
    """
    d = _as_dict(item)
    item_id = str(d.get("id") or "<no id>")
    if "id" not in d:
        raise _fail(item_id, "it has no 'id'", "Every STAC item needs an id; fix the catalog or the item.")
    props: Mapping[str, Any] = d.get("properties") or {}
    collection = str(d.get("collection") or "")
    kind = kind or _kind_of(item_id, collection, props)
    when = _item_datetime(item_id, props)
    bbox = _bbox_of(item_id, d)
    item_epsg = _epsg_of(item_id, "item", props)
    assets: Mapping[str, Mapping[str, Any]] = d.get("assets") or {}

    candidates: dict[str, list[tuple[int, float | None, float | None, str]]] = {}
    for key, asset in assets.items():
        match = canonical_band(kind, key, asset)
        if match is None:
            continue
        band, rank, key_gsd = match
        transform = _transform_of(asset.get("proj:transform"))
        asset_gsd = abs(transform[0]) if transform else (float(asset["gsd"]) if "gsd" in asset else None)
        candidates.setdefault(band, []).append((rank, key_gsd, asset_gsd, key))
    if not candidates:
        raise _fail(
            item_id,
            f"no asset holds a {kind.value} band; asset keys are {sorted(assets)}",
            f"Expected keys naming one of {list(expected_bands(kind))} (Planetary Computer, Earth Search "
            "or CDSE spelling); check the item's collection or pass the right kind=.",
        )

    baseline = _s2_baseline(props, item_id) if kind.is_s2 else None
    bands: list[BandAsset] = []
    epsgs: set[int] = set()
    units: set[str] = set()
    order = {name: i for i, name in enumerate(expected_bands(kind))}
    for band in sorted(candidates, key=lambda name: order.get(name, len(order))):
        key = _pick(kind, band, candidates[band])
        asset = assets[key]
        href = asset.get("href")
        if not isinstance(href, str) or not href:
            raise _fail(item_id, f"asset {key!r} has no href", "Fix the item.")
        asset_epsg = _epsg_of(item_id, f"asset {key!r}", asset)
        if asset_epsg is not None:
            epsgs.add(asset_epsg)
        fields = _raster_fields(asset)
        if "unit" in fields and fields["unit"] is not None:
            units.add(str(fields["unit"]))
        declared = _declared_value_map(fields)
        value_map = _s2_value_map(item_id, band, declared, baseline) if kind.is_s2 else declared or ValueMap()
        nodata = fields.get("nodata")
        bands.append(BandAsset(
            band=band,
            asset_key=key,
            href=href,
            shape=_shape_of(asset.get("proj:shape", props.get("proj:shape"))),
            transform=_transform_of(asset.get("proj:transform", props.get("proj:transform"))),
            nodata=None if nodata is None else float(nodata),
            dtype=str(fields.get("data_type") or DEFAULT_DTYPES.get(band)),
            value_map=value_map,
            code_map=_lulc_code_map(item_id, key, asset) if kind is ProductKind.LULC else None,
        ))

    if item_epsg is None and len(epsgs) == 1:
        item_epsg = epsgs.pop()
    if item_epsg is None:
        raise _fail(item_id, "no 'proj:epsg' or 'proj:code' at item or asset level" if not epsgs else
                    f"its band assets are in different CRSs {sorted(epsgs)}",
                    "Add 'proj:code': 'EPSG:<code>' (STAC 1.1) or 'proj:epsg' (STAC 1.0) to the item properties.")
    if epsgs - {item_epsg}:
        raise _fail(item_id, f"its band assets are in EPSG {sorted(epsgs)} but the item says EPSG {item_epsg}",
                    "copgen expects one CRS per item; fix the item or split it.")

    cloud = props.get("eo:cloud_cover")
    s2_offset: bool | None = None
    if kind.is_s2:
        spectral = [b for b in bands if b.band in S2_SPECTRAL_BANDS]
        if spectral:
            ref = next((b for b in spectral if b.band == "B04"), spectral[0])
            vm = ref.value_map
            s2_offset = vm.scale != 0 and round(-vm.offset / vm.scale) == S2_BASELINE_OFFSET_DN
        elif baseline is not None:
            s2_offset = _s2_baseline_offset(baseline)
    return CatalogItem(
        id=item_id,
        collection=collection,
        kind=kind,
        datetime=when,
        epsg=item_epsg,
        bbox=bbox,
        bands=tuple(bands),
        cloud_cover=None if cloud is None else float(cloud),
        s2_processing_baseline=baseline,
        s2_dn_offset_applies=s2_offset,
        s1_units=_s1_units(item_id, collection, units) if kind is ProductKind.S1_RTC else None,
    )
