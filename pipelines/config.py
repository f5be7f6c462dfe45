"""Job configuration: one validated schema (pydantic), loaded from YAML and overridden by CLI flags.

The resolved config is printed back into every run's report and the cube's provenance.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from copgen_core.modalities import resolve


def _resolve_all(names: list[str]) -> list[str]:
    out = []
    for n in names:
        try:
            out.append(resolve(n).key)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
    return out


class ConfigError(ValueError):
    """The job config is invalid; the message lists every problem with its field path."""


class SelectionConfig(BaseModel):
    """Per-collection acquisition rules (see ``transforms.select.SelectionRule``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_days: float = Field(30.0, gt=0, description="largest distance from the target date, days")
    prefer: Literal["nearest", "least_cloud"] = "nearest"
    max_cloud: float | None = Field(None, ge=0, le=100, description="drop items with more cloud cover (%)")


def _check_bbox(v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    w, s, e, n = v
    if not (-180 <= w < e <= 180 and -85 <= s < n <= 85):
        raise ValueError(f"bbox {list(v)} must be west<east in [-180,180] and south<north in [-85,85] (degrees)")
    if (e - w) * (n - s) > 400:
        raise ValueError(f"bbox {list(v)} covers more than 400 square degrees; split the job by region")
    return v


class JobConfig(BaseModel):
    """Common fields of every copgen job.

    Attributes
    ----------
    stac_url:
        STAC API root, e.g. ``http://127.0.0.1:8081``.
    bbox:
        (west, south, east, north) in degrees (WGS84).
    start, end:
        Period of interest (inclusive dates, UTC). ``generate`` uses ``start`` as the target date when
        ``end`` is not given.
    output:
        Cube URL: a local path or any fsspec URL (``gs://bucket/cube.zarr``).
    """

    model_config = ConfigDict(extra="forbid")

    stac_url: str = Field(..., description="STAC API root URL")
    bbox: tuple[float, float, float, float] = Field(..., description="west, south, east, north in degrees")
    start: date = Field(..., description="first date of the period (UTC)")
    end: date | None = Field(None, description="last date of the period (UTC); defaults to start")
    output: str = Field("out/cube.zarr", description="cube URL: local path, gs://..., memory://...")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for output")
    regions: list[tuple[float, float, float, float]] = Field(
        default_factory=list, description="more (west, south, east, north) boxes; the job covers the union")
    overlap_m: float = Field(0.0, ge=0, lt=1920, description="window overlap in metres (multiple of 60 m stride)")
    engine: Literal["local", "beam", "dask"] = "local"
    scheduler: str | None = Field(None, description="Dask scheduler address; default: a local cluster")
    workers: int = Field(2, ge=1, le=256, description="worker processes for local Beam/Dask runs")
    retries: int = Field(3, ge=0, le=10, description="retries of transient catalog/read errors")
    selection: dict[str, SelectionConfig] = Field(default_factory=dict, description="rules per collection id")
    report: str | None = Field(None, description="run report JSON path; default: <output>.report.json")

    @field_validator("bbox")
    @classmethod
    def _bbox_ok(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        return _check_bbox(v)

    @field_validator("regions")
    @classmethod
    def _regions_ok(cls, v: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
        return [_check_bbox(b) for b in v]

    @property
    def bboxes(self) -> list[tuple[float, float, float, float]]:
        """``bbox`` and every extra region."""
        return [self.bbox, *self.regions]

    @model_validator(mode="after")
    def _period_ok(self) -> JobConfig:
        if self.end is not None and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    @property
    def period(self) -> tuple[datetime, datetime]:
        """(start 00:00, end 23:59:59.999999) in UTC."""
        end = self.end or self.start
        return (
            datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC),
            datetime(end.year, end.month, end.day, 23, 59, 59, 999999, tzinfo=UTC),
        )


class GenerateConfig(JobConfig):
    """``copgen generate``: ensembles of target modalities from condition modalities."""

    conditions: list[str] = Field(default_factory=lambda: ["DEM_DEM", "LULC_LULC", "3d_cartesian_lat_lon",
                                                            "mean_timestamps"],
                                  description="modalities read from the catalog and fixed at t=0 (may be empty)")
    targets: list[str] = Field(default_factory=lambda: ["S2L2A_B02_B03_B04_B08"],
                               description="modalities to generate")
    members: int = Field(4, ge=1, le=1024, description="ensemble members per window")
    steps: int = Field(50, ge=1, le=1000, description="solver steps (NFE)")
    guidance: float = Field(1.0, ge=0.0, le=20.0, description="classifier-free guidance weight on the conditions "
                            "(1 = none, the official sampler; 2 = twice the conditions' pull, twice the backbone calls)")
    seed: int = Field(0, ge=0, description="run seed; noise of (window, member) derives from it")
    model: str = Field("bundled", description="'bundled', a converted checkpoint dir, or an official .pth")
    batch_size: int = Field(8, ge=1, le=4096, description="samples per model call")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$",
                        description="'cpu' or 'cuda[:N]'; on Dask, cuda tasks request the worker resource GPU=1")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast dtype of the backbone (GPU)")

    @field_validator("conditions", "targets")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _resolve_all(v)

    @model_validator(mode="after")
    def _disjoint(self) -> GenerateConfig:
        both = set(self.conditions) & set(self.targets)
        if both:
            raise ValueError(f"modalities {sorted(both)} are both conditions and targets; pick one role")
        if not self.targets:
            raise ValueError("targets is empty: name at least one modality to generate")
        return self


class PreprocessConfig(JobConfig):
    """``copgen preprocess``: aligned real tiles (and optional VAE latents) for training or analysis."""

    modalities: list[str] = Field(default_factory=lambda: ["S2L2A_B02_B03_B04_B08", "DEM_DEM", "LULC_LULC"])
    latents: str | None = Field(None, description="a model bundle (or 'random:tiny'): also encode every complete "
                                "sample with its VAEs into <output>.latents.safetensors (posterior moments)")

    @field_validator("modalities")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return _resolve_all(v)


def load_config(cls: type[BaseModel], path: Path | None, overrides: dict[str, Any]) -> Any:
    """Load ``path`` (YAML) into ``cls``, apply non-None ``overrides`` (CLI flags), validate.

    Raises
    ------
    ConfigError
        With one line per problem (``field: message``), for missing files, bad YAML or invalid values.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of fields, got {type(loaded).__name__}")
        data.update(loaded or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid job config:\n" + "\n".join(lines)) from exc


def _today_or_date(value: Any) -> Any:
    """``"today"`` -> today's UTC date (for scheduled runs); anything else unchanged."""
    if isinstance(value, str) and value.strip().lower() == "today":
        return datetime.now(UTC).date()
    return value


class GapfillConfig(JobConfig):
    """``copgen gapfill``: fill the clouds, shadows and no-data of every S2 L2A acquisition of a period.

    One cube per acquisition under ``output`` (a folder), plus ``output/_runs/state.json``. ``end``
    accepts ``today`` so that a scheduled job can keep one config; ``since: last`` processes only
    acquisitions that are new or whose item changed since the last run.
    """

    output: str = Field("out/gapfill", description="output folder: one <item id>.zarr cube per acquisition")
    conditions: list[str] = Field(
        default_factory=lambda: ["S1RTC_vh_vv", "DEM_DEM", "LULC_LULC", "S2L1C_B01_B09_B10", "S2L1C_B02_B03_B04_B08",
                                 "S2L1C_B05_B06_B07_B11_B12_B8A", "S2L1C_cloud_mask", "3d_cartesian_lat_lon",
                                 "mean_timestamps"],
        description="modalities that condition a window when available and complete (besides complete L2A groups)")
    members: int = Field(4, ge=1, le=1024, description="ensemble members per window")
    steps: int = Field(50, ge=1, le=1000, description="solver steps (NFE)")
    seed: int = Field(0, ge=0, description="run seed; the noise of (window, acquisition, member) derives from it")
    model: str = Field("bundled", description="'bundled', a bundle directory, a converted checkpoint or 'random:tiny'")
    batch_size: int = Field(8, ge=1, le=4096, description="windows per batch and model call")
    since: Literal["last"] | None = Field(None, description="'last': only acquisitions new or updated since the "
                                                            "last run (read from <output>/_runs/state.json)")
    dilate_px: int = Field(0, ge=0, le=64, description="grow the SCL cloud mask by this many 10 m pixels")
    resample: int = Field(1, ge=1, le=20, description="RePaint resampling (1 = off; NFE grows with it)")
    prior_dates: int = Field(2, ge=0, le=16, description="other acquisitions of the period whose clear pixels "
                             "form the temporal prior of a window (nearest in time first; 0 = no prior)")
    prior_days: float = Field(120.0, ge=0.0, le=3660.0, description="the prior's acquisitions may lie this many "
                              "days outside [start, end] (they are read, not gap-filled)")
    prior_start: float = Field(0.1, gt=0.0, le=1.0, description="continuous time at which sampling starts from "
                               "the prior (1 = ignore it)")

    @model_validator(mode="after")
    def _prior_or_resample(self) -> GapfillConfig:
        if self.resample > 1 and self.prior_dates > 0 and self.prior_start < 1.0:
            raise ValueError("resample > 1 (RePaint resampling) and a temporal prior (prior_dates > 0, prior_start < 1) "
                             "do not combine; set prior_dates: 0 or resample: 1")
        return self

    @field_validator("end", mode="before")
    @classmethod
    def _end_today(cls, v: Any) -> Any:
        return _today_or_date(v)

    @field_validator("conditions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        keys = _resolve_all(v)
        l2a = [k for k in keys if k.startswith("S2L2A_")]
        if l2a:
            raise ValueError(f"{l2a} are the gap-filled modalities; leave them out of conditions (complete L2A "
                             "groups condition the others automatically)")
        return keys


class SeamlessConfig(GenerateConfig):
    """``copgen seamless``: large-area ensembles without seams, in four waves of overlapping windows.

    ``mode: waves`` (default) inpaints each window around the pixels its earlier-wave neighbours already
    wrote; ``mode: independent`` generates every window on its own and only feathers the overlaps (the
    baseline). The overlap must leave a gap between windows of one wave: 0 < overlap_m < 960.
    """

    output: str = Field("out/seamless.zarr", description="canvas URL: a local path or gs://bucket/path.zarr")
    overlap_m: float = Field(480.0, gt=0, lt=960, description="window overlap in metres (stride = 1920 - overlap)")
    mode: Literal["waves", "independent"] = Field("waves", description="'waves' (seamless) or 'independent' "
                                                                        "(baseline: feathered blending only)")
    feather_m: float = Field(120.0, ge=0, le=480, description="width of the blend band inside the known pixels, m")
    resample: int = Field(1, ge=1, le=20, description="RePaint resampling (1 = off)")

    @field_validator("targets")
    @classmethod
    def _continuous(cls, v: list[str]) -> list[str]:
        from copgen_core.modalities import BY_KEY, Kind

        keys = _resolve_all(v)
        bad = [k for k in keys if BY_KEY[k].kind not in (Kind.S2, Kind.S1, Kind.DEM)]
        if bad:
            raise ValueError(f"{bad} cannot be blended across windows; seamless targets must be S2, S1 or DEM images")
        return keys
