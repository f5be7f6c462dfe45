"""What a world will contain, computed without rendering a pixel.

:func:`plan_world` places the scenes on their grids, works out every acquisition and lists every item
with its assets. It takes well under a second for the default preset, so tests and tools can check
the layout (cells, zones, dates, counts) cheaply.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from copgen_core import grid
from sampleworld import terramesh
from sampleworld.acquisitions import (
    OpticalAcquisition,
    RadarAcquisition,
    optical_acquisitions,
    radar_acquisitions,
)
from sampleworld.config import WorldConfig, preset_config
from sampleworld.geometry import SceneGrid, scene_grid
from sampleworld.products import iso
from sampleworld.spectra import L1C_BANDS, L2A_BANDS


@dataclass(frozen=True)
class PlannedItem:
    """One item the world will hold: collection, id, scene, datetime (None for yearly items), assets."""

    collection: str
    item_id: str
    scene: str
    datetime: str | None
    assets: tuple[str, ...]


@dataclass(frozen=True)
class WorldPlan:
    """The layout of a world: config, scene grids, acquisitions and items.

    Attributes
    ----------
    config:
        The preset's configuration.
    seed:
        World seed.
    scenes:
        Scene grids, main scene first.
    optical, radar:
        Scene name -> its acquisitions.
    items:
        Every item, sorted by (collection, id).
    """

    config: WorldConfig
    seed: int
    scenes: tuple[SceneGrid, ...]
    optical: dict[str, list[OpticalAcquisition]] = field(repr=False)
    radar: dict[str, list[RadarAcquisition]] = field(repr=False)
    items: tuple[PlannedItem, ...] = field(repr=False)

    @property
    def main(self) -> SceneGrid:
        """The contiguous main scene."""
        return next(s for s in self.scenes if s.kind == "main")

    @property
    def cells(self) -> tuple[str, ...]:
        """Sorted Major TOM cells with synthetic data."""
        return tuple(sorted({c for s in self.scenes for c in s.cells}))

    @property
    def epsg_codes(self) -> tuple[int, ...]:
        """Sorted UTM EPSG codes of the synthetic scenes."""
        return tuple(sorted({s.epsg for s in self.scenes}))

    @property
    def zones(self) -> tuple[int, ...]:
        """Sorted UTM zone numbers of the cells (from each cell's bottom-left corner)."""
        return tuple(sorted({grid.cell_epsg(c) % 100 for c in self.cells}))

    def dates(self, collection: str) -> tuple[str, ...]:
        """Sorted distinct acquisition days (``YYYY-MM-DD``) of a collection's synthetic items."""
        return tuple(sorted({i.datetime[:10] for i in self.items
                             if i.collection == collection and i.datetime and not i.item_id.startswith("terramesh")}))

    def counts(self) -> dict[str, int]:
        """Items per collection."""
        out: dict[str, int] = defaultdict(int)
        for i in self.items:
            out[i.collection] += 1
        return dict(sorted(out.items()))


def plan_world(preset: str = "default", seed: int = 0, terramesh_dir: Path | None = None) -> WorldPlan:
    """Plan a world without rendering it.

    Parameters
    ----------
    preset:
        ``"default"`` or ``"small"``.
    seed:
        World seed.
    terramesh_dir:
        TerraMesh folder whose locations are added as items, or None.

    Raises
    ------
    ValueError
        For an unknown preset or two scenes with the same name (two cell scenes in one Major TOM cell).
    """
    config = preset_config(preset)
    grids = sorted((scene_grid(s) for s in config.scenes), key=lambda g: (g.kind != "main", g.name))
    names = [g.name for g in grids]
    if len(set(names)) != len(names):
        raise ValueError(f"preset {preset!r} has two scenes with the same name in {names}; give each cell "
                         "scene its own Major TOM cell")
    optical = {g.name: optical_acquisitions(config, g) for g in grids}
    radar = {g.name: radar_acquisitions(config, g, seed) for g in grids}
    items: list[PlannedItem] = []
    for g in grids:
        items.append(PlannedItem("cop-dem-glo-30", f"copgen_DSM_COG_10_{g.name}_DEM", g.name,
                                 iso(config.dem_date), ("data",)))
        items.append(PlannedItem("io-lulc-annual-v02", f"{g.name}-{config.lulc_year}", g.name, None, ("data",)))
        for a in optical[g.name]:
            items.append(PlannedItem("sentinel-2-l2a", a.item_id("L2A"), g.name, iso(a.when), (*L2A_BANDS, "SCL")))
            items.append(PlannedItem("sentinel-2-l1c", a.item_id("L1C"), g.name, iso(a.when),
                                     (*L1C_BANDS, "cloud_mask")))
        for r in radar[g.name]:
            items.append(PlannedItem("sentinel-1-rtc", r.item_id(), g.name, iso(r.when), ("vh", "vv")))
    if terramesh_dir is not None:
        for coll, iid, keys in terramesh.planned_items(terramesh_dir):
            when = None if coll == "io-lulc-annual-v02" else terramesh.NOMINAL_DATETIME
            items.append(PlannedItem(coll, iid, iid.rsplit("-", 1)[0], when, keys))
    items.sort(key=lambda i: (i.collection, i.item_id))
    return WorldPlan(config, seed, tuple(grids), optical, radar, tuple(items))
