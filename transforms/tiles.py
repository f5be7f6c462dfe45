"""The read step: which sources feed each window (work units) and reading them into tiles.

A :class:`WorkUnit` is small and picklable (it crosses Beam/Dask process boundaries): a window, a target
time, and per modality the band sources in preference order. :func:`read_tile` turns it into a
:class:`Tile`: per modality a ``(C, H, W)`` float32 array in physical units on the window's native grid,
a validity mask and the GeoBox, so georeference travels with every array.

Physical units in tiles (and cubes): Sentinel-2 reflectance x 10000 with the baseline-04.00 offset
removed (harmonised DN), Sentinel-1 linear gamma0, DEM metres, LULC Esri class codes, cloud-mask codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from copgen_core.modalities import BY_KEY, Kind, Modality
from transforms.catalog import CatalogItem, S1Units
from transforms.geobox import GeoBox
from transforms.raster_read import ReadError, Resampling, read_band
from transforms.select import SelectionRule, select_items
from transforms.windows import Window, WindowKey

CATEGORICAL = (Kind.LULC, Kind.CLOUD)
BAND_OF_KIND: dict[Kind, tuple[str, ...]] = {Kind.DEM: ("DEM",), Kind.LULC: ("LULC",), Kind.CLOUD: ("cloud_mask",)}


@dataclass(frozen=True)
class BandSource:
    """One raster band that can fill one channel of a modality.

    ``scale``/``offset`` map stored values to the tile's physical units; ``db_to_linear`` converts
    Sentinel-1 dB to linear power after scaling.
    """

    item_id: str
    href: str
    band_index: int = 1
    nodata: float | None = None
    scale: float = 1.0
    offset: float = 0.0
    resampling: Resampling = Resampling.NEAREST
    db_to_linear: bool = False
    code_map: tuple[tuple[int, int], ...] | None = None
    acquired: str = ""  # ISO datetime of the acquisition, for provenance


@dataclass(frozen=True)
class WorkUnit:
    """One window at one target time, with the sources of every modality to read.

    ``sources`` maps modality key -> per channel -> band sources, best first (the reader mosaics them:
    the first valid pixel wins). A modality absent from ``sources`` had no acquisition.
    """

    window: Window
    time_index: int
    time: datetime
    sources: tuple[tuple[str, tuple[tuple[BandSource, ...], ...]], ...]

    @property
    def key(self) -> WindowKey:
        return self.window.key

    @property
    def name(self) -> str:
        """Stable sample key: window key and target date."""
        return f"{self.window.key}@{self.time:%Y-%m-%d}"

    def source_map(self) -> dict[str, tuple[tuple[BandSource, ...], ...]]:
        return dict(self.sources)


@dataclass
class Tile:
    """Arrays of one window at one time, each on its native grid.

    Attributes
    ----------
    arrays:
        Modality key -> float32 ``(C, H, W)`` physical values; NaN where invalid. Scalar modalities:
        ``3d_cartesian_lat_lon`` -> ``(2,)`` [lat, lon] degrees of the window centre;
        ``mean_timestamps`` -> ``(3,)`` [year, month, day].
    valid:
        Modality key -> bool ``(H, W)``, True where every channel has data.
    geoboxes:
        Modality key -> :class:`GeoBox` of the array.
    item_ids:
        Modality key -> ids of the items that contributed pixels, in preference order.
    """

    unit: WorkUnit
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    valid: dict[str, np.ndarray] = field(default_factory=dict)
    geoboxes: dict[str, GeoBox] = field(default_factory=dict)
    item_ids: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def complete(self, key: str, min_valid: float = 1.0) -> bool:
        """Whether modality ``key`` is present with at least ``min_valid`` fraction of valid pixels."""
        if key not in self.arrays:
            return False
        if key not in self.valid:
            return True
        return float(self.valid[key].mean()) >= min_valid


def _resampling(modality: Modality, source_gsd: float | None, same_crs: bool) -> Resampling:
    """Per-band resampling: average when coarsening, nearest for classes and for same-CRS same-GSD grids
    (a sub-pixel shift must not blend real values), bilinear for reprojected continuous data (DEM)."""
    target = modality.gsd_m or 0.0
    coarsening = source_gsd is not None and source_gsd < target - 1e-9
    if modality.kind in CATEGORICAL:
        return Resampling.MODE if coarsening else Resampling.NEAREST
    if coarsening:
        return Resampling.AVERAGE
    if same_crs and source_gsd is not None and abs(source_gsd - target) < 1e-9:
        return Resampling.NEAREST
    return Resampling.BILINEAR


def band_sources(item: CatalogItem, modality: Modality, target_epsg: int) -> tuple[tuple[BandSource, ...], ...] | None:
    """Per-channel sources of ``modality`` in ``item`` for a window in ``target_epsg``, or None when the
    item lacks a needed band."""
    names = BAND_OF_KIND.get(modality.kind, modality.channels)
    out: list[tuple[BandSource, ...]] = []
    for name in names:
        try:
            asset = item.band(name)
        except KeyError:
            return None
        scale, offset = asset.value_map.scale, asset.value_map.offset
        if modality.kind is Kind.S2:
            scale, offset = scale * 10000.0, offset * 10000.0  # reflectance -> harmonised DN
        out.append((BandSource(
            item_id=item.id, href=asset.href, nodata=asset.nodata, scale=scale, offset=offset,
            resampling=_resampling(modality, asset.gsd_m, item.epsg == target_epsg),
            db_to_linear=modality.kind is Kind.S1 and item.s1_units is S1Units.DB,
            code_map=asset.code_map,
            acquired=item.datetime.isoformat(),
        ),))
    return tuple(out)


def plan_units(windows: Sequence[Window], times: Sequence[datetime], items: Sequence[CatalogItem],
               modalities: Sequence[str], rules: Mapping[str, SelectionRule]) -> list[WorkUnit]:
    """Work units for every (window, time), with sources chosen by ``rules`` (keyed by collection id).

    Image modalities without a rule use the defaults of :class:`SelectionRule` (DEM and land cover are
    static). Scalar modalities need no sources: they come from the window and the time.
    """
    units: list[WorkUnit] = []
    for ti, when in enumerate(times):
        for win in windows:
            sources: list[tuple[str, tuple[tuple[BandSource, ...], ...]]] = []
            for key in modalities:
                mod = BY_KEY[key]
                if not mod.is_image or mod.collection is None:
                    continue
                rule = rules.get(mod.collection) or SelectionRule(
                    mod.collection, static=mod.kind in (Kind.DEM, Kind.LULC))
                per_channel: list[list[BandSource]] | None = None
                for item in select_items(win, items, when, rule):
                    srcs = band_sources(item, mod, win.epsg)
                    if srcs is None:
                        continue
                    if per_channel is None:
                        per_channel = [[] for _ in srcs]
                    for ch, s in enumerate(srcs):
                        per_channel[ch].extend(s)
                if per_channel:
                    sources.append((key, tuple(tuple(c) for c in per_channel)))
            units.append(WorkUnit(win, ti, when, tuple(sources)))
    return units


def _recode(values: np.ndarray, code_map: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Map stored class codes to Esri codes; codes the map does not name become NaN (no data)."""
    out = np.full(values.shape, np.nan, dtype=np.float32)
    for stored, esri in code_map:
        out[values == stored] = esri
    return out


def read_tile(unit: WorkUnit, modalities: Sequence[str]) -> Tile:
    """Read every requested modality of ``unit`` onto its native grid.

    Missing modalities (no sources) are simply absent from the tile. Sources are mosaicked in order:
    each channel takes the first valid pixel.

    Raises
    ------
    ReadError
        When a source file is missing or corrupt; the message names the href (the pipeline reports the
        window as failed with that reason and goes on with the others).
    """
    tile = Tile(unit)
    sources = unit.source_map()
    for key in modalities:
        mod = BY_KEY[key]
        if mod.kind is Kind.LATLON:
            tile.arrays[key] = np.asarray(unit.window.centre_latlon(), dtype=np.float64)
            continue
        if mod.kind is Kind.DATE:
            tile.arrays[key] = np.asarray([unit.time.year, unit.time.month, unit.time.day], dtype=np.int64)
            continue
        if key not in sources:
            continue
        geobox = unit.window.geobox(mod)
        h, w = geobox.shape
        channels = sources[key]
        data = np.full((len(channels), h, w), np.nan, dtype=np.float32)
        used: list[str] = []
        for c, options in enumerate(channels):
            filled = np.zeros((h, w), dtype=bool)
            for src in options:
                if filled.all():
                    break
                band = read_band(src.href, geobox, band=src.band_index, resampling=src.resampling,
                                 nodata=src.nodata, scale=src.scale, offset=src.offset)
                take = band.valid & ~filled
                if not take.any():
                    continue
                values = band.values
                if src.db_to_linear:
                    values = np.power(10.0, values / 10.0, dtype=np.float32)
                if src.code_map:
                    values = _recode(values, src.code_map)
                data[c][take] = values[take]
                filled |= take
                if src.item_id not in used:
                    used.append(src.item_id)
        valid: np.ndarray = np.asarray(np.isfinite(data).all(axis=0))
        tile.arrays[key] = data
        tile.valid[key] = valid
        tile.geoboxes[key] = geobox
        tile.item_ids[key] = tuple(used)
    return tile


__all__ = ["BandSource", "ReadError", "Tile", "WorkUnit", "band_sources", "plan_units", "read_tile"]
