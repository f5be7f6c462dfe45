"""``copgen evaluate``: score a model against real tiles of windows held out of training.

Wiring only: the catalog search and the choice of acquisitions are those of ``copgen preprocess``
(one time slot per Sentinel-2 L2A acquisition day in the period, other collections matched to it), the
windows are kept when :func:`transforms.dataset.split_of` puts them on the held-out side of the
training split, tiles come from :func:`transforms.process.read_units`, and everything else is
:mod:`transforms.evaluation`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.cmd_options import csv_callback, load_or_exit
from pipelines.config import JobConfig

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SPLIT_SEED = 42
READ_CHUNK = 8
"""Units read per step while collecting ``max_samples`` complete tiles."""


class ExperimentConfig(BaseModel):
    """A custom experiment in a YAML config: ``{name, conditions, targets}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    conditions: list[str] = Field(default_factory=list)
    targets: list[str]


class EvaluateConfig(JobConfig):
    """``copgen evaluate``: a model, a region and period of real data, sampling settings, experiments.

    ``val_fraction``/``split_seed`` default to the values the model's training run recorded in its
    ``bundle.json`` (else 0.1 and 42, the training defaults), so ``split: val`` selects exactly the
    windows the model never saw. Windows are those of the training lattice (no overlap).
    """

    model: str = Field("bundled", description="'bundled', a bundle directory, a converted checkpoint or 'random:tiny'")
    members: int = Field(4, ge=1, le=256, description="ensemble members per sample")
    steps: int = Field(20, ge=1, le=1000, description="solver steps (NFE)")
    guidance: float = Field(1.0, ge=0.0, le=20.0, description="classifier-free guidance weight of the conditional "
                            "experiments (1 = none, the official sampler)")
    seed: int = Field(0, ge=0, description="run seed; the noise of (sample, member) derives from it")
    batch_size: int = Field(8, ge=1, le=4096, description="rows (sample x member) per model call")
    split: Literal["val", "train", "all"] = Field("val", description="which side of the training split")
    val_fraction: float | None = Field(None, ge=0, lt=1, description="training split's held-out fraction")
    split_seed: int | None = Field(None, description="training split's seed")
    experiments: list[str | ExperimentConfig] = Field(default_factory=list,
                                                      description="experiment names or {name, conditions, "
                                                                  "targets}; default: all built-in ones")
    max_samples: int | None = Field(None, ge=1, description="evaluate at most this many (window, date) samples")
    mosaic: str | None = Field(None, description="a cube whose seam ratio to report as well")
    json_out: str | None = Field(None, description="write the report JSON here")

    @field_validator("overlap_m")
    @classmethod
    def _no_overlap(cls, v: float) -> float:
        if v != 0:
            raise ValueError("evaluation uses the training lattice (no overlap); leave overlap_m at 0")
        return v


def _experiments(cfg: EvaluateConfig) -> list[Any]:
    from transforms.evaluation import DEFAULT_EXPERIMENTS, EXPERIMENTS_BY_NAME, Experiment

    if not cfg.experiments:
        return list(DEFAULT_EXPERIMENTS)
    out = []
    for item in cfg.experiments:
        if isinstance(item, str):
            if item not in EXPERIMENTS_BY_NAME:
                raise click.BadParameter(f"unknown experiment {item!r}; use one of {sorted(EXPERIMENTS_BY_NAME)} or "
                                         "define it in a --config file ({name, conditions, targets})",
                                         param_hint="--experiments")
            out.append(EXPERIMENTS_BY_NAME[item])
        else:
            try:
                out.append(Experiment(item.name, tuple(item.conditions), tuple(item.targets)))
            except (KeyError, ValueError) as exc:
                raise click.BadParameter(str(exc.args[0]), param_hint="experiments") from exc
    return out


def model_split(ref: str) -> dict[str, Any]:
    """``val_fraction`` and ``split_seed`` recorded by the model's training run (``bundle.json``), if any."""
    meta_path = Path(ref) / "bundle.json"
    if not meta_path.is_file():
        return {}
    meta = json.loads(meta_path.read_text())
    training = (meta.get("recipe") or {}).get("backbone_training") or meta
    args = training.get("arguments") or {}
    return {k: args[k] for k in ("val_fraction", "split_seed") if k in args}


def _plan_units(cfg: EvaluateConfig, modalities: list[str]) -> list[Any]:
    """Work units as ``copgen preprocess`` plans them: one per window and S2 L2A acquisition day."""
    from copgen_core.modalities import BY_KEY
    from pipelines.jobs import plan_acquisition_units

    _, _, units = plan_acquisition_units(cfg, [k for k in modalities if BY_KEY[k].is_image])
    return units


def _world_regions(world_dir: Path, flags: dict[str, Any]) -> dict[str, Any]:
    """``bbox`` and ``regions`` covering every scene of a sample world (and its dates, unless given)."""
    from sampleworld import load_manifest

    if flags.get("bbox") is not None:
        raise click.UsageError("--world and --bbox exclude each other: --world evaluates over all its scenes")
    try:
        manifest = load_manifest(world_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--world") from exc
    boxes = [[float(v) for v in s["bbox"]] for s in manifest.scenes]
    days = sorted(d[:10] for d in manifest.dates["sentinel-2-l2a"])
    return {"bbox": boxes[0], "regions": boxes[1:], "start": flags.get("start") or days[0],
            "end": flags.get("end") or (None if flags.get("start") else days[-1])}


def _bbox_flag(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not four comma-separated numbers: west,south,east,north") from None
    if len(parts) != 4:
        raise click.BadParameter(f"{value!r} has {len(parts)} numbers; give west,south,east,north in degrees")
    return parts


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@click.command("evaluate")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML config (EvaluateConfig); flags override its fields.")
@click.option("--model", help="'bundled', a bundle directory, a converted checkpoint, or 'random:tiny'.")
@click.option("--stac-url", help="STAC API root serving the real data.")
@click.option("--bbox", callback=lambda ctx, param, value: _bbox_flag(value), help="west,south,east,north in degrees.")
@click.option("--world", "world_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="a sample world: evaluate over all its scenes (their bboxes become --bbox and regions).")
@click.option("--start", help="first date, YYYY-MM-DD (UTC).")
@click.option("--end", help="last date, YYYY-MM-DD (UTC); default: start.")
@click.option("--members", type=int, help="ensemble members per sample [4].")
@click.option("--steps", type=int, help="solver steps [20].")
@click.option("--guidance", type=float, help="classifier-free guidance weight of the conditional experiments [1: none].")
@click.option("--seed", type=int, help="run seed [0].")
@click.option("--batch-size", type=int, help="rows per model call [8].")
@click.option("--split", type=click.Choice(["val", "train", "all"]), help="side of the training split [val].")
@click.option("--val-fraction", type=float, help="held-out fraction of the training split [the model's, else 0.1].")
@click.option("--split-seed", type=int, help="seed of the training split [the model's, else 42].")
@click.option("--experiments", callback=csv_callback, help="comma-separated experiment names [all].")
@click.option("--max-samples", type=int, help="evaluate at most this many (window, date) samples.")
@click.option("--mosaic", help="also report the seam ratio of this cube (e.g. a 'copgen generate' output).")
@click.option("--json", "json_out", help="write the report JSON here.")
@click.option("--plot", "plot_out", type=click.Path(path_type=Path), default=None,
              help="write the S2 L2A spread/CRPS vs information chart (SVG) here.")
def command(config_path: Path | None, world_dir: Path | None, plot_out: Path | None, **flags: Any) -> None:
    """Generate targets from real conditions on held-out windows and score them against the real tiles.

    \b
    Example:
      copgen evaluate --model bundled --stac-url $STAC_API_URL --world out/world --members 4 \\
          --steps 20 --json out/eval.json        # every scene and date of the sample world
      copgen evaluate --model bundled --stac-url $STAC_API_URL --bbox 5.98,46.04,6.10,46.12 \\
          --start 2021-10-01 --end 2022-09-30

    Prints a table per experiment (targets, conditions) and target: MAE, RMSE, PSNR, SSIM per band
    (members, ensemble mean, best-of-N), CRPS, spread, spread-skill, 90 % coverage; accuracy/mIoU for
    classes; km / days for location / date; and the conditional/unconditional MAE ratios.

    Exit codes: 0 evaluated; 2 bad input or no held-out sample; 3 the STAC API is unavailable.
    """
    from pipelines.jobs import JobError

    t0 = time.perf_counter()
    if world_dir is not None:
        flags.update(_world_regions(world_dir, flags))
    cfg = load_or_exit(EvaluateConfig, config_path, flags)
    experiments = _experiments(cfg)
    try:
        report = _evaluate(cfg, experiments)
    except JobError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.code)
    report["elapsed_s"] = round(time.perf_counter() - t0, 2)
    from transforms.evaluation import format_table
    from transforms.evaluation_plot import information_ladder, ladder_svg

    ladder = information_ladder(report["experiments"])
    if ladder is not None:
        report["information_ladder"] = ladder
    click.echo(format_table(report))
    if plot_out is not None:
        if ladder is None:
            click.echo("no plot: the three S2 L2A ladder experiments did not all run", err=True)
        else:
            plot_out.parent.mkdir(parents=True, exist_ok=True)
            plot_out.write_text(ladder_svg(ladder))
            click.echo(f"plot: {plot_out}")
    if cfg.json_out:
        path = Path(cfg.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_finite(report), indent=1, sort_keys=False) + "\n")
        click.echo(f"report: {path}")


def _evaluate(cfg: EvaluateConfig, experiments: list[Any]) -> dict[str, Any]:
    from pipelines.jobs import JobError
    from transforms.evaluation import (
        EvalSettings,
        complete_tiles,
        cube_seam_ratios,
        evaluate_tiles,
        held_out_units,
        required_modalities,
        vae_reconstruction,
    )
    from transforms.infer import resolve_model_ref
    from transforms.process import read_units

    try:
        ref = resolve_model_ref(cfg.model)
    except FileNotFoundError as exc:
        raise JobError(str(exc)) from exc
    recorded = model_split(ref)
    val_fraction = cfg.val_fraction if cfg.val_fraction is not None else recorded.get("val_fraction",
                                                                                      DEFAULT_VAL_FRACTION)
    split_seed = cfg.split_seed if cfg.split_seed is not None else recorded.get("split_seed", DEFAULT_SPLIT_SEED)
    modalities = list(required_modalities(experiments))
    units = _plan_units(cfg, modalities)
    held = sorted(held_out_units(units, split=cfg.split, val_fraction=val_fraction, split_seed=split_seed),
                  key=lambda u: u.name)
    tiles: list[Any] = []
    skipped: dict[str, int] = {}
    for start in range(0, len(held), READ_CHUNK):
        read, bad = read_units(held[start:start + READ_CHUNK], modalities)
        for _, reason in bad:
            skipped[f"read failed: {reason}"] = skipped.get(f"read failed: {reason}", 0) + 1
        kept, why = complete_tiles(read, modalities)
        tiles.extend(kept)
        for k, v in why.items():
            skipped[k] = skipped.get(k, 0) + v
        if cfg.max_samples is not None and len(tiles) >= cfg.max_samples:
            tiles = tiles[:cfg.max_samples]
            break
    windows = {"planned_samples": len(units), "held_out_samples": len(held), "evaluated": len(tiles),
               "skipped": dict(sorted(skipped.items())),
               "held_out_windows": sorted({str(t.unit.key) for t in tiles})}
    if not tiles:
        raise JobError(f"no {cfg.split!r} sample with every modality complete in the bbox and period "
                       f"({len(units)} planned, {len(held)} on that side of the split; skipped: {skipped or 'none'}); "
                       "widen --bbox or the period, use --split all, or run fewer --experiments")
    from copgen_core.bundle import load_model, model_hash

    model = load_model(ref)
    settings = EvalSettings(members=cfg.members, steps=cfg.steps, seed=cfg.seed, batch_size=cfg.batch_size,
                            guidance=cfg.guidance)
    body = evaluate_tiles(model, tiles, experiments, settings)
    body["vae_reconstruction"] = vae_reconstruction(model, tiles)
    report: dict[str, Any] = {
        "model": cfg.model, "model_ref": ref, "model_hash": model_hash(ref),
        "settings": {"members": cfg.members, "steps": cfg.steps, "seed": cfg.seed, "batch_size": cfg.batch_size,
                     "guidance": cfg.guidance},
        "split": {"split": cfg.split, "val_fraction": val_fraction, "split_seed": split_seed},
        "data": {"stac_url": cfg.stac_url, "bboxes": [list(b) for b in cfg.bboxes], "start": str(cfg.start),
                 "end": str(cfg.end or cfg.start), **windows},
        **body,
    }
    if cfg.mosaic:
        report["seams"] = cube_seam_ratios(cfg.mosaic)
    return report


if __name__ == "__main__":
    command()
