"""``<out>/manifest.json``: what a generated world holds and how it was made."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class WorldManifest:
    """Provenance and inventory of a generated world.

    Attributes
    ----------
    generator_version, preset, seed, config_hash:
        What produced it; ``config_hash`` covers the config, seed, version and TerraMesh input.
    out_dir:
        Absolute world folder (asset hrefs are absolute ``file://`` URLs into it).
    n_items, n_assets:
        Totals over all collections.
    item_counts, asset_counts:
        Per collection.
    bytes_assets, bytes_total:
        Size of the COGs, and of everything written (COGs, STAC files, manifest excluded).
    elapsed_s:
        Wall time of the run that wrote the world, seconds (a reused world keeps it).
    cells:
        Sorted Major TOM cells with synthetic data.
    zones, epsg_codes:
        UTM zones of those cells and EPSG codes of the scene grids.
    main_area:
        The contiguous main scene: ``name``, ``epsg``, ``proj_bbox`` [left, bottom, right, top] (m),
        ``bbox`` [west, south, east, north] (deg), ``shape_10m``, ``transform_10m``, ``size_m``, ``cells``.
    scenes:
        One entry per scene, same keys as ``main_area`` plus ``kind`` and ``region``.
    dates:
        Collection -> sorted acquisition days of its synthetic items.
    terramesh:
        ``{"dir": ..., "locations": [...]}`` when TerraMesh items were registered, else None.
    stac:
        Relative paths of the collection and item folders.
    """

    generator_version: str
    preset: str
    seed: int
    config_hash: str
    out_dir: str
    n_items: int
    n_assets: int
    item_counts: dict[str, int]
    asset_counts: dict[str, int]
    bytes_assets: int
    bytes_total: int
    elapsed_s: float
    cells: list[str]
    zones: list[int]
    epsg_codes: list[int]
    main_area: dict[str, Any]
    scenes: list[dict[str, Any]]
    dates: dict[str, list[str]]
    terramesh: dict[str, Any] | None
    stac: dict[str, str] = field(default_factory=lambda: {"collections": "stac/collections",
                                                          "items": "stac/items"})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldManifest:
        return cls(**d)

    def summary(self) -> str:
        """One paragraph for humans: where, what, how big."""
        counts = ", ".join(f"{k} {v}" for k, v in self.item_counts.items())
        return (f"world at {self.out_dir}: preset {self.preset}, seed {self.seed}, {self.n_items} items "
                f"({counts}), {self.n_assets} COGs, {self.bytes_total / 1e6:.1f} MB, "
                f"{len(self.cells)} cells in UTM zones {self.zones}, generated in {self.elapsed_s:.1f} s")


def load_manifest(out_dir: Path) -> WorldManifest:
    """Read ``<out_dir>/manifest.json``.

    Raises
    ------
    FileNotFoundError
        If there is no manifest (the world was never generated there, or generation did not finish);
        run ``copgen world --out DIR`` or :func:`sampleworld.generate_world`.
    ValueError
        If the manifest does not match this generator's schema (regenerate with ``--force``).
    """
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no sample world at {Path(out_dir)} ({path} is missing); generate it with "
                                f"`copgen world --out {out_dir}` or sampleworld.generate_world()")
    try:
        return WorldManifest.from_dict(json.loads(path.read_text()))
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a manifest of this generator ({exc}); regenerate with --force") from exc
