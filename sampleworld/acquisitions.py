"""Which satellite saw which scene when: the optical and radar acquisition calendars.

Sentinel-2 flies a descending orbit at about 10:30 local solar time. Each region has two relative
orbits: dates on orbit ``A`` cover everything, dates on orbit ``B`` end at a swath edge (a line heading
12 deg east of north through the region's ``s2_edge`` point): pixels west of it are nodata, and a scene
entirely west of it gets no item at all. No optical acquisition is made with the sun more than
``max_solar_zenith_deg`` from the zenith (northern winter). Sentinel-1A passes at about 06:00
(descending, looking west) or 18:00 (ascending, looking east) local solar time; passes listed in a
region's ``s1_missing`` did not happen there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from sampleworld.config import S2_OFFSET_DATE, OpticalDate, RadarPass, RegionConfig, WorldConfig
from sampleworld.geometry import SceneGrid, region_xy
from sampleworld.keys import unit_hash
from sampleworld.sun import solar_position

SWATH_HEADING_DEG = 12.0
"""Azimuth of the swath edge line (the ground track of a descending pass runs 192 deg)."""

S1_REF_TIME = datetime(2024, 4, 19, 4, 59, 10, tzinfo=UTC)
S1_REF_ABS_ORBIT = 53498
S1_ORBIT_DAYS = 12.0 / 175.0


@dataclass(frozen=True)
class OpticalAcquisition:
    """One Sentinel-2 acquisition of one scene (shared by its L1C and L2A items)."""

    scene: str
    index: int
    day: date
    when: datetime
    platform: str
    orbit: str
    relative_orbit: int
    processing_baseline: str
    offset_dn: int
    sun_zenith_deg: float
    sun_azimuth_deg: float
    cloud: float
    aot550: float
    edge: tuple[float, float] | None

    def item_id(self, level: str) -> str:
        """``S2B_MSIL2A_20220621T102021_R108_main`` style id (``level`` is "L2A" or "L1C")."""
        sat = "S2A" if self.platform.endswith("A") else "S2B"
        return f"{sat}_MSI{level}_{self.when:%Y%m%dT%H%M%S}_R{self.relative_orbit:03d}_{self.scene}"


@dataclass(frozen=True)
class RadarAcquisition:
    """One Sentinel-1 RTC acquisition of one scene."""

    scene: str
    index: int
    day: date
    when: datetime
    orbit_state: str
    relative_orbit: int
    absolute_orbit: int
    incidence_deg: float
    look_azimuth_deg: float
    wind: float
    soil_moisture: float

    def item_id(self) -> str:
        return f"S1A_IW_GRDH_1SDV_{self.when:%Y%m%dT%H%M%S}_{self.scene}_rtc"


def edge_signed_distance(region: RegionConfig, edge: tuple[float, float], lon: np.ndarray, lat: np.ndarray
                         ) -> np.ndarray:
    """Signed distance (metres) of points from a swath edge line: negative west of it (nodata side)."""
    px, py = region_xy(region, np.asarray(edge[1]), np.asarray(edge[0]))
    x, y = region_xy(region, lon, lat)
    a = math.radians(SWATH_HEADING_DEG)
    return (x - px) * math.cos(a) - (y - py) * math.sin(a)


def _local_solar_utc(day: date, local_hour: float, lon: float) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=local_hour - lon / 15.0)


def processing_baseline(day: date) -> str:
    """Sentinel-2 processing baseline of an acquisition day ("03.01" before 25 Jan 2022, else "04.00")."""
    return "04.00" if day >= S2_OFFSET_DATE else "03.01"


def optical_acquisitions(config: WorldConfig, scene: SceneGrid) -> list[OpticalAcquisition]:
    """The Sentinel-2 acquisitions of a scene, in date order (dates outside the swath or sun dropped)."""
    region = config.region(scene.region)
    lon_c, lat_c = scene.centre_lonlat()
    ring = np.asarray(scene.footprint_lonlat(4))
    out = []
    for index, od in enumerate(config.optical_dates):
        edge = region.s2_edge if od.orbit == "B" else None
        if edge is not None:
            dist = edge_signed_distance(region, edge, ring[:, 0], ring[:, 1])
            if np.all(dist < 0):
                continue
            if np.all(dist >= 0):
                edge = None
        along_track_s = (region.anchor_lat - lat_c) * 111.2 / 7.0
        when = _local_solar_utc(od.day, 10.5, region.anchor_lon) + timedelta(seconds=round(along_track_s))
        when = when.replace(microsecond=0)
        zen, az = solar_position(when, lat_c, lon_c)
        if zen > config.max_solar_zenith_deg:
            continue
        baseline = processing_baseline(od.day)
        out.append(OpticalAcquisition(
            scene=scene.name, index=index, day=od.day, when=when, platform=_s2_platform(od),
            orbit=od.orbit, relative_orbit=region.s2_orbits[0 if od.orbit == "A" else 1],
            processing_baseline=baseline, offset_dn=1000 if baseline >= "04.00" else 0,
            sun_zenith_deg=zen, sun_azimuth_deg=az, cloud=od.cloud, aot550=od.aot550, edge=edge,
        ))
    return out


def _s2_platform(od: OpticalDate) -> str:
    return "Sentinel-2A" if (od.day.toordinal() // 5) % 2 == 0 else "Sentinel-2B"


def _s1_absolute_orbit(when: datetime, relative: int) -> int:
    est = S1_REF_ABS_ORBIT + round((when - S1_REF_TIME).total_seconds() / 86400.0 / S1_ORBIT_DAYS)
    best = est
    for cand in range(est - 88, est + 89):
        if (cand - 73) % 175 + 1 == relative:
            best = cand
            break
    return best


def radar_acquisitions(config: WorldConfig, scene: SceneGrid, seed: int) -> list[RadarAcquisition]:
    """The Sentinel-1 acquisitions of a scene, in date order (missing passes dropped)."""
    region = config.region(scene.region)
    lon_c, lat_c = scene.centre_lonlat()
    out = []
    for index, rp in enumerate(config.radar_passes):
        if index in region.s1_missing:
            continue
        out.append(_radar(region, scene.name, index, rp, lon_c, lat_c, seed))
    return out


def _radar(region: RegionConfig, scene: str, index: int, rp: RadarPass, lon_c: float, lat_c: float,
           seed: int) -> RadarAcquisition:
    ascending = rp.orbit_state == "ascending"
    relative = region.s1_orbits[0 if ascending else 1]
    when = _local_solar_utc(rp.day, 18.0 if ascending else 6.0, region.anchor_lon)
    when += timedelta(seconds=round((lat_c - region.anchor_lat) * (1 if ascending else -1) * 111.2 / 7.0))
    when = when.replace(microsecond=0)
    base = 31.0 + 12.0 * unit_hash(seed, region.name, "s1-incidence", relative)
    across_km = (lon_c - region.anchor_lon) * 111.2 * math.cos(math.radians(lat_c))
    incidence = base + (across_km if ascending else -across_km) / 16.7
    heading = -12.0 if ascending else 192.0
    return RadarAcquisition(
        scene=scene, index=index, day=rp.day, when=when, orbit_state=rp.orbit_state,
        relative_orbit=relative, absolute_orbit=_s1_absolute_orbit(when, relative),
        incidence_deg=float(np.clip(incidence, 29.0, 46.0)), look_azimuth_deg=(heading + 90.0) % 360.0,
        wind=rp.wind, soil_moisture=rp.soil_moisture,
    )
