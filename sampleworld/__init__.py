"""The embedded sample world: a deterministic, seeded, physically coherent Copernicus region.

Terrain, land cover, Sentinel-2 L1C/L2A, Sentinel-1 RTC, a Copernicus-DEM-like elevation model and
Esri-like land cover over a dozen Major TOM cells in several UTM zones, written as COGs with a STAC
catalog in the Planetary Computer's conventions, so the whole system runs and is tested offline.
See ``docs/sample-world.md``.

Public API: :func:`generate_world`, :func:`load_manifest`, :func:`plan_world`, :class:`WorldManifest`.
"""

from __future__ import annotations

from sampleworld.manifest import WorldManifest, load_manifest
from sampleworld.plan import WorldPlan, plan_world
from sampleworld.world import default_terramesh_dir, generate_world

__all__ = ["WorldManifest", "WorldPlan", "default_terramesh_dir", "generate_world", "load_manifest", "plan_world"]
