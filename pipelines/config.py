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
        w, s, e, n = v
        if not (-180 <= w < e <= 180 and -85 <= s < n <= 85):
            raise ValueError(f"bbox {list(v)} must be west<east in [-180,180] and south<north in [-85,85] (degrees)")
        if (e - w) * (n - s) > 400:
            raise ValueError(f"bbox {list(v)} covers more than 400 square degrees; split the job by region")
        return v

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
    seed: int = Field(0, ge=0, description="run seed; noise of (window, member) derives from it")
    model: str = Field("bundled", description="'bundled', a converted checkpoint dir, or an official .pth")
    batch_size: int = Field(8, ge=1, le=4096, description="samples per model call")

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
    latents: bool = Field(False, description="also store VAE latent moments per modality")

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
