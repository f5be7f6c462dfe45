"""``copgen train-bundled``: the recipe of the bundled model, from nothing to ``models/bundled`` in one command.

Stages, each skipped when a previous run finished it (so a rerun resumes where a crash stopped):

=========== =====================================================================================
world       the sample world (reused when its manifest matches the preset and seed)
preprocess  a training cube of every scene (regions = the scenes' bboxes), every Sentinel-2 L2A
            date, the ten image modalities; a private local STAC API serves the world meanwhile
vaes        one tiny VAE per image modality: ``copgen train-vae`` subprocesses, up to ``--jobs`` at
            once, niced; steps and batch by pixel size (see :data:`VAE_RECIPE`)
cache       the latent cache: VAE posterior moments of every sample (``transforms.dataset``)
backbone    ``copgen train`` from the cache with modality and condition dropout
bundle      the decoders' last work (synthesis refit of every shortcut VAE, decoder-only fine-tunes of
            :data:`pipelines.bundle_decoders.DECODER_FINETUNE`), then the fp16 bundle at ``--out`` (checked <=
            :data:`MAX_BUNDLE_BYTES`) with ``bundle.json``; ``--decoders-only`` redoes the decoder work
            on a finished bundle in place
=========== =====================================================================================

Everything but the bundle lives under ``--work``: ``train.zarr``, ``vaes/``, ``latents.safetensors``,
``backbone/`` (the fp32 run, resumable), ``logs/`` (one log per subprocess) and ``recipe.json`` (what
each stage did and how long it took). Only wiring: the work is done by ``copgen preprocess``'s job,
``copgen train-vae``, ``copgen train`` and :func:`copgen_core.bundle.save_bundle`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from copgen_core.modalities import BY_KEY, MODALITIES
from pipelines.bundle_decoders import apply_decoders, decoder_settings, refit_setting
from pipelines.cmd_train import BadInput

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "models" / "bundled"
STAC_API_SCRIPT = REPO / "infra" / "local" / "stac-api.sh"
IMAGE_KEYS: tuple[str, ...] = tuple(m.key for m in MODALITIES if m.is_image)
MAX_BUNDLE_BYTES = 30_000_000
"""The bundle ships in the repository: at most 30 MB (fp16 weights of the ten tiny VAEs and the backbone)."""
STAGES = ("world", "preprocess", "vaes", "cache", "backbone", "bundle")
RECIPE_FILE = "recipe.json"


@dataclass(frozen=True)
class VAEPhase:
    """One ``copgen train-vae`` run: ``steps`` at ``batch_size``, on random ``crop`` px crops or whole windows.

    ``steps_per_s`` is the measured speed of that run shape with one thread (two runs share the
    2-core development CPU); time per step grows about linearly with the batch.
    """

    steps: int
    batch_size: int
    crop: int | None
    steps_per_s: float

    def seconds(self) -> float:
        """Estimated seconds of this phase on one core."""
        return self.steps / self.steps_per_s


CROP_PX = 64
"""Crop of the 192 px VAEs' first phase: 9x fewer pixels per sample, so many more samples per second."""
CROP_SPEED = 1.3
FULL_192_SPEED = 0.35
VAE_RECIPE: dict[int, tuple[VAEPhase, ...]] = {
    192: (VAEPhase(150, 8, CROP_PX, CROP_SPEED), VAEPhase(20, 4, None, FULL_192_SPEED)),
    96: (VAEPhase(150, 8, None, 0.9),),
    64: (VAEPhase(150, 8, None, 2.0),),
    32: (VAEPhase(300, 8, None, 6.0),),
}
"""Default VAE phases by pixel size. The 192 px VAEs first train on 64 px crops, then fine-tune on
whole windows (their mid-block attention and GroupNorm see the whole latent at inference). With the
shortcut (:data:`VAE_SHORTCUT`) a VAE starts from its linear block code, and training adds little to
it: the S2 L2A 10 m VAE went from 26.7 dB at its start to 26.75 dB after 1,200 crop + 30 whole-window
steps (block synthesis, session 5), so the budgets are a third of the previous recipe's."""
VAE_EXTRA: dict[str, tuple[VAEPhase, ...]] = {
    "S2L2A_B02_B03_B04_B08": (VAEPhase(400, 8, CROP_PX, CROP_SPEED), VAEPhase(20, 4, None, FULL_192_SPEED)),
    "S2L1C_B02_B03_B04_B08": (VAEPhase(200, 8, CROP_PX, CROP_SPEED), VAEPhase(20, 4, None, FULL_192_SPEED)),
    "S2L1C_cloud_mask": (VAEPhase(100, 8, CROP_PX, CROP_SPEED), VAEPhase(10, 4, None, FULL_192_SPEED)),
}
"""Modalities whose budget differs from their pixel size's: the S2 L2A 10 m VAE (the one with a PSNR
target) gets the most, the cloud mask (four one-hot planes) the least."""
VAE_SHORTCUT = True
"""Every VAE gets the linear shortcut started from data (``train-vae --shortcut``: block-PCA analysis,
least-squares lapped synthesis, :func:`copgen_core.vae.init_block_pca`). The previous recipe's S2 L2A
10 m VAE scored 18.8 dB on the held-out windows; this start alone scores 26-27 dB (docs/training.md)."""
LATENT_STD = 0.5
"""Std of the scaled latents the backbone sees (``train-vae --latent-std``; official 1). The shortcut VAEs'
first latent channels are block means, spatially smooth (neighbour correlation 0.93), so at unit std the
schedule's last step (``sqrt(abar) = 0.068``) still shows a window's large-scale structure; a backbone then
learns to read it from the noise instead of generating it, and samples from pure noise come out as white
latent texture. Half the std lowers that signal four-fold (docs/training.md, *Latent scale*)."""
VAE_LR = 1e-3
"""Peak learning rate of the VAEs: a short run needs more than the tiny preset's 1e-4."""
VAE_FINETUNE_LR = 3e-4
"""Peak learning rate of a whole-window fine-tuning phase."""
VAE_OVERHEAD_S = 25.0
"""Per VAE: process start, validation and latent-scale passes (estimate)."""
BACKBONE_STEPS = 3000
BACKBONE_STEPS_PER_S = 2.3
"""Tiny backbone (max_grid 6, 294 tokens, local paths) from the latent cache at batch 8 on the development
CPU: 2.4-2.5 measured on an idle machine (2026-12-06: 3,000 steps in 17.5 min with the cache and start-up);
2.3 leaves a little room. 3,000 steps instead of sessions 8-10's 2,000 (session 11): static ratios 0.658 / 0.686 / 0.636 -> 0.632 / 0.671 /
0.605 in ``bench/backbone_trial.py`` with the paths below (docs/training.md)."""
BACKBONE_LR = 2e-3
BACKBONE_WARMUP = 100
BACKBONE_LR_DECAY = "poly"
"""The rate decays to 0 over the run after the warm-up (``copgen train --lr-decay poly``; session 9): static
ratios 0.862 / 0.905 / 0.853 -> 0.769 / 0.811 / 0.715 in ``bench/static_generation.py`` against the constant
rate (docs/training.md). Ties a run to its step count: another ``--backbone-steps`` trains again."""
BACKBONE_GRAD_CLIP = 1.0
BACKBONE_EMA_RATE = 0.995
"""EMA horizon of ~200 steps: with 0.999 a 1,000-step run would still be a third its initialisation."""
POSITION_INIT = "ground"
"""Image tokens' positional embeddings start from a shared ground-position code (copgen_core.training.init)."""
POSITION_SCALE = 0.5
"""RMS of that code (the train default)."""
ATTENTION_INIT = "random"
ATTENTION_SCALE = 0.3
"""Attention starts as the official random one: ``mimetic`` (with a 2.0 position code) did not help in
300-step trials, it raised the loss (docs/model-card.md)."""
MIN_SNR_GAMMA: float | None = None
TIMESTEP_SHIFT = 1.0
"""Training steps drawn uniformly (``copgen train --timestep-shift``; 3 helped less than LATENT_STD 0.5 in
1,000-step trials, docs/training.md)."""
TERMINAL_NOISE = 0.0
"""No pure-noise draws at n = 1000 (``--terminal-noise``; 0.1 changed little in a 1,000-step trial)."""
MODALITY_DROPOUT = 0.25
CONDITION_DROPOUT = 0.35
"""Per (sample, modality): marginalised (noise at t=1000) or given clean (t=0), as inference does."""
PREDICTION = "v"
"""v-parameterised heads: with ε heads the tiny model's x0 estimate at n = 1000 was 17x the latent
variance off and samples were noise (latent std 3.8 vs 0.94); with v it is below the variance."""
MAX_GRID = 6
"""10 m latents patched 4 x 4 onto the 20 m 6 x 6 lattice: 294 tokens instead of 834 (docs/training.md)."""
FINAL_CONV = True
"""A zero-initialised 3 x 3 convolution over each image modality's unpatchified output (``copgen train
--final-conv``): with 4 x 4 patches, generated windows showed the 6 x 6 token grid (docs/model-card.md)."""
LOCAL_PATH = ("S2L2A_B01_B09", "S2L2A_B02_B03_B04_B08", "S2L2A_B05_B06_B07_B11_B12_B8A")
LOCAL_WIDTH = 60
LOCAL_SELF = True
LOCAL_DEPTH = 3
"""Local conditioning paths (``copgen train --local-path --local-self --local-width 60 --local-depth 3``) for
the three S2 L2A groups: per latent cell, what the other modalities show at the same place, without the
4 x 4-cell token in between, and the target's own noisy latent over 7 x 7 cells, which removes most of the
6 x 6 token grid from generated windows (patches remain in some members). Session 10 gave paths of width 48 and depth 2 to the six S2 groups; session 11 spent the L1C
paths' bytes on wider, deeper L2A paths (20 m static ratio 0.709 -> 0.686 at 2,000 steps; the bundle must
stay under 30 MB) (docs/training.md)."""
GROUND_HEADS = 4
GROUND_SIGMA = 0.0278
"""Four of the tiny preset's four heads read the same ground from step 0 (sigma 1/36, 1/18, 1/9, 2/9 window)."""
ADAM_BETAS = "0.9,0.99"
"""Short runs learn conditioning much faster than with the official 0.99,0.99 (docs/training.md)."""
TASK_FRACTION = 0.6
TASK_TARGETS = "S2L2A_B01_B09,S2L2A_B02_B03_B04_B08,S2L2A_B05_B06_B07_B11_B12_B8A"
TASK_CONDITIONS = (
    "DEM_DEM,LULC_LULC,3d_cartesian_lat_lon,mean_timestamps",
    "DEM_DEM,LULC_LULC,3d_cartesian_lat_lon,mean_timestamps,S1RTC_vh_vv",
    "DEM_DEM,LULC_LULC,3d_cartesian_lat_lon,mean_timestamps,S1RTC_vh_vv,S2L1C_B01_B09_B10,S2L1C_B02_B03_B04_B08,"
    "S2L1C_B05_B06_B07_B11_B12_B8A",
    "",
)
"""Task samples: S2 L2A generated from the evaluation ladder's condition sets, or from nothing."""
PREPROCESS_S_PER_UNIT = 0.12
"""Seconds per window-date of the ten-modality training cube (913 in 102 s on the default world, load ~4)."""
CACHE_S_PER_SAMPLE = 0.5
COMPLETE_FRACTION = 0.25
"""About a fifth of the planned window-dates hold all ten modalities whole (227 of 1141 in the default world)."""
WORLD_S = {"default": 60.0, "small": 6.0}
BUNDLE_S = 900.0
"""The bundle stage: refitting the ten VAEs' synthesis (2.1 min measured), the S2 L2A 10 m decoder fine-tune
(2,000 steps, 11.6 min measured alone), held-out PSNR, fp16 write."""
API_S = 10.0


# -- the plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VAEJob:
    """The ``copgen train-vae`` runs of one modality, one after the other (each starts from the last)."""

    key: str
    phases: tuple[VAEPhase, ...]
    estimate_s: float

    @property
    def steps(self) -> int:
        """Optimiser steps over all phases."""
        return sum(p.steps for p in self.phases)


def vae_jobs(keys: Sequence[str], steps: int | None, batch_size: int | None) -> list[VAEJob]:
    """The VAE jobs, longest first (so ``--jobs`` parallel runs finish close together).

    ``steps``/``batch_size`` override every phase of :data:`VAE_RECIPE`/:data:`VAE_EXTRA` when given.
    """
    jobs = []
    for key in keys:
        phases = VAE_EXTRA.get(key) or VAE_RECIPE[BY_KEY[key].pixel_size]
        phases = tuple(VAEPhase(steps or p.steps, batch_size or p.batch_size, p.crop,
                                p.steps_per_s * p.batch_size / (batch_size or p.batch_size)) for p in phases)
        jobs.append(VAEJob(key, phases, sum(p.seconds() + VAE_OVERHEAD_S for p in phases)))
    return sorted(jobs, key=lambda j: (-j.estimate_s, j.key))


def _image_modalities(text: str | None) -> tuple[str, ...]:
    """``--modalities`` as image modality keys in canonical order (all ten when not given)."""
    if not text:
        return IMAGE_KEYS
    from copgen_core.modalities import canonical

    try:
        mods = canonical([m.strip() for m in text.split(",") if m.strip()])
    except KeyError as exc:
        raise BadInput(str(exc.args[0])) from exc
    scalars = [m.key for m in mods if not m.is_image]
    if scalars or not mods:
        raise BadInput(f"--modalities takes image modalities (location and date are always in the model), got "
                       f"{scalars or 'none'}")
    return tuple(m.key for m in mods)


def time_plan(*, world_cached: bool, preset: str, units: int, jobs: Sequence[VAEJob], parallel: int,
              backbone_steps: int, backbone_batch: int) -> dict[str, float]:
    """Estimated seconds per stage on an otherwise idle 2-core CPU (the reference speeds).

    The VAE runs share the machine: ``parallel`` runs overlap their start-up and evaluation passes,
    but the compute itself does not get faster than the whole machine's speed.
    """
    per_core = sum(j.estimate_s for j in jobs)
    return {
        "world": 0.0 if world_cached else WORLD_S.get(preset, 60.0),
        "preprocess": API_S + PREPROCESS_S_PER_UNIT * units,
        "vaes": per_core / max(1, min(parallel, os.cpu_count() or 1)),
        "cache": CACHE_S_PER_SAMPLE * units * COMPLETE_FRACTION,
        "backbone": backbone_steps * backbone_batch / 8.0 / BACKBONE_STEPS_PER_S + 30.0,
        "bundle": BUNDLE_S,
    }


def recipe_plan(manifest: Any, cfg: Any, jobs: Sequence[VAEJob], *, world_cached: bool, jobs_at_once: int = 2,
                backbone_steps: int = BACKBONE_STEPS, backbone_batch: int = 8) -> tuple[int, dict[str, float]]:
    """(window-dates to preprocess, :func:`time_plan`) of the recipe over ``manifest``'s world.

    ``cfg`` is the :func:`preprocess_config` of that world; ``manifest`` needs ``preset``, ``scenes``
    and ``dates`` (a :class:`sampleworld.WorldManifest`).
    """
    from pipelines.jobs import plan_windows

    units = len(plan_windows(cfg)) * len(manifest.dates["sentinel-2-l2a"])
    return units, time_plan(world_cached=world_cached, preset=manifest.preset, units=units, jobs=jobs,
                            parallel=min(jobs_at_once, 2), backbone_steps=backbone_steps,
                            backbone_batch=backbone_batch)


def _fmt_s(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


# -- the recipe record -----------------------------------------------------------------------------------


class Recipe:
    """``<work>/recipe.json``: one record per finished stage (seconds, identity of its result)."""

    def __init__(self, work: Path) -> None:
        self.path = work / RECIPE_FILE
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            self.stages = dict(json.loads(self.path.read_text()).get("stages", {}))

    def done(self, stage: str, identity: dict[str, Any]) -> dict[str, Any] | None:
        """The record of ``stage`` if it finished with this identity."""
        rec = self.stages.get(stage)
        return rec if rec is not None and rec.get("identity") == identity else None

    def record(self, stage: str, identity: dict[str, Any], seconds: float, **extra: Any) -> None:
        self.stages[stage] = {"identity": identity, "seconds": round(seconds, 1), **extra}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stages": self.stages}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


# -- stages ------------------------------------------------------------------------------------------------


def _world(world: Path, preset: str) -> tuple[Any, bool]:
    """The sample world (generated unless a current one is there, with or without TerraMesh)."""
    from sampleworld import default_terramesh_dir, generate_world, load_manifest
    from sampleworld.world import is_current

    terramesh = default_terramesh_dir()
    for candidate in dict.fromkeys((terramesh, None)):
        if is_current(world, preset=preset, seed=0, terramesh_dir=candidate):
            return load_manifest(world), True
    return generate_world(world, preset=preset, seed=0, terramesh_dir=terramesh), False


def preprocess_config(manifest: Any, stac_url: str, cube: Path, modalities: Sequence[str] = IMAGE_KEYS) -> Any:
    """The training cube's job: every scene bbox, every S2 L2A date, the image modalities, no overlap."""
    from pipelines.config import PreprocessConfig

    boxes = [[float(v) for v in s["bbox"]] for s in manifest.scenes]
    days = sorted(d[:10] for d in manifest.dates["sentinel-2-l2a"])
    return PreprocessConfig.model_validate({
        "stac_url": stac_url, "bbox": boxes[0], "regions": boxes[1:], "start": days[0], "end": days[-1],
        "output": str(cube), "modalities": list(modalities), "overlap_m": 0.0, "engine": "local"})


def _start_api(world: Path, state: Path) -> str:
    proc = subprocess.run(["bash", str(STAC_API_SCRIPT), "start", "--load", str(world), "--state", str(state),
                           "--owner-pid", str(os.getpid())], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise click.ClickException(f"the local STAC API did not start:\n{proc.stderr.strip()}\n"
                                   "Run `make setup` (it installs PostgreSQL + PostGIS) and retry, or pass --stac-url.")
    env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return env["STAC_API_URL"]


def _stop_api(state: Path) -> None:
    subprocess.run(["bash", str(STAC_API_SCRIPT), "stop", "--state", str(state)], capture_output=True,
                   stdin=subprocess.DEVNULL)


def _preprocess(cfg: Any) -> Any:
    from pipelines.jobs import JobError, run_preprocess

    try:
        report = run_preprocess(cfg, progress=False)
    except JobError as exc:
        raise click.ClickException(f"preprocessing the training cube failed: {exc}") from exc
    report.write(f"{cfg.output}.report.json")
    if not report.ok:
        raise click.ClickException(f"{report.summary()}\nrerun train-bundled to retry the failed windows "
                                   f"(report: {cfg.output}.report.json)")
    return report


NICENESS = 10
"""Training subprocesses run niced, so that an interactive machine stays usable."""


def _cli(*args: str) -> list[str]:
    """A niced ``copgen`` subcommand (``nice`` rather than ``preexec_fn``: the parent may hold torch threads)."""
    nice = shutil.which("nice")
    prefix = [nice, "-n", str(NICENESS)] if nice else []
    return [*prefix, sys.executable, "-m", "pipelines.cli", *args]


def _child_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class WorkPaths:
    """Where the recipe keeps its intermediate results under ``--work``."""

    work: Path
    cube_path: Path | None = None
    """The training cube when it lives elsewhere (``--backbone-only`` works in a subfolder of ``--work``)."""

    @property
    def cube(self) -> Path:
        return self.cube_path if self.cube_path is not None else self.work / "train.zarr"

    @property
    def vaes(self) -> Path:
        return self.work / "vaes"

    @property
    def cache(self) -> Path:
        return self.work / "latents.safetensors"

    @property
    def run(self) -> Path:
        return self.work / "backbone"

    @property
    def logs(self) -> Path:
        return self.work / "logs"


def _vae_state(run_dir: Path, phase: VAEPhase, spec_hash: str) -> str:
    """'done', 'resume' (an interrupted run) or 'fresh' for one VAE run directory.

    A finished run with other steps, batch, crop, shortcut or latent std, or trained on another cube, is deleted: the VAE
    learning rate decays over the run's length, so a run cannot be extended to another length.
    """
    info_path = run_dir / "training.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        data = info.get("data", {})
        same_cube = data.get("cube_spec_hash") == spec_hash
        shortcut = bool((data.get("architecture") or {}).get("shortcut", False))
        latent_std = float(info.get("latent_std", 1.0))
        if same_cube and (int(info.get("steps", -1)), data.get("batch_size"), data.get("crop"), shortcut,
                          latent_std) == (phase.steps, phase.batch_size, phase.crop, VAE_SHORTCUT, LATENT_STD):
            return "done"
        click.echo(f"  {run_dir} was trained {'with other settings' if same_cube else 'on another cube'}; deleting "
                   "it to train again")
        shutil.rmtree(run_dir)
        return "fresh"
    return "resume" if (run_dir / "train_state.pt").is_file() else "fresh"


def _phase_dir(paths: WorkPaths, job: VAEJob, index: int) -> Path:
    """Output directory of phase ``index`` (the last phase writes the recipe's VAE under ``vaes/``)."""
    return paths.vaes if index == len(job.phases) - 1 else paths.work / "vae-phases" / str(index)


def _run_vae_job(job: VAEJob, *, paths: WorkPaths, seed: int, threads: int, spec_hash: str,
                 stop: threading.Event) -> float:
    """Run (or resume, or skip) every phase of one VAE job; returns the seconds spent; raises on failure."""
    t0 = time.perf_counter()
    log_path = paths.logs / f"vae-{job.key}.log"
    upstream_trained = False
    for index, phase in enumerate(job.phases):
        out = _phase_dir(paths, job, index)
        state = _vae_state(out / job.key, phase, spec_hash)
        if upstream_trained and state != "fresh":  # it started from weights that no longer exist
            shutil.rmtree(out / job.key)
            state = "fresh"
        if state == "done":
            continue
        upstream_trained = True
        if stop.is_set():
            raise RuntimeError("not started: another VAE failed")
        args = ["train-vae", "--cube", str(paths.cube), "--modality", job.key, "--preset", "tiny",
                "--steps", str(phase.steps), "--batch-size", str(phase.batch_size), "--out", str(out),
                "--seed", str(seed), "--lr", str(VAE_LR if index == 0 else VAE_FINETUNE_LR), "--lr-decay", "poly",
                "--log-every", "25", "--latent-std", str(LATENT_STD)]
        if phase.crop is not None:
            args += ["--crop", str(phase.crop)]
        if VAE_SHORTCUT:
            args.append("--shortcut")
        if index > 0:
            args += ["--init-from", str(_phase_dir(paths, job, index - 1) / job.key)]
        if state == "resume":
            args.append("--resume")
        what = f"{phase.steps} steps at batch {phase.batch_size} on " + (
            f"{phase.crop} px crops" if phase.crop else "whole windows")
        click.echo(f"  vae {job.key}: {'resuming' if state == 'resume' else 'training'} {what}, log {log_path}")
        with open(log_path, "ab") as log:
            rc = subprocess.run(_cli(*args), cwd=REPO, env=_child_env(threads), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, check=False).returncode
        if rc != 0:
            raise RuntimeError(f"exit {rc}; see {log_path}")
    return time.perf_counter() - t0


def _train_vaes(jobs: list[VAEJob], *, paths: WorkPaths, seed: int, parallel: int,
                spec_hash: str) -> dict[str, dict[str, Any]]:
    """Run the VAE jobs, up to ``parallel`` at once; returns per modality steps, batch, PSNR, seconds.

    Each run is a niced ``copgen train-vae`` process with ``cores // parallel`` threads, logging to
    ``<work>/logs/vae-<key>.log``. After a failure no new run starts; the running ones finish.
    """
    threads = max(1, (os.cpu_count() or 2) // parallel)
    paths.logs.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}

    def work(job: VAEJob) -> None:
        try:
            seconds[job.key] = _run_vae_job(job, paths=paths, seed=seed, threads=threads, spec_hash=spec_hash,
                                            stop=stop)
        except RuntimeError as exc:
            stop.set()
            failed[job.key] = str(exc)
            click.echo(f"  vae {job.key}: FAILED ({exc})", err=True)
            return
        psnr = _vae_summary(paths.vaes / job.key).get("psnr")
        click.echo(f"  vae {job.key}: done in {_fmt_s(seconds[job.key])}"
                   + (f", validation PSNR {psnr:.2f} dB" if psnr is not None else ""))

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(work, jobs))
    if failed:
        raise click.ClickException(f"VAE training failed for {sorted(failed)}; fix the cause (logs in {paths.logs}) and "
                                   "rerun train-bundled: finished VAEs are kept, interrupted ones resume")
    return {j.key: {**_vae_summary(paths.vaes / j.key), "seconds": round(seconds.get(j.key, 0.0), 1),
                    "phases": [[p.steps, p.batch_size, p.crop] for p in j.phases]} for j in jobs}


def _vae_summary(run_dir: Path) -> dict[str, Any]:
    info = json.loads((run_dir / "training.json").read_text()) if (run_dir / "training.json").is_file() else {}
    evaluation = info.get("evaluation") or {}
    return {"steps": info.get("steps"), "batch_size": info.get("data", {}).get("batch_size"),
            "psnr": evaluation.get("psnr"), "scale_factor": info.get("scale_factor")}


def build_cache(paths: WorkPaths, modalities: Sequence[str], batch_size: int) -> int:
    """Encode every sample complete in all ``modalities`` once (``copgen train`` then finds the file).

    A cache left by other VAE weights or another cube is deleted and encoded again. Returns the sample count.
    """
    import torch

    from copgen_core.checkpoints import load_vae
    from transforms.dataset import (
        CubeDataset,
        DatasetError,
        check_cache_vaes,
        encode_latents,
        read_cache_metadata,
    )

    torch.set_num_threads(os.cpu_count() or 1)
    vaes = {k: load_vae(paths.vaes / k, k) for k in modalities}
    keys = [*modalities, "3d_cartesian_lat_lon", "mean_timestamps"]
    if paths.cache.exists():
        try:
            check_cache_vaes(paths.cache, vaes)
            CubeDataset(str(paths.cube), keys, split="all", latent_cache=paths.cache)
            return len(read_cache_metadata(paths.cache)["samples"])
        except DatasetError as exc:
            click.echo(f"  encoding the latent cache again: {exc}")
            paths.cache.unlink()
    try:
        dataset = CubeDataset(str(paths.cube), keys, split="all")
    except DatasetError as exc:
        raise click.ClickException(f"the training cube has no sample complete in all of {list(modalities)}: {exc}") from exc
    click.echo(f"  encoding {len(dataset)} samples (skipped, not complete in every modality: {dataset.skipped or 0})")
    encode_latents(dataset, vaes, paths.cache, batch_size=batch_size)
    return len(dataset)


def _stream(cmd: list[str], log_path: Path, prefix: str, env: dict[str, str]) -> int:
    """Run ``cmd``, echoing its output with ``prefix`` and appending it to ``log_path``; returns its exit code."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            text = line.decode(errors="replace").rstrip()
            if text and not text.startswith("checkpoint step"):
                click.echo(f"{prefix}{text}")
        return proc.wait()


def backbone_arguments(steps: int, modalities: Sequence[str] = IMAGE_KEYS) -> list[str]:
    """The recipe's ``copgen train`` settings (besides data, output and seed) for a bundle over ``modalities``.

    Task sampling keeps the targets and condition modalities the bundle has (location and date are
    always in); without an S2 L2A target it is left out.
    """
    # a smoke run shorter than the warm-up warms up over half of it, so a decayed rate has steps to decay over
    warmup = min(BACKBONE_WARMUP, steps // 2 if BACKBONE_LR_DECAY != "constant" else steps)
    args = ["--preset", "tiny", "--lr", str(BACKBONE_LR), "--warmup-steps", str(warmup),
            "--ema-rate", str(BACKBONE_EMA_RATE), "--modality-dropout", str(MODALITY_DROPOUT),
            "--condition-dropout", str(CONDITION_DROPOUT), "--grad-clip", str(BACKBONE_GRAD_CLIP),
            "--position-init", POSITION_INIT, "--position-scale", str(POSITION_SCALE),
            "--attention-init", ATTENTION_INIT, "--attention-scale", str(ATTENTION_SCALE)]
    if BACKBONE_LR_DECAY != "constant":
        args += ["--lr-decay", BACKBONE_LR_DECAY]
    if MIN_SNR_GAMMA is not None:
        args += ["--min-snr-gamma", str(MIN_SNR_GAMMA)]
    if TIMESTEP_SHIFT != 1.0:
        args += ["--timestep-shift", str(TIMESTEP_SHIFT)]
    if TERMINAL_NOISE:
        args += ["--terminal-noise", str(TERMINAL_NOISE)]
    args += ["--prediction", PREDICTION, "--max-grid", str(MAX_GRID), "--ground-heads", str(GROUND_HEADS), "--ground-sigma", str(GROUND_SIGMA),
             "--adam-betas", ADAM_BETAS]
    if FINAL_CONV:
        args += ["--final-conv"]
    have = {*modalities, "3d_cartesian_lat_lon", "mean_timestamps"}
    local = [k for k in LOCAL_PATH if k in have]
    if local:
        args += ["--local-path", ",".join(local), "--local-width", str(LOCAL_WIDTH), "--local-depth", str(LOCAL_DEPTH)]
        if LOCAL_SELF:
            args += ["--local-self"]

    def keep(text: str) -> str:
        return ",".join(k for k in text.split(",") if k in have)

    targets = keep(TASK_TARGETS)
    if TASK_FRACTION and targets:
        args += ["--task-fraction", str(TASK_FRACTION), "--task-targets", targets]
        for conditions in dict.fromkeys(keep(c) for c in TASK_CONDITIONS):
            args += ["--task-conditions", conditions]
    return args


def train_backbone(paths: WorkPaths, recipe: Recipe, backbone_id: dict[str, Any], *, steps: int, batch_size: int,
                    seed: int, modalities: Sequence[str]) -> dict[str, Any]:
    """``copgen train`` from the latent cache; resumes an interrupted run of the same identity (latents,
    settings, batch, seed), else starts over.

    With a constant rate after the warm-up, a run of the same identity but another step count is kept when
    its last checkpoint is at or before ``steps``: resume is exact, so a run stopped at step ``k`` *is* the
    ``k``-step run, and continuing it to ``steps`` is the ``steps``-step run. With a decayed rate
    (``BACKBONE_LR_DECAY``, the recipe since session 9) the rate depends on the run's length, so another step
    count trains again (:func:`_same_but_steps`).
    """
    started = recipe.stages.get("backbone-started", {}).get("identity")
    if paths.run.exists() and started != backbone_id:
        reached = _checkpoint_step(paths.run)
        if not (_same_but_steps(started, backbone_id) and reached is not None and reached <= steps):
            click.echo(f"  {paths.run} was trained on other latents or settings (or, with a decayed rate, to another "
                       "step count); deleting it to train again")
            shutil.rmtree(paths.run)
        else:
            click.echo(f"  continuing {paths.run} from its checkpoint at step {reached} to {steps} steps")
    recipe.record("backbone-started", backbone_id, 0.0)
    info_path = paths.run / "bundle.json"
    if info_path.is_file() and int(json.loads(info_path.read_text()).get("steps", -1)) == steps:
        return {}
    args = ["train", "--cube", str(paths.cube), "--vae-dir", str(paths.vaes), *backbone_arguments(steps, modalities),
            "--steps", str(steps), "--batch-size", str(batch_size),
            "--latent-cache", str(paths.cache), "--out", str(paths.run), "--seed", str(seed), "--log-every", "50"]
    if (paths.run / "train_state.pt").is_file():
        args.append("--resume")
    paths.logs.mkdir(parents=True, exist_ok=True)
    rc = _stream(_cli(*args), paths.logs / "backbone.log", "  ", _child_env(os.cpu_count() or 1))
    if rc != 0:
        raise click.ClickException(f"backbone training failed (exit {rc}); see {paths.logs / 'backbone.log'}, fix the "
                                   "cause and rerun train-bundled (it resumes from the last checkpoint)")
    return {}


def _same_but_steps(started: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Whether two backbone identities differ at most in their step count (both past the warm-up), with a
    constant rate after the warm-up (a decayed rate depends on the run's length, so a run cannot be continued
    to another one)."""
    if started is None or min(int(started.get("steps", 0)), int(wanted["steps"])) < BACKBONE_WARMUP:
        return False
    if any("--lr-decay" in d.get("settings", ()) for d in (started, wanted)):
        return False
    return {k: v for k, v in started.items() if k != "steps"} == {k: v for k, v in wanted.items() if k != "steps"}


def _checkpoint_step(run: Path) -> int | None:
    """Step of the training state saved in ``run`` (None without one)."""
    from copgen_core.training.state import load_state

    path = run / "train_state.pt"
    return int(load_state(path)["opt"]["step"]) if path.is_file() else None


def _bundle_current(out: Path, training: dict[str, Any]) -> bool:
    """Whether ``out`` is already the fp16 bundle of this backbone run."""
    meta_path = out / "bundle.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text())
    recipe = meta.get("recipe") or {}
    run = recipe.get("backbone_training") or {}
    return (bool(run) and run.get("backbone_sha256") == training.get("backbone_sha256")
            and recipe.get("synthesis_refit") == refit_setting()
            and recipe.get("decoder_finetune", {}) == decoder_settings())


def _bundle_info(*, world_id: dict[str, Any], spec_hash: str, paths: WorkPaths, training: dict[str, Any],
                 samples: int | None, stage_seconds: dict[str, float], vaes: dict[str, Any], seed: int, steps: int,
                 batch_size: int, jobs: int) -> dict[str, Any]:
    """The bundle's ``bundle.json`` provenance: command, seed, steps, data identity, time per stage."""
    from pipelines.cmd_train import provenance

    config = recipe_config(batch_size, jobs)
    from transforms.cube import load_spec

    data = {"world": world_id, "cube": str(paths.cube), "cube_spec_hash": spec_hash,
            "cube_content_hash": load_spec(str(paths.cube)).content_hash, "samples": samples,
            "split": training.get("data", {}).get("split")}
    recipe = {"stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items()},
              "total_seconds": round(sum(stage_seconds.values()), 1), "vaes": vaes,
              "backbone_run": str(paths.run), "backbone_training": training}
    return provenance("bundle", seed=seed, steps=steps, config=config, data=data, history=[],
                      evaluation=training.get("evaluation"),
                      extra={"name": "copgen-bundled", "weights_dtype": "float16", "recipe": recipe,
                             "description": "tiny COP-GEN (1.7 M-parameter backbone, ten tiny VAEs) trained on the "
                                            "sample world by copgen train-bundled; see docs/model-card.md"})


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _write_bundle(run_dir: Path, out: Path, info: dict[str, Any], cube: Path) -> int:
    """The decoder work (:func:`pipelines.bundle_decoders.apply_decoders`), then the fp16 bundle next to ``out``, size-checked, swapped in.

    Returns the size in bytes; ``info["recipe"]`` gets ``synthesis_refit``, ``decoder_finetune`` and each
    changed VAE's held-out PSNR and noise edge ratio (``vaes.<key>.psnr_bundled``, ``.noise_edge_ratio``).
    """
    from copgen_core.checkpoints import load_backbone, load_vae

    backbone = load_backbone(run_dir / "backbone")
    vaes = {k: load_vae(run_dir / "vae" / k, k) for k in sorted(p.name for p in (run_dir / "vae").iterdir())}
    apply_decoders(vaes, cube, info)
    save_checked(out, backbone, vaes, info)
    return _dir_bytes(out)


def save_checked(out: Path, backbone: Any, vaes: dict[str, Any], info: dict[str, Any]) -> None:
    """Write the fp16 bundle next to ``out``, check its size, record it, then swap it in (atomic rename)."""
    import torch

    from copgen_core.bundle import BUNDLE_FILE, save_bundle

    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_bundle(tmp, backbone, vaes, info=info, dtype=torch.float16)
    size = _dir_bytes(tmp)
    if size > MAX_BUNDLE_BYTES:
        raise click.ClickException(f"the bundle is {size / 1e6:.1f} MB, over the {MAX_BUNDLE_BYTES / 1e6:.0f} MB the "
                                   f"repository can ship (left in {tmp}); use fewer or smaller VAEs")
    meta = json.loads((tmp / BUNDLE_FILE).read_text())
    meta["size_bytes"] = size
    (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def recipe_config(batch_size: int, jobs: int) -> dict[str, Any]:
    """The recipe settings ``bundle.json`` records under ``config``."""
    return {"vae_lr": VAE_LR, "vae_lr_decay": "poly", "backbone_lr": BACKBONE_LR, "backbone_lr_decay": BACKBONE_LR_DECAY,
            "backbone_warmup_steps": BACKBONE_WARMUP, "backbone_ema_rate": BACKBONE_EMA_RATE,
            "backbone_grad_clip": BACKBONE_GRAD_CLIP, "position_init": POSITION_INIT,
            "position_scale": POSITION_SCALE, "attention_init": ATTENTION_INIT, "attention_scale": ATTENTION_SCALE,
            "min_snr_gamma": MIN_SNR_GAMMA, "vae_finetune_lr": VAE_FINETUNE_LR, "latent_std": LATENT_STD,
            "timestep_shift": TIMESTEP_SHIFT, "terminal_noise": TERMINAL_NOISE,
            "modality_dropout": MODALITY_DROPOUT, "condition_dropout": CONDITION_DROPOUT,
            "backbone_batch_size": batch_size, "jobs": jobs, "preset": "tiny", "prediction": PREDICTION,
            "max_grid": MAX_GRID, "final_conv": FINAL_CONV,
            "local_path": list(LOCAL_PATH), "local_width": LOCAL_WIDTH,
            "local_self": LOCAL_SELF, "local_depth": LOCAL_DEPTH, "ground_heads": GROUND_HEADS, "ground_sigma": GROUND_SIGMA, "adam_betas": ADAM_BETAS,
            "task_fraction": TASK_FRACTION, "task_targets": TASK_TARGETS, "task_conditions": list(TASK_CONDITIONS)}


def _check_out(out: Path) -> None:
    """Refuse to replace anything at ``--out`` but a bundle this recipe wrote."""
    if not out.exists():
        return
    meta_path = out / "bundle.json"
    recipe = json.loads(meta_path.read_text()).get("recipe") if meta_path.is_file() else None
    if recipe is None and any(out.iterdir()):
        raise BadInput(f"--out {out} holds something that is not a bundle written by train-bundled; choose another "
                       "--out or move it away")


def _run_stage(name: str, recipe: Recipe, identity: dict[str, Any], action: Callable[[], dict[str, Any]],
               seconds: dict[str, float], *, present: bool = True) -> dict[str, Any]:
    """Run ``action`` unless ``recipe`` records the stage done with ``identity`` and its result is ``present``.

    Returns the stage's record; ``seconds[name]`` is this run's time (0 when skipped).
    """
    done = recipe.done(name, identity)
    if done is not None and present:
        click.echo(f"[{name}] done before (in {_fmt_s(float(done.get('seconds', 0.0)))}); skipped")
        seconds[name] = 0.0
        return done
    click.echo(f"[{name}]")
    t0 = time.perf_counter()
    extra = action()
    seconds[name] = time.perf_counter() - t0
    recipe.record(name, identity, seconds[name], **extra)
    return recipe.stages[name]


def _training_cube(work: Path, flag: str) -> Path:
    """The training cube under ``work`` that ``flag`` needs; BadInput naming the command that makes it."""
    cube = WorkPaths(work).cube
    if not cube.is_dir():
        raise BadInput(f"{flag} needs the training cube {cube}; run `copgen train-bundled --until "
                       "preprocess` (same --world/--work) first")
    return cube


@click.command("train-bundled")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT,
              show_default="<repository>/models/bundled",
              help="the bundle directory ('--model bundled' resolves to models/bundled).")
@click.option("--world", type=click.Path(file_okay=False, path_type=Path), default=Path("out/world"),
              show_default=True, help="sample world folder (generated there unless a matching one exists).")
@click.option("--preset", type=click.Choice(["default", "small"]), default="default", show_default=True,
              help="sample-world preset ('small' for smoke runs).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("out/train-bundled"),
              show_default=True, help="cube, VAEs, latent cache, backbone run, logs and the stage record.")
@click.option("--vae-steps", type=click.IntRange(min=1), default=None,
              help="steps of every VAE [default: by pixel size, 150 crop + 20 whole-window steps at 192 px ... 300 at 32 px].")
@click.option("--vae-batch-size", type=click.IntRange(min=1), default=None,
              help="batch of every VAE [default: 4 at 192 px, else 8].")
@click.option("--backbone-steps", type=click.IntRange(min=1), default=BACKBONE_STEPS, show_default=True,
              help="backbone optimiser steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="backbone batch.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="seed of every training run.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="VAE trainings run at once (each gets cores/jobs threads).")
@click.option("--stac-url", default=None,
              help="use this STAC API (it must serve the world) instead of starting a private local one.")
@click.option("--modalities", default=None,
              help="comma-separated image modalities of the bundle [default: all ten] (smaller bundles, smoke runs).")
@click.option("--until", type=click.Choice(STAGES), default="bundle", show_default=True,
              help="stop after this stage (a later run continues from there).")
@click.option("--decoders-only", "decoders_only", is_flag=True,
              help="only redo the bundle stage's decoder work on the bundle at --out, in place, with the recipe's "
                   "current settings: the decoder fine-tunes it lacks, then the synthesis refit (encoders and backbone "
                   "unchanged; needs the training cube under --work: run --until preprocess first).")
@click.option("--backbone-only", "backbone_only", is_flag=True,
              help="only train the backbone of the bundle at --out again, in place, with the recipe's current backbone "
                   "settings and latent std (its VAEs keep their weights; needs the training cube under --work: run "
                   "--until preprocess first).")
def command(out: Path, world: Path, preset: str, work: Path, vae_steps: int | None, vae_batch_size: int | None,
            backbone_steps: int, batch_size: int, seed: int, jobs: int, stac_url: str | None, modalities: str | None,
            until: str, decoders_only: bool, backbone_only: bool) -> None:
    """Train the bundled model end to end: world -> cube -> 10 VAEs -> backbone -> fp16 bundle.

    \b
    Example (about 35 minutes on an idle 2-core CPU; see docs/model-card.md):
      copgen train-bundled                       # writes models/bundled
      copgen train-bundled --preset small --vae-steps 2 --backbone-steps 2 --out /tmp/b   # smoke run
      copgen train-bundled --decoders-only       # new decoder settings for models/bundled, no retraining
      copgen train-bundled --backbone-only       # new backbone settings for models/bundled, same VAE weights

    A rerun skips every finished stage (recorded in <work>/recipe.json) and resumes interrupted
    trainings from their checkpoints. Exit codes: 0 done; 1 a stage failed; 2 bad input.
    """
    t_start = time.perf_counter()
    keys = _image_modalities(modalities)
    out, world, work = out.resolve(), world.resolve(), work.resolve()
    _check_out(out)
    if decoders_only and backbone_only:
        raise BadInput("give --decoders-only or --backbone-only, not both")
    from pipelines.bundle_redo import redo_backbone, redo_decoders

    if backbone_only:
        cube = _training_cube(work, "--backbone-only")
        click.echo(f"[backbone] the backbone of {out}, trained again on {cube} ({backbone_steps} steps)")
        record = redo_backbone(out, work, steps=backbone_steps, batch_size=batch_size, seed=seed)
        click.echo("the bundle already has the current backbone settings" if record is None else
                   f"new backbone in {out} ({_fmt_s(time.perf_counter() - t_start)})")
        return
    if decoders_only:
        cube = _training_cube(work, "--decoders-only")
        click.echo(f"[bundle] the decoders of {out}, trained again on {cube}")
        fits = redo_decoders(out, cube)
        click.echo(f"{len(fits)} VAE decoder(s) changed in {_fmt_s(time.perf_counter() - t_start)}"
                   + (": " + ", ".join(f"{k} {v.get('psnr_bundled', float('nan')):.2f} dB" for k, v in fits.items())
                      if fits else " (the bundle already has the current decoder settings)"))
        return
    work.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(work)
    seconds: dict[str, float] = {}
    paths = WorkPaths(work)

    click.echo(f"[world] {preset} sample world in {world}")
    t0 = time.perf_counter()
    manifest, world_cached = _world(world, preset)
    seconds["world"] = time.perf_counter() - t0
    world_id = {"preset": manifest.preset, "seed": manifest.seed, "config_hash": manifest.config_hash}
    if not world_cached or recipe.done("world", world_id) is None:
        recipe.record("world", world_id, seconds["world"], reused=world_cached)
    if until == "world":
        return _stopped("world")

    cfg = preprocess_config(manifest, stac_url or "http://127.0.0.1:0", paths.cube, keys)
    vjobs = vae_jobs(keys, vae_steps, vae_batch_size)
    units, plan = recipe_plan(manifest, cfg, vjobs, world_cached=world_cached, jobs_at_once=jobs,
                              backbone_steps=backbone_steps, backbone_batch=batch_size)
    click.echo(f"time plan ({units} window-dates; reference speeds of an idle 2-core CPU; finished stages are "
               "skipped):")
    for name in STAGES:
        click.echo(f"  {name:<11} ~{_fmt_s(plan[name])}")
    click.echo(f"  {'total':<11} ~{_fmt_s(sum(plan.values()))}")

    cube_id = {"world": world_id, "modalities": list(keys)}

    def preprocess() -> dict[str, Any]:
        before = recipe.stages.get("preprocess", {}).get("identity")
        if before is not None and before != cube_id and paths.cube.exists():
            click.echo(f"  {paths.cube} holds another world or modalities; deleting it to preprocess again")
            shutil.rmtree(paths.cube)
        state = work / ".services" / "stac-api"
        url = stac_url or _start_api(world, state)
        try:
            report = _preprocess(cfg.model_copy(update={"stac_url": url}))
        finally:
            if stac_url is None:
                _stop_api(state)
        click.echo(f"  {report.summary().splitlines()[0]}")
        return {"windows_planned": report.planned}

    _run_stage("preprocess", recipe, cube_id, preprocess, seconds, present=paths.cube.is_dir())
    from transforms.cube import load_spec

    spec_hash = load_spec(str(paths.cube)).spec_hash
    if until == "preprocess":
        return _stopped("preprocess")

    vae_id = {"cube_spec_hash": spec_hash, "seed": seed, "lr": VAE_LR,
              "runs": {j.key: [[p.steps, p.batch_size, p.crop] for p in j.phases]
                       for j in sorted(vjobs, key=lambda j: j.key)}}
    vae_record = _run_stage(
        "vaes", recipe, vae_id,
        lambda: {"vaes": _train_vaes(vjobs, paths=paths, seed=seed, parallel=jobs, spec_hash=spec_hash)},
        seconds, present=all((paths.vaes / k / "training.json").is_file() for k in keys))
    if until == "vaes":
        return _stopped("vaes")

    cache_id = {"vaes": vae_id}
    cache_record = _run_stage("cache", recipe, cache_id,
                              lambda: {"samples": build_cache(paths, keys, batch_size)}, seconds,
                              present=paths.cache.is_file())
    if until == "cache":
        return _stopped("cache")

    backbone_id = {"cache": cache_id, "steps": backbone_steps, "batch_size": batch_size, "seed": seed,
                   "settings": backbone_arguments(backbone_steps, keys)}
    _run_stage("backbone", recipe, backbone_id,
               lambda: train_backbone(paths, recipe, backbone_id, steps=backbone_steps, batch_size=batch_size,
                                       seed=seed, modalities=keys),
               seconds, present=(paths.run / "bundle.json").is_file())
    if until == "backbone":
        return _stopped("backbone")

    training = json.loads((paths.run / "bundle.json").read_text())
    if _bundle_current(out, training):
        click.echo(f"[bundle] {out} already holds this backbone run; skipped")
        return
    stage_seconds = {name: float(recipe.stages.get(name, {}).get("seconds", 0.0)) for name in STAGES[:-1]}
    info = _bundle_info(world_id=world_id, spec_hash=spec_hash, paths=paths, training=training,
                        samples=cache_record.get("samples"), stage_seconds=stage_seconds,
                        vaes=vae_record.get("vaes") or {}, seed=seed, steps=backbone_steps,
                        batch_size=batch_size, jobs=jobs)
    click.echo(f"[bundle] fp16 -> {out}")
    t0 = time.perf_counter()
    size = _write_bundle(paths.run, out, info, paths.cube)
    seconds["bundle"] = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    click.echo(f"wrote bundle {out}: {size / 1e6:.2f} MB (limit {MAX_BUNDLE_BYTES / 1e6:.0f} MB)")
    click.echo("wall time per stage in this run (0 s = done before): "
               + ", ".join(f"{k} {_fmt_s(v)}" for k, v in seconds.items()) + f"; total {_fmt_s(total)}")


def _stopped(stage: str) -> None:
    click.echo(f"stopped after the {stage} stage (--until); run again without --until to continue")


if __name__ == "__main__":
    command()
