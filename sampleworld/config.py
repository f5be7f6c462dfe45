"""The sample world's configuration: landscape styles, regions, scenes and acquisition calendars.

Config is data: one validated pydantic schema, two presets (``default`` and ``small``), and a hash of
the resolved config (plus seed and generator version) that decides whether an existing world on disk
can be reused. Every physical constant that shapes the output lives here, so changing it changes the
hash.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

GENERATOR_VERSION = "1.1.0"  # 1.1: scene origins on the 1920 m window lattice
"""Bumped whenever the generator's output changes for the same config and seed."""

GRID_NEST_M = 60
"""Every scene origin is a multiple of this many metres, so the 10/20/60 m grids nest exactly."""
WINDOW_LATTICE_M = 1920
"""Scene origins sit on copgen's window lattice (``transforms.windows``: x0 = col * 1920 m, y_top = row * 1920 m)."""

S2_OFFSET_BASELINE = "04.00"
"""Processing baselines at or above this add a +1000 DN offset to every valid S2 pixel."""

S2_OFFSET_DATE = date(2022, 1, 25)
"""First acquisition date processed with baseline 04.00 (ESA switched on 25 January 2022)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LandscapeStyle(_Frozen):
    """Physical parameters of one kind of landscape (all heights in metres above sea level)."""

    floor_m: float = Field(description="mean valley-floor elevation")
    floor_var_m: float = Field(description="amplitude of the valley floor's slow variation")
    relief_m: float = Field(description="height of the mountains above the valley floor")
    relief_cap_m: float = Field(description="soft ceiling of the height above the floor (tanh compression)")
    mountain_wavelength_m: float = Field(description="wavelength of the coarsest relief octave")
    ridged: float = Field(ge=0, le=1, description="share of ridged (sharp-crested) relief")
    valley_wavelength_m: float = Field(description="wavelength of the valley network")
    valley_floor_m: float = Field(description="half-width of flat valley floors")
    valley_wall_m: float = Field(description="distance from the river at which slopes reach full height")
    river_halfwidth_m: float
    lake_threshold: float = Field(description="lake noise above this (in valleys) becomes a lake")
    sea: bool = Field(description="land below 0 m is sea (fjords)")
    snowline_summer_m: float = Field(description="permanent snow and ice above this")
    snowline_winter_m: float = Field(description="seasonal snow line in late January")
    treeline_m: float
    rockline_m: float = Field(description="bare rock and scree above this")
    forest_threshold: float = Field(description="forest noise above this is forest (lower: more forest)")
    conifer_from_m: float = Field(description="conifers dominate above this elevation")
    arable_max_slope_deg: float
    arable_max_m: float = Field(description="no fields above this elevation")
    crop_fraction: float = Field(ge=0, le=1, description="share of arable parcels that are cropped")
    woodlot_fraction: float = Field(ge=0, le=1, description="share of arable parcels left as woodlots")
    parcel_angle_deg: float
    town_spacing_m: float
    town_probability: float = Field(ge=0, le=1)
    town_radius_m: tuple[float, float]
    phenology_shift_days: float = Field(description="later green-up at higher latitudes")
    bare_is_rock: bool = Field(description="bare ground is rock/scree (else bare soil)")
    cloud_top_m: float = Field(description="mean height of cloud tops above sea level")


STYLES: dict[str, LandscapeStyle] = {
    "alpine": LandscapeStyle(
        floor_m=420.0, floor_var_m=140.0, relief_m=4200.0, relief_cap_m=3000.0, mountain_wavelength_m=9000.0, ridged=0.6,
        valley_wavelength_m=11000.0, valley_floor_m=220.0, valley_wall_m=1500.0, river_halfwidth_m=14.0,
        lake_threshold=0.26, sea=False, snowline_summer_m=2200.0, snowline_winter_m=850.0,
        treeline_m=1750.0, rockline_m=1950.0, forest_threshold=-0.05, conifer_from_m=950.0,
        arable_max_slope_deg=7.0, arable_max_m=1100.0, crop_fraction=0.55, woodlot_fraction=0.05,
        parcel_angle_deg=23.0, town_spacing_m=2600.0, town_probability=0.75,
        town_radius_m=(150.0, 480.0), phenology_shift_days=0.0, bare_is_rock=True, cloud_top_m=3600.0,
    ),
    "farmland": LandscapeStyle(
        floor_m=205.0, floor_var_m=40.0, relief_m=260.0, relief_cap_m=400.0, mountain_wavelength_m=9000.0, ridged=0.0,
        valley_wavelength_m=9000.0, valley_floor_m=300.0, valley_wall_m=1400.0, river_halfwidth_m=11.0,
        lake_threshold=0.30, sea=False, snowline_summer_m=4500.0, snowline_winter_m=650.0,
        treeline_m=2500.0, rockline_m=3000.0, forest_threshold=0.12, conifer_from_m=700.0,
        arable_max_slope_deg=9.0, arable_max_m=700.0, crop_fraction=0.78, woodlot_fraction=0.06,
        parcel_angle_deg=-12.0, town_spacing_m=2200.0, town_probability=0.6,
        town_radius_m=(120.0, 420.0), phenology_shift_days=0.0, bare_is_rock=False, cloud_top_m=2600.0,
    ),
    "fjord": LandscapeStyle(
        floor_m=-25.0, floor_var_m=110.0, relief_m=1450.0, relief_cap_m=1500.0, mountain_wavelength_m=9000.0, ridged=0.45,
        valley_wavelength_m=8000.0, valley_floor_m=300.0, valley_wall_m=1300.0, river_halfwidth_m=10.0,
        lake_threshold=0.22, sea=True, snowline_summer_m=1350.0, snowline_winter_m=180.0,
        treeline_m=620.0, rockline_m=900.0, forest_threshold=-0.08, conifer_from_m=0.0,
        arable_max_slope_deg=6.0, arable_max_m=200.0, crop_fraction=0.35, woodlot_fraction=0.05,
        parcel_angle_deg=40.0, town_spacing_m=2400.0, town_probability=0.55,
        town_radius_m=(120.0, 380.0), phenology_shift_days=24.0, bare_is_rock=True, cloud_top_m=2200.0,
    ),
}
"""The landscape styles a region can use."""


class RegionConfig(_Frozen):
    """A connected landscape with its own local metric frame and orbits.

    Fields are continuous inside a region (x east and y north in metres from the anchor, an
    equirectangular frame), so its scenes agree where they meet.
    """

    name: str
    style: Literal["alpine", "farmland", "fjord"]
    anchor_lat: float = Field(ge=-80, le=84)
    anchor_lon: float = Field(ge=-180, le=180)
    s2_orbits: tuple[int, int] = Field(description="relative orbits 'A' (full cover) and 'B' (swath edge)")
    s2_edge: tuple[float, float] | None = Field(
        default=None, description="(lat, lon) of a point on orbit B's western swath edge; west of it is nodata"
    )
    s1_orbits: tuple[int, int] = Field(description="relative orbits (ascending, descending)")
    s1_missing: tuple[int, ...] = Field(default=(), description="indices of radar passes missing over this region")


class SceneConfig(_Frozen):
    """One rectangular scene on a 10 m UTM grid.

    A ``cell`` scene is centred on the Major TOM cell holding ``(lat, lon)`` and named after it; the
    ``main`` scene is centred on ``(lat, lon)`` itself. Both take the UTM zone of the cell holding
    their centre.
    """

    name: str = Field(description="'main', or empty to use the Major TOM cell's name")
    kind: Literal["main", "cell"]
    region: str
    lat: float = Field(ge=-80, le=84)
    lon: float = Field(ge=-180, le=180)
    size_m: int = Field(description="side in metres, a multiple of 60")

    @model_validator(mode="after")
    def _check(self) -> SceneConfig:
        if self.size_m % GRID_NEST_M != 0 or self.size_m <= 0:
            raise ValueError(f"scene size_m {self.size_m} must be a positive multiple of {GRID_NEST_M} m so "
                             "the 10/20/60 m grids nest; e.g. 3840 or 7680")
        if self.kind == "main" and self.name != "main":
            raise ValueError(f"the main scene must be named 'main', got {self.name!r}")
        return self


class OpticalDate(_Frozen):
    """One Sentinel-2 acquisition day (L1C and L2A share it)."""

    day: date
    orbit: Literal["A", "B"]
    cloud: float = Field(ge=0, le=1, description="target share of thick and thin cloud")
    aot550: float = Field(ge=0, le=2, description="mean aerosol optical thickness at 550 nm")


class RadarPass(_Frozen):
    """One Sentinel-1 pass slot (missing over the regions that list its index in ``s1_missing``)."""

    day: date
    orbit_state: Literal["ascending", "descending"]
    wind: float = Field(ge=0, le=1, description="water-surface roughness (0 calm, 1 windy)")
    soil_moisture: float = Field(ge=0, le=1)


class CogConfig(_Frozen):
    """How every raster is written (GDAL COG driver)."""

    blocksize: int = 256
    compress: Literal["ZSTD", "DEFLATE"] = "ZSTD"
    level: int = 9
    s1_mantissa_bits: int = Field(default=10, ge=8, le=23, description="float32 S1 mantissa bits kept (compression)")


class WorldConfig(_Frozen):
    """Everything that defines a sample world apart from the seed."""

    preset: str
    regions: tuple[RegionConfig, ...]
    scenes: tuple[SceneConfig, ...]
    optical_dates: tuple[OpticalDate, ...]
    radar_passes: tuple[RadarPass, ...]
    lulc_year: int
    dem_date: date = date(2021, 4, 22)
    max_solar_zenith_deg: float = Field(default=80.0, description="no optical acquisition with a lower sun")
    cog: CogConfig = CogConfig()
    styles: dict[str, LandscapeStyle] = Field(default_factory=lambda: dict(STYLES))

    @model_validator(mode="after")
    def _check(self) -> WorldConfig:
        names = [r.name for r in self.regions]
        if len(set(names)) != len(names):
            raise ValueError(f"region names must be unique, got {names}")
        for s in self.scenes:
            if s.region not in names:
                raise ValueError(f"scene {s.name or (s.lat, s.lon)} names unknown region {s.region!r}; "
                                 f"known regions: {names}")
        if sum(s.kind == "main" for s in self.scenes) != 1:
            raise ValueError("exactly one scene must have kind 'main'")
        for r in self.regions:
            bad = [i for i in r.s1_missing if not 0 <= i < len(self.radar_passes)]
            if bad:
                raise ValueError(f"region {r.name}: s1_missing indices {bad} are outside the "
                                 f"{len(self.radar_passes)} radar passes")
        return self

    def region(self, name: str) -> RegionConfig:
        """The region called ``name`` (KeyError with the known names otherwise)."""
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(f"unknown region {name!r}; known: {[r.name for r in self.regions]}")

    def style_of(self, region: str) -> LandscapeStyle:
        return self.styles[self.region(region).style]


def _regions() -> tuple[RegionConfig, ...]:
    return (
        RegionConfig(name="alps", style="alpine", anchor_lat=46.1, anchor_lon=6.5, s2_orbits=(108, 8),
                     s2_edge=(46.078, 6.005), s1_orbits=(88, 139), s1_missing=(2, 6)),
        RegionConfig(name="jura", style="farmland", anchor_lat=47.1, anchor_lon=5.5, s2_orbits=(108, 51),
                     s2_edge=None, s1_orbits=(88, 37), s1_missing=(4,)),
        RegionConfig(name="vestland", style="fjord", anchor_lat=60.7, anchor_lon=6.3, s2_orbits=(37, 94),
                     s2_edge=(60.40, 5.35), s1_orbits=(15, 168), s1_missing=(1, 7)),
    )


def _default() -> WorldConfig:
    cell = 3840
    scenes = (
        SceneConfig(name="main", kind="main", region="alps", lat=46.078, lon=6.04, size_m=7680),
        SceneConfig(name="", kind="cell", region="alps", lat=45.95, lon=5.75, size_m=cell),
        SceneConfig(name="", kind="cell", region="alps", lat=46.35, lon=6.45, size_m=cell),
        SceneConfig(name="", kind="cell", region="alps", lat=45.85, lon=6.85, size_m=cell),
        SceneConfig(name="", kind="cell", region="alps", lat=46.60, lon=7.90, size_m=cell),
        SceneConfig(name="", kind="cell", region="jura", lat=47.05, lon=5.35, size_m=cell),
        SceneConfig(name="", kind="cell", region="jura", lat=47.25, lon=5.80, size_m=cell),
        SceneConfig(name="", kind="cell", region="vestland", lat=60.40, lon=5.30, size_m=cell),
        SceneConfig(name="", kind="cell", region="vestland", lat=60.90, lon=7.40, size_m=cell),
    )
    d = date
    optical = (
        OpticalDate(day=d(2021, 10, 14), orbit="A", cloud=0.08, aot550=0.12),
        OpticalDate(day=d(2021, 12, 13), orbit="B", cloud=0.20, aot550=0.06),
        OpticalDate(day=d(2022, 3, 13), orbit="A", cloud=0.05, aot550=0.15),
        OpticalDate(day=d(2022, 5, 17), orbit="B", cloud=0.25, aot550=0.20),
        OpticalDate(day=d(2022, 6, 21), orbit="A", cloud=0.02, aot550=0.18),
        OpticalDate(day=d(2022, 7, 26), orbit="A", cloud=0.12, aot550=0.25),
        OpticalDate(day=d(2022, 9, 4), orbit="B", cloud=0.06, aot550=0.14),
    )
    radar = (
        RadarPass(day=d(2021, 10, 9), orbit_state="descending", wind=0.3, soil_moisture=0.5),
        RadarPass(day=d(2021, 11, 20), orbit_state="ascending", wind=0.7, soil_moisture=0.8),
        RadarPass(day=d(2022, 1, 7), orbit_state="descending", wind=0.2, soil_moisture=0.7),
        RadarPass(day=d(2022, 2, 24), orbit_state="ascending", wind=0.5, soil_moisture=0.6),
        RadarPass(day=d(2022, 4, 13), orbit_state="descending", wind=0.4, soil_moisture=0.6),
        RadarPass(day=d(2022, 5, 31), orbit_state="ascending", wind=0.1, soil_moisture=0.4),
        RadarPass(day=d(2022, 7, 18), orbit_state="descending", wind=0.3, soil_moisture=0.2),
        RadarPass(day=d(2022, 9, 4), orbit_state="ascending", wind=0.6, soil_moisture=0.3),
    )
    return WorldConfig(preset="default", regions=_regions(), scenes=scenes, optical_dates=optical,
                       radar_passes=radar, lulc_year=2022)


def _small() -> WorldConfig:
    scenes = (
        SceneConfig(name="main", kind="main", region="alps", lat=46.078, lon=6.02, size_m=3840),
        SceneConfig(name="", kind="cell", region="jura", lat=47.05, lon=5.35, size_m=1920),
        SceneConfig(name="", kind="cell", region="vestland", lat=60.40, lon=5.30, size_m=1920),
    )
    d = date
    optical = (
        OpticalDate(day=d(2021, 10, 14), orbit="A", cloud=0.10, aot550=0.12),
        OpticalDate(day=d(2022, 6, 21), orbit="A", cloud=0.02, aot550=0.18),
        OpticalDate(day=d(2022, 7, 26), orbit="B", cloud=0.30, aot550=0.25),
    )
    radar = (
        RadarPass(day=d(2021, 10, 9), orbit_state="descending", wind=0.3, soil_moisture=0.5),
        RadarPass(day=d(2022, 1, 7), orbit_state="descending", wind=0.2, soil_moisture=0.7),
        RadarPass(day=d(2022, 6, 18), orbit_state="ascending", wind=0.1, soil_moisture=0.4),
    )
    regions = tuple(r.model_copy(update={"s1_missing": (1,) if r.name == "alps" else ()}) for r in _regions())
    return WorldConfig(preset="small", regions=regions, scenes=scenes, optical_dates=optical,
                       radar_passes=radar, lulc_year=2022)


PRESETS = {"default": _default, "small": _small}
"""Preset name -> builder of its :class:`WorldConfig`."""


def preset_config(preset: str) -> WorldConfig:
    """The :class:`WorldConfig` of a preset.

    Raises
    ------
    ValueError
        For an unknown preset; the message lists the valid names.
    """
    try:
        return PRESETS[preset]()
    except KeyError:
        raise ValueError(f"unknown sample-world preset {preset!r}; use one of {sorted(PRESETS)}") from None


def config_hash(config: WorldConfig, seed: int, extra: dict[str, object] | None = None) -> str:
    """SHA-256 (hex, first 16 chars) of the resolved config, the seed, the generator version and ``extra``.

    ``extra`` holds inputs outside the config that change the output (e.g. the TerraMesh folder).
    """
    payload = {
        "config": config.model_dump(mode="json"),
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        "extra": extra or {},
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
