"""Evaluation of a model on real tiles of windows held out of training: plain functions, any engine.

A test, a notebook or ``copgen evaluate`` calls the same pieces:

:class:`Experiment`
    Which modalities are given (read from the tiles) and which are generated and scored.
:func:`held_out_units`
    The work units of one side of the training split (:func:`transforms.dataset.split_of`, the same
    window-key hash the training cube uses), so evaluation only sees windows never trained on.
:func:`complete_tiles`
    The tiles every experiment can use: all their modalities present with no missing pixel.
:func:`evaluate_tiles`
    Generates every experiment's targets for those tiles (``members`` per tile, seeded per tile and
    member) and scores them against the truth, chunk by chunk so memory stays bounded.
:func:`vae_reconstruction`
    Encode-decode scores of every image modality's VAE on the same tiles.
:func:`cube_seam_ratios`
    The seam ratio of a mosaic cube (optional hook for large-area outputs).
:func:`format_table`
    The report as a readable table.

Metrics (``copgen_core.metrics``), per experiment and target:

- images (S2, S1, DEM), per band in evaluation units (S2 reflectance, S1 dB, DEM metres): MAE, RMSE,
  PSNR and SSIM of the members (mean over members and samples), of the ensemble mean, and of the best
  member per sample (best-of-N); CRPS, ensemble spread vs the ensemble mean's error, the spread-skill
  ratio and the coverage of the truth by the members' 5-95 % interval;
- class maps (LULC, cloud mask): pixel accuracy and mIoU of the members, of the per-pixel mode, and
  best-of-N accuracy;
- location: great-circle error (km); date: error in days (mean and median over members and samples,
  and best-of-N).

Across experiments: the ratio of the ensemble-mean MAE of each conditional experiment to the
unconditional one (same tiles, same targets; below 1 means the conditions help), and for S2/S1 targets
the mean value per land-cover class, generated vs real (relative error), using the tile's real LULC.

Warnings
--------
PSNR here pools the min-max-scaled squared errors over samples (and members) before the log, as the
official evaluation; best-of-N PSNR is the mean of per-sample PSNRs (a member is picked per sample).
Every experiment is scored on the same tiles: a tile lacking any modality of any experiment is left
out of all of them (counted in ``skipped``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from copgen_core.metrics import (
    LULC_IGNORE_INDEX,
    best_of_n,
    calibrated_coverage,
    class_indices,
    class_scores,
    confusion_matrix,
    crps_ensemble,
    date_error_days,
    haversine_km,
    interval_coverage,
    mae,
    psnr_from_mse,
    rmse,
    scaled_mse,
    seam_ratio,
    spread_error,
    ssim,
    to_eval_units,
)
from copgen_core.modalities import BY_KEY, Kind, Modality, resolve
from copgen_core.normalize_classes import CLOUD_CLASS_NAMES, CLOUD_CODES, LULC_CLASS_NAMES, LULC_CODES
from transforms.dataset import split_of
from transforms.tiles import Tile, WorkUnit

LATLON = "3d_cartesian_lat_lon"
DATE = "mean_timestamps"
LULC = "LULC_LULC"
STATIC = ("DEM_DEM", LULC, LATLON, DATE)
S2L2A = ("S2L2A_B02_B03_B04_B08", "S2L2A_B05_B06_B07_B11_B12_B8A", "S2L2A_B01_B09")
S2L1C = ("S2L1C_B02_B03_B04_B08", "S2L1C_B05_B06_B07_B11_B12_B8A", "S2L1C_B01_B09_B10")
S1 = "S1RTC_vh_vv"
UNCONDITIONAL = "s2l2a_unconditional"
COVERAGE_INTERVAL = (0.05, 0.95)
SplitName = Literal["train", "val", "all"]


@dataclass(frozen=True)
class Experiment:
    """One evaluation setting: ``conditions`` are read from the tiles and given; ``targets`` are generated.

    Every other modality of the model is marginalised. ``conditions`` may be empty (unconditional).
    """

    name: str
    conditions: tuple[str, ...]
    targets: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", tuple(resolve(k).key for k in self.conditions))
        object.__setattr__(self, "targets", tuple(resolve(k).key for k in self.targets))
        if not self.targets:
            raise ValueError(f"experiment {self.name!r} has no targets; name at least one modality to generate")
        both = sorted(set(self.conditions) & set(self.targets))
        if both:
            raise ValueError(f"experiment {self.name!r}: {both} are both conditions and targets; pick one role")

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.conditions + self.targets


DEFAULT_EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("s2l2a_from_static", STATIC, S2L2A),
    Experiment("s2l2a_from_static_s1", (*STATIC, S1), S2L2A),
    Experiment("s2l2a_from_static_s1_l1c", (*STATIC, S1, *S2L1C), S2L2A),
    Experiment(UNCONDITIONAL, (), S2L2A),
    Experiment("lulc_latlon_date_from_s2l2a", S2L2A, (LULC, LATLON, DATE)),
)
"""S2 L2A from {DEM, LULC, location, date}, then + S1, then + S2 L1C, and unconditionally (the
baseline of the MAE ratios); and land cover, location and date from S2 L2A."""
EXPERIMENTS_BY_NAME: dict[str, Experiment] = {e.name: e for e in DEFAULT_EXPERIMENTS}


@dataclass(frozen=True)
class EvalSettings:
    """How the targets are sampled (part of the report)."""

    members: int = 4
    steps: int = 20
    seed: int = 0
    batch_size: int = 8
    chunk_tiles: int = 4
    guidance: float = 1.0
    """Classifier-free guidance weight of every conditional experiment (1 = none)."""

    def __post_init__(self) -> None:
        if self.members < 1 or self.steps < 1 or self.batch_size < 1 or self.chunk_tiles < 1:
            raise ValueError(f"members, steps, batch_size and chunk_tiles must be >= 1, got {self}")
        if not self.guidance >= 0:
            raise ValueError(f"guidance must be >= 0 (1 = none), got {self.guidance}")


# -- which tiles ----------------------------------------------------------------------------------------


def held_out_units(units: Iterable[WorkUnit], *, split: SplitName = "val", val_fraction: float = 0.1,
                   split_seed: int = 42) -> list[WorkUnit]:
    """The units whose window lies on ``split``'s side of the training split (``"all"``: every unit).

    Uses :func:`transforms.dataset.split_of`, the hash the training datasets use, so ``"val"`` with the
    training run's ``val_fraction`` and ``split_seed`` gives windows the model never saw.
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"unknown split {split!r}; use 'val', 'train' or 'all'")
    return [u for u in units if split == "all" or split_of(u.key, val_fraction, split_seed) == split]


def required_modalities(experiments: Sequence[Experiment]) -> tuple[str, ...]:
    """Every modality the experiments read (conditions and truths), plus LULC for the class spectra."""
    keys = {k for e in experiments for k in e.modalities}
    if any(BY_KEY[k].kind in (Kind.S2, Kind.S1) for e in experiments for k in e.targets):
        keys.add(LULC)
    return tuple(k for k in BY_KEY if k in keys)


def complete_tiles(tiles: Sequence[Tile], modalities: Sequence[str]) -> tuple[list[Tile], dict[str, int]]:
    """The tiles holding every image modality of ``modalities`` completely, and skip counts by reason.

    A tile is counted once, under its first missing (``"missing <key>"``) or incomplete
    (``"incomplete <key>"``) modality, in canonical order.
    """
    kept: list[Tile] = []
    skipped: dict[str, int] = {}
    for tile in tiles:
        reason = ""
        for key in modalities:
            if not BY_KEY[key].is_image:
                continue
            if key not in tile.arrays:
                reason = f"missing {key}"
            elif not tile.complete(key):
                reason = f"incomplete {key}"
            if reason:
                break
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
        else:
            kept.append(tile)
    return kept, dict(sorted(skipped.items()))


def _stack(tiles: Sequence[Tile], key: str) -> np.ndarray:
    """The physical values of ``key`` of every tile, (B, ...) (class codes as int64)."""
    values = np.stack([np.asarray(t.arrays[key]) for t in tiles])
    if BY_KEY[key].kind in (Kind.LULC, Kind.CLOUD):
        return values.astype(np.int64)
    return values


# -- scoring: accumulators per target, filled chunk by chunk ---------------------------------------------


class ImageScores:
    """Accumulates the scores of one continuous image target (S2, S1, DEM) over chunks of samples."""

    def __init__(self, modality: Modality, members: int) -> None:
        self.modality = modality
        self.members = members
        self.per_sample: dict[str, list[np.ndarray]] = {}
        self.spectra = ClassSpectra(modality) if modality.kind in (Kind.S2, Kind.S1) else None

    def _add(self, name: str, value: np.ndarray) -> None:
        self.per_sample.setdefault(name, []).append(np.asarray(value, dtype=np.float64))

    def update(self, ensemble: np.ndarray, truth: np.ndarray, lulc: np.ndarray | None = None) -> None:
        """Score a chunk: ``ensemble`` (B, M, C, H, W) and ``truth`` (B, C, H, W) physical values."""
        ens = to_eval_units(self.modality, ensemble)
        ref = to_eval_units(self.modality, truth)
        ref_m = np.broadcast_to(ref[:, None], ens.shape)
        self._add("member_mae", mae(ens, ref_m))  # (B, M, C)
        self._add("member_rmse", rmse(ens, ref_m))
        self._add("member_smse", scaled_mse(ens, ref_m))
        self._add("member_ssim", ssim(ens, ref_m))
        mean = ens.mean(axis=1)
        self._add("mean_mae", mae(mean, ref))  # (B, C)
        self._add("mean_rmse", rmse(mean, ref))
        self._add("mean_smse", scaled_mse(mean, ref))
        self._add("mean_ssim", ssim(mean, ref))
        self._add("crps", crps_ensemble(ens, ref, axis=1).mean(axis=(-2, -1)))
        if self.members > 1:
            self._add("crps_fair", crps_ensemble(ens, ref, axis=1, fair=True).mean(axis=(-2, -1)))
            spread, error = spread_error(ens, ref, axis=1)
            self._add("spread", spread.mean(axis=(-2, -1)))
            self._add("spread_sq", (spread**2).mean(axis=(-2, -1)))
            self._add("error_sq", (error**2).mean(axis=(-2, -1)))
        lo, hi = COVERAGE_INTERVAL
        self._add("coverage", interval_coverage(ens, ref, axis=1, lower=lo, upper=hi).mean(axis=(-2, -1)))
        if self.spectra is not None and lulc is not None:
            self.spectra.update(ens, ref, lulc)

    def _cat(self, name: str) -> np.ndarray:
        return np.concatenate(self.per_sample[name])

    def result(self) -> dict[str, Any]:
        """Per band and over all bands (the mean of the bands' values): members, ensemble mean, best-of-N
        and ensemble scores; see the module docstring for the definitions."""
        member_mae, member_ssim, member_smse = self._cat("member_mae"), self._cat("member_ssim"), self._cat(
            "member_smse")
        best_mae, _ = best_of_n(member_mae, axis=1, higher_is_better=False)
        best_ssim, _ = best_of_n(member_ssim, axis=1, higher_is_better=True)
        best_psnr, _ = best_of_n(psnr_from_mse(member_smse), axis=1, higher_is_better=True)
        per_band: dict[str, np.ndarray] = {
            "member.mae": member_mae.mean(axis=(0, 1)),
            "member.rmse": np.sqrt((self._cat("member_rmse") ** 2).mean(axis=(0, 1))),
            "member.psnr": psnr_from_mse(member_smse.mean(axis=(0, 1))),
            "member.ssim": member_ssim.mean(axis=(0, 1)),
            "ensemble_mean.mae": self._cat("mean_mae").mean(axis=0),
            "ensemble_mean.rmse": np.sqrt((self._cat("mean_rmse") ** 2).mean(axis=0)),
            "ensemble_mean.psnr": psnr_from_mse(self._cat("mean_smse").mean(axis=0)),
            "ensemble_mean.ssim": self._cat("mean_ssim").mean(axis=0),
            "best_of_n.mae": best_mae.mean(axis=0),
            "best_of_n.psnr": best_psnr.mean(axis=0),
            "best_of_n.ssim": best_ssim.mean(axis=0),
            "ensemble.crps": self._cat("crps").mean(axis=0),
            "ensemble.coverage_90": self._cat("coverage").mean(axis=0),
            # what a perfectly calibrated ensemble of this size would score (0.70 for 8 members)
            "ensemble.coverage_90_calibrated": np.full(member_mae.shape[-1], calibrated_coverage(
                self.members, lower=COVERAGE_INTERVAL[0], upper=COVERAGE_INTERVAL[1])),
        }
        if self.members > 1:
            spread_sq, error_sq = self._cat("spread_sq").mean(axis=0), self._cat("error_sq").mean(axis=0)
            per_band["ensemble.crps_fair"] = self._cat("crps_fair").mean(axis=0)
            per_band["ensemble.spread"] = self._cat("spread").mean(axis=0)
            # spread-skill ratio of copgen_core.metrics.spread_skill_ratio, pooled over every chunk
            with np.errstate(divide="ignore", invalid="ignore"):
                per_band["ensemble.spread_skill"] = (np.sqrt(spread_sq / error_sq)
                                                     * math.sqrt((self.members + 1) / self.members))
        bands = {band: _nest({k: float(v[c]) for k, v in per_band.items()})
                 for c, band in enumerate(self.modality.channels)}
        out: dict[str, Any] = {
            "kind": self.modality.kind.value, "units": _units(self.modality), "samples": int(member_mae.shape[0]),
            "all_bands": _nest({k: float(np.mean(v)) for k, v in per_band.items()}), "bands": bands,
        }
        if self.spectra is not None and self.spectra.count.any():
            out["class_spectra"] = self.spectra.result()
        return out


def _units(modality: Modality) -> str:
    return {Kind.S2: "reflectance", Kind.S1: "dB", Kind.DEM: "m"}.get(modality.kind, "1")


def _nest(flat: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``{"a.b": v}`` -> ``{"a": {"b": v}}``."""
    out: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        group, name = key.split(".")
        out.setdefault(group, {})[name] = value
    return out


class ClassSpectra:
    """Mean value per land-cover class and band, generated vs real, for one S2/S1 target.

    The tile's real LULC (10 m) is sampled at the target's pixel centres (nearest), so 20 m and 60 m
    targets use the class at each of their pixel centres.
    """

    def __init__(self, modality: Modality) -> None:
        self.modality = modality
        k, c = len(LULC_CODES), len(modality.channels)
        self.real = np.zeros((k, c))
        self.generated = np.zeros((k, c))
        self.count = np.zeros(k, dtype=np.int64)

    def update(self, ensemble: np.ndarray, truth: np.ndarray, lulc: np.ndarray) -> None:
        """``ensemble`` (B, M, C, H, W), ``truth`` (B, C, H, W) in evaluation units; ``lulc`` (B, 1, h, w) codes."""
        side = truth.shape[-1]
        pick = ((np.arange(side) + 0.5) * lulc.shape[-1] / side).astype(np.int64)
        classes = class_indices(LULC, lulc[:, 0][:, pick][:, :, pick])  # (B, H, W)
        member_mean = ensemble.mean(axis=1)
        for k in np.unique(classes):
            mask = classes == k
            self.count[k] += int(mask.sum())
            self.real[k] += np.moveaxis(truth, 1, -1)[mask].sum(axis=0)
            self.generated[k] += np.moveaxis(member_mean, 1, -1)[mask].sum(axis=0)

    def result(self) -> dict[str, Any]:
        """Per class present: pixels, real and generated mean per band, relative error per band; and the
        mean relative error over the classes and bands."""
        out: dict[str, Any] = {}
        errors = []
        for k in np.flatnonzero(self.count):
            real = self.real[k] / self.count[k]
            gen = self.generated[k] / self.count[k]
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.abs(gen - real) / np.abs(real)
            errors.append(rel)
            out[LULC_CLASS_NAMES[k]] = {
                "code": LULC_CODES[k], "pixels": int(self.count[k]),
                "real": dict(zip(self.modality.channels, real.tolist(), strict=True)),
                "generated": dict(zip(self.modality.channels, gen.tolist(), strict=True)),
                "relative_error": dict(zip(self.modality.channels, rel.tolist(), strict=True)),
            }
        finite = np.concatenate(errors) if errors else np.array([np.nan])
        finite = finite[np.isfinite(finite)]
        return {"classes": out, "mean_relative_error": float(finite.mean()) if finite.size else float("nan")}


class ClassMapScores:
    """Accumulates accuracy and mIoU of one class-map target (LULC, cloud mask)."""

    def __init__(self, modality: Modality, members: int) -> None:
        self.modality = modality
        self.members = members
        lulc = modality.kind is Kind.LULC
        self.codes = LULC_CODES if lulc else CLOUD_CODES
        self.names = LULC_CLASS_NAMES if lulc else CLOUD_CLASS_NAMES
        self.ignore = LULC_IGNORE_INDEX if lulc else None
        k = len(self.codes)
        self.member_cm = np.zeros((members, k, k), dtype=np.int64)
        self.mode_cm = np.zeros((k, k), dtype=np.int64)
        self.sample_accuracy: list[np.ndarray] = []

    def update(self, ensemble: np.ndarray, truth: np.ndarray) -> None:
        """``ensemble`` (B, M, 1, H, W) and ``truth`` (B, 1, H, W) raw class codes."""
        k = len(self.codes)
        pred = class_indices(self.modality, ensemble)[:, :, 0]
        ref = class_indices(self.modality, truth)[:, 0]
        cm = confusion_matrix(pred, np.broadcast_to(ref[:, None], pred.shape), k, ignore_index=self.ignore,
                              batch_dims=2)  # (B, M, K, K)
        self.member_cm += cm.sum(axis=0)
        self.sample_accuracy.append(class_scores(cm, ignore_index=self.ignore).accuracy)
        votes = np.stack([(pred == c).sum(axis=1) for c in range(k)], axis=1)  # (B, K, H, W)
        self.mode_cm += confusion_matrix(votes.argmax(axis=1), ref, k, ignore_index=self.ignore)

    def result(self) -> dict[str, Any]:
        members = class_scores(self.member_cm, ignore_index=self.ignore)
        mode = class_scores(self.mode_cm, ignore_index=self.ignore)
        accuracy = np.concatenate(self.sample_accuracy)  # (B, M)
        best, _ = best_of_n(accuracy, axis=1, higher_is_better=True)
        return {
            "kind": self.modality.kind.value, "samples": int(accuracy.shape[0]),
            "member": {"accuracy": float(np.nanmean(members.accuracy)), "miou": float(np.nanmean(members.miou))},
            "ensemble_mode": {"accuracy": float(mode.accuracy), "miou": float(mode.miou),
                              "iou": {n: float(v) for n, v in zip(self.names, mode.iou, strict=True)
                                      if np.isfinite(v)}},
            "best_of_n": {"accuracy": float(np.nanmean(best))},
        }


class ScalarScores:
    """Accumulates location (km) or date (days) errors of one scalar target."""

    def __init__(self, modality: Modality, members: int) -> None:
        self.modality = modality
        self.errors: list[np.ndarray] = []

    def update(self, ensemble: np.ndarray, truth: np.ndarray) -> None:
        """Location: ``ensemble`` (B, M, 2), ``truth`` (B, 2) [lat, lon] degrees. Date: (B, M, 3)
        [day, month, year] as the model returns it, truth (B, 3) [year, month, day]."""
        if self.modality.kind is Kind.LATLON:
            self.errors.append(haversine_km(ensemble, truth[:, None]))
        else:
            self.errors.append(date_error_days(ensemble, truth[:, None], pred_order="dmy", truth_order="ymd")
                               .astype(np.float64))

    def result(self) -> dict[str, Any]:
        err = np.concatenate(self.errors)  # (B, M)
        best, _ = best_of_n(err, axis=1, higher_is_better=False)
        unit = "km" if self.modality.kind is Kind.LATLON else "days"
        return {"kind": self.modality.kind.value, "units": unit, "samples": int(err.shape[0]),
                "member": {"mean_error": float(err.mean()), "median_error": float(np.median(err))},
                "best_of_n": {"mean_error": float(best.mean())}}


def _scorer(modality: Modality, members: int) -> ImageScores | ClassMapScores | ScalarScores:
    if modality.kind in (Kind.LULC, Kind.CLOUD):
        return ClassMapScores(modality, members)
    if modality.is_scalar:
        return ScalarScores(modality, members)
    return ImageScores(modality, members)


# -- running ---------------------------------------------------------------------------------------------------


@dataclass
class ExperimentRun:
    """What one experiment produced: scores per target, notes, seconds."""

    experiment: Experiment
    scores: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_experiment(model: Any, tiles: Sequence[Tile], experiment: Experiment, settings: EvalSettings) -> ExperimentRun:
    """Generate ``experiment``'s targets for ``tiles`` and score them against the tiles' values.

    Parameters
    ----------
    model:
        A :class:`copgen_core.generate.CopgenModel` covering the experiment's modalities.
    tiles:
        Complete tiles (:func:`complete_tiles`); the noise of (tile, member) derives from
        ``(settings.seed, tile name, member)``, so results do not depend on chunking.
    """
    t0 = time.perf_counter()
    run = ExperimentRun(experiment)
    scorers = {k: _scorer(BY_KEY[k], settings.members) for k in experiment.targets}
    notes: set[str] = set()
    for start in range(0, len(tiles), settings.chunk_tiles):
        chunk = tiles[start:start + settings.chunk_tiles]
        conditions = {k: _stack(chunk, k) for k in experiment.conditions}
        out = model.generate(conditions, list(experiment.targets), members=settings.members, steps=settings.steps,
                             seed=settings.seed, keys=[t.unit.name for t in chunk], batch_size=settings.batch_size,
                             guidance=settings.guidance)
        notes.update(n.split(": ", 1)[-1] for n in out.notes)
        lulc = _stack(chunk, LULC) if all(LULC in t.arrays for t in chunk) else None
        for key, scorer in scorers.items():
            truth = _stack(chunk, key)
            if isinstance(scorer, ImageScores):
                scorer.update(out.outputs[key], truth, lulc)
            else:
                scorer.update(out.outputs[key], truth)
    run.scores = {k: s.result() for k, s in scorers.items()}
    run.notes = sorted(notes)
    run.seconds = time.perf_counter() - t0
    return run


def mae_ratios(runs: Mapping[str, ExperimentRun], baseline: str = UNCONDITIONAL) -> dict[str, Any]:
    """Ensemble-mean MAE of each experiment over the baseline's, per shared image target and band.

    Returns ``{experiment: {target: {"bands": {band: ratio}, "all_bands": ratio}}}``; empty without
    the baseline. Below 1: the conditions bring the ensemble mean closer to the truth.
    """
    base = runs.get(baseline)
    if base is None:
        return {}
    out: dict[str, Any] = {}
    for name, run in runs.items():
        if name == baseline:
            continue
        for key, scores in run.scores.items():
            ref = base.scores.get(key)
            if ref is None or "bands" not in scores:
                continue
            bands = {b: _ratio(scores["bands"][b]["ensemble_mean"]["mae"], ref["bands"][b]["ensemble_mean"]["mae"])
                     for b in scores["bands"]}
            overall = _ratio(scores["all_bands"]["ensemble_mean"]["mae"], ref["all_bands"]["ensemble_mean"]["mae"])
            out.setdefault(name, {})[key] = {"bands": bands, "all_bands": overall}
    return out


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def evaluate_tiles(model: Any, tiles: Sequence[Tile], experiments: Sequence[Experiment],
                   settings: EvalSettings) -> dict[str, Any]:
    """Run every experiment the model can (all its modalities covered) on ``tiles``; the report's body.

    Returns
    -------
    dict
        ``experiments`` (per name: conditions, targets, samples, seconds, notes, ``scores`` per target
        or ``skipped`` with the reason) and ``mae_ratio_vs_unconditional`` (see :func:`mae_ratios`).

    Raises
    ------
    ValueError
        If ``tiles`` is empty.
    """
    if not tiles:
        raise ValueError("no tile to evaluate on")
    covered = set(model.modalities)
    runs: dict[str, ExperimentRun] = {}
    body: dict[str, Any] = {}
    for exp in experiments:
        entry: dict[str, Any] = {"conditions": list(exp.conditions), "targets": list(exp.targets)}
        lacking = [k for k in exp.modalities if k not in covered]
        if lacking:
            entry["skipped"] = f"the model does not cover {lacking}"
        else:
            run = runs[exp.name] = run_experiment(model, tiles, exp, settings)
            entry.update(samples=len(tiles), seconds=round(run.seconds, 2), notes=run.notes, scores=run.scores)
        body[exp.name] = entry
    return {"experiments": body, "mae_ratio_vs_unconditional": mae_ratios(runs)}


# -- VAE reconstruction ------------------------------------------------------------------------------------------


def vae_reconstruction(model: Any, tiles: Sequence[Tile], keys: Sequence[str] | None = None,
                       chunk_tiles: int = 4) -> dict[str, Any]:
    """Encode (posterior mean) and decode every image modality of ``tiles``; score against the input.

    Parameters
    ----------
    model:
        A :class:`copgen_core.generate.CopgenModel` (its VAEs are used, not its backbone).
    tiles:
        Complete tiles (:func:`complete_tiles`).
    keys:
        Image modalities to score (default: every image modality of the model present in every tile).

    Returns
    -------
    dict
        Per modality: the :class:`ImageScores` (one "member", the reconstruction; PSNR/SSIM by the
        official min-max protocol in evaluation units) or :class:`ClassMapScores` result, plus
        ``psnr_normalised``: ``10 log10(2^2 / MSE)`` pooled over every value in the VAE's [-1, 1]
        input space (what ``copgen train-vae`` reports) and ``psnr_normalised_median``, the median of
        the per-sample values. S2 and S1 modalities of tiles with land cover also get
        ``class_spectra`` (as the generation experiments): the per-class mean error the VAE alone
        makes, a floor under what any backbone can reach through it.
    """
    import torch

    from copgen_core.normalize import denormalize, normalize

    wanted = [k for k in (keys or model.modalities) if BY_KEY[k].is_image and all(k in t.arrays for t in tiles)]
    out: dict[str, Any] = {}
    for key in wanted:
        modality = BY_KEY[key]
        scorer = _scorer(modality, 1)
        sq_sum, count, per_sample = 0.0, 0, []
        for start in range(0, len(tiles), chunk_tiles):
            truth = _stack(tiles[start:start + chunk_tiles], key)
            x = torch.as_tensor(np.stack([np.asarray(normalize(modality, v[None]).values)[0] for v in truth]),
                                dtype=torch.float32)
            with torch.no_grad():
                vae = model.vae(key)
                y = torch.cat([vae.decode(vae.encode(x[i:i + 1].to(model.device))).float().cpu()
                               for i in range(x.shape[0])])
            err = (y - x).double().square()
            sq_sum += float(err.sum())
            count += err.numel()
            per_sample.extend((10 * torch.log10(4.0 / err.mean(dim=(1, 2, 3)))).tolist())
            recon = np.stack([np.asarray(denormalize(modality, y[i:i + 1].numpy()))[0] for i in range(y.shape[0])])
            chunk = tiles[start:start + chunk_tiles]
            lulc = _stack(chunk, LULC) if all(LULC in t.arrays for t in chunk) else None
            if isinstance(scorer, ImageScores):
                scorer.update(recon[:, None], truth, lulc)  # class spectra: the VAE's share of the error
            else:
                scorer.update(recon[:, None], truth)
        result = scorer.result()
        result["psnr_normalised"] = float(10 * math.log10(4.0 / (sq_sum / count)))
        result["psnr_normalised_median"] = float(np.median(per_sample))
        out[key] = result
    return out


# -- seams -----------------------------------------------------------------------------------------------------


def cube_seam_ratios(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Seam ratio of every continuous modality of a cube, per group (1.0: borders as smooth as the rest).

    Reads the ensemble mean (``<key>__mean``) of ensemble cubes, the values of real-data cubes, at every
    time slot, and takes :func:`copgen_core.metrics.seam_ratio` at the window blocks' pitch and offset;
    unwritten blocks (NaN) are skipped. Returns ``{"<group>/<key>": {"seam_ratio": r, "bands": {...}}}``.
    """
    import zarr

    from transforms.cube import load_spec, open_store

    spec = load_spec(url, storage_options)
    root = zarr.open_group(open_store(url, storage_options, read_only=True), mode="r")
    out: dict[str, Any] = {}
    for group in spec.groups:
        first = next(w for w in spec.windows if w.key in set(group.windows))
        oy, ox = (v % group.block_px for v in group.block_origin_px(first))
        for key in group.modalities:
            if BY_KEY[key].kind not in (Kind.S2, Kind.S1, Kind.DEM):
                continue
            name = f"{key}__mean" if spec.members is not None else key
            node = root.get(f"{group.path}/{name}")
            if not isinstance(node, zarr.Array):
                raise ValueError(f"the cube at {url} has no array {group.path}/{name}; is it a copgen cube?")
            values = np.asarray(node[:], dtype=np.float64)  # (time, C, y, x)
            per_band = np.nanmean(seam_ratio(values, group.block_px, (oy, ox)), axis=0)
            out[f"{group.path}/{key}"] = {
                "seam_ratio": float(np.nanmean(per_band)),
                "bands": dict(zip(BY_KEY[key].channels, per_band.tolist(), strict=True)),
            }
    return out


# -- table -----------------------------------------------------------------------------------------------------


def format_table(report: Mapping[str, Any]) -> str:
    """The report as fixed-width text: one block per experiment and target, one line per band."""
    lines: list[str] = []
    for name, entry in report.get("experiments", {}).items():
        conds = ", ".join(entry["conditions"]) or "(nothing)"
        lines.append(f"== {name}: {', '.join(entry['targets'])} from {conds}")
        if "skipped" in entry:
            lines.append(f"   skipped: {entry['skipped']}")
            continue
        lines.append(f"   {entry['samples']} samples, {entry['seconds']:.1f} s")
        for key, s in entry["scores"].items():
            lines.extend(_target_lines(key, s))
    ratios = report.get("mae_ratio_vs_unconditional") or {}
    if ratios:
        lines.append("== ensemble-mean MAE, conditional / unconditional (below 1: the conditions help)")
        for name, targets in ratios.items():
            for key, r in targets.items():
                bands = "  ".join(f"{b} {v:.3f}" for b, v in r["bands"].items())
                lines.append(f"   {name:<32} {key:<31} all {r['all_bands']:.3f}   {bands}")
    vae = report.get("vae_reconstruction") or {}
    if vae:
        lines.append("== VAE reconstruction (posterior mean) of the held-out tiles")
        for key, r in vae.items():
            if "all_bands" in r:
                lines.append(f"   {key:<31} PSNR {r['all_bands']['member']['psnr']:6.2f} dB (official, "
                             f"{r['units']})  {r['psnr_normalised']:6.2f} dB pooled [-1,1] (median sample "
                             f"{r['psnr_normalised_median']:.2f})  SSIM {r['all_bands']['member']['ssim']:.3f}  "
                             f"MAE {r['all_bands']['member']['mae']:.4g}")
                if "class_spectra" in r:
                    lines.append(f"   {'':<31} per-class mean values, reconstructed vs real: mean relative error "
                                 f"{r['class_spectra']['mean_relative_error']:.3f}")
            else:
                lines.append(f"   {key:<31} accuracy {r['member']['accuracy']:.3f}  mIoU {r['member']['miou']:.3f}"
                             f"  {r['psnr_normalised']:6.2f} dB pooled [-1,1]")
    ladder = report.get("information_ladder")
    if ladder:
        lines.append("== S2 L2A uncertainty vs information (mean of the three groups, reflectance)")
        for step in ladder["steps"]:
            lines.append(f"   {step['label']:<28} spread {step['spread']:.4f}  CRPS {step['crps']:.4f}  "
                         f"cov90 {step['coverage_90']:.3f}")
        lines.append(f"   narrows monotonically: spread {'yes' if ladder['spread_narrows'] else 'NO'}, "
                     f"CRPS {'yes' if ladder['crps_narrows'] else 'NO'}")
    seams = report.get("seams") or {}
    for key, s in seams.items():
        lines.append(f"== seam ratio {key}: {s['seam_ratio']:.3f}")
    return "\n".join(lines)


def _target_lines(key: str, s: Mapping[str, Any]) -> list[str]:
    if "bands" in s:
        rows = [f"   {key} ({s['units']}; members | ensemble mean, best member, ensemble)",
                f"     {'band':<5}{'MAE':>9}{'RMSE':>9}{'PSNR':>7}{'SSIM':>7} |{'meanMAE':>9}{'bestMAE':>9}"
                f"{'CRPS':>9}{'spread':>9}{'SSR':>6}{'cov90':>6}"]
        for band, v in [*s["bands"].items(), ("all", s["all_bands"])]:
            m, ens = v["member"], v["ensemble"]
            rows.append(f"     {band:<5}{m['mae']:>9.4g}{m['rmse']:>9.4g}{m['psnr']:>7.2f}{m['ssim']:>7.3f} |"
                        f"{v['ensemble_mean']['mae']:>9.4g}{v['best_of_n']['mae']:>9.4g}{ens['crps']:>9.4g}"
                        f"{ens.get('spread', float('nan')):>9.4g}{ens.get('spread_skill', float('nan')):>6.2f}"
                        f"{ens['coverage_90']:>6.2f}")
        if "coverage_90_calibrated" in s["all_bands"]["ensemble"]:
            rows.append(f"     cov90 of a perfectly calibrated ensemble of this size: "
                        f"{s['all_bands']['ensemble']['coverage_90_calibrated']:.2f}")
        if "class_spectra" in s:
            cs = s["class_spectra"]
            rows.append(f"     per-class mean values, generated vs real: mean relative error "
                        f"{cs['mean_relative_error']:.3f} over {len(cs['classes'])} classes")
        return rows
    if s["kind"] in ("lulc", "cloud"):
        return [f"   {key}: accuracy members {s['member']['accuracy']:.3f}, mode {s['ensemble_mode']['accuracy']:.3f}, "
                f"best-of-N {s['best_of_n']['accuracy']:.3f}; mIoU members {s['member']['miou']:.3f}, mode "
                f"{s['ensemble_mode']['miou']:.3f}"]
    return [f"   {key}: mean error {s['member']['mean_error']:.4g} {s['units']} (median {s['member']['median_error']:.4g}), "
            f"best-of-N {s['best_of_n']['mean_error']:.4g}"]


__all__ = [
    "DEFAULT_EXPERIMENTS", "EXPERIMENTS_BY_NAME", "UNCONDITIONAL", "ClassMapScores", "ClassSpectra", "EvalSettings",
    "Experiment", "ExperimentRun", "ImageScores", "ScalarScores", "complete_tiles", "cube_seam_ratios",
    "evaluate_tiles", "format_table", "held_out_units", "mae_ratios", "required_modalities", "run_experiment",
]
