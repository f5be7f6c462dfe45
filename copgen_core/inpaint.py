"""Gap filling with COP-GEN: generate only what is missing, keep every observed pixel.

A modality can be known *in part* (the clear pixels of a cloudy Sentinel-2 image). COP-GEN has one
diffusion timestep per modality, so a modality cannot be half clean and half noisy in the backbone's
eyes (model notes §8). :func:`inpaint` therefore generates such a modality as a target and, at every
state the solver forms, replaces its known latent cells by the known latent re-noised to the current
time (replacement / RePaint-style conditioning):

    x_known(t) = alpha(t) z0 + sigma(t) eps

``z0`` is the VAE encoding of the observed image (missing pixels filled first, see below) and ``eps``
is the modality's own initial noise, drawn per (seed, key, member, modality) as in
:meth:`~copgen_core.generate.CopgenModel.generate`, so results do not depend on the batch. The backbone
sees the known cells at the same noise level as the cells being generated and shapes the unknown
cells to fit them; with ``resample > 1`` each stretch of ``jump_steps`` solver steps is run again
after re-noising back to its start (RePaint's time travel), which lets the generated region
harmonise with the known one at the cost of ``resample`` times the model calls.

Roles: ``conditions`` (fully known, clean latents at t = 0), ``partial`` (known in part, gap-filled),
``targets`` (not observed at all: band infilling, generated whole), and every other modality of the
model marginalised (held at pure noise, as in ``generate``).

**Filling before encoding.** The VAE encoder mixes neighbouring pixels (3 x 3 convolutions over three
downsamplings, and a global attention block), so even a latent cell whose 8 x 8 pixels are all known
depends on the missing pixels around it, and the encoder refuses NaN anyway. ``fill="smooth"`` (default)
continues the known image into the gaps with a pull-push (multi-scale masked average) fill: no step
edge at the gap border, which would otherwise be encoded into the known boundary cells as a fake
feature; values stay within the range of the known pixels. ``fill="mean"`` uses the per-band mean of
the known pixels (flat patches). Both work in the normalised (VAE input) space.

**Latent mask.** A latent cell is known when all 8 x 8 pixels it covers are known (``latent_rule="all"``,
default; cells touching a gap are regenerated), or known with weight = its fraction of known pixels
(``"fraction"``: a soft blend). Whatever the rule, :func:`composite` puts the observed pixels back
bit for bit; the generated pixels only fill the gaps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from copgen_core.generate import (
    PRECISIONS,
    ConditionEncoding,
    CopgenModel,
    JointDenoiser,
    _as_numpy,
    _batch_size,
    _check_condition,
    physical_shape,
    resolve_sample_keys,
)
from copgen_core.modalities import VAE_DOWNSAMPLE, Kind, Modality, resolve
from copgen_core.normalize import normalize
from copgen_core.normalize_common import Mode
from copgen_core.sampler import Method, Spacing, StepHook, sample_dpmpp, time_grid
from copgen_core.schedule import DiscreteVPSchedule
from copgen_core.seeding import SampleKey, sample_noise

InpaintMethod = Literal["repaint", "none"]
FillMethod = Literal["smooth", "mean"]
LatentRule = Literal["all", "fraction"]

PARTIAL_KINDS = (Kind.S2, Kind.S1, Kind.DEM)
"""Kinds that can be gap-filled (continuous images); class maps are conditions or targets."""


# ------------------------------------------------------------------------------------- building blocks


def fill_missing(x: Tensor, known: Tensor, method: FillMethod = "smooth") -> Tensor:
    """Fill the unknown pixels of images from their known ones; known pixels are returned unchanged.

    Parameters
    ----------
    x:
        (N, C, H, W) float images; values at unknown pixels are ignored (may be NaN).
    known:
        (N, H, W) bool, True where the pixel is known (all channels).
    method:
        ``"smooth"``: pull-push. Masked sums are pooled 2 x 2 until every coarse pixel has a known
        contribution, then each level is filled, from the coarsest, with the bilinear upsampling of the
        level above where it has no known pixel. Every filled value is a weighted mean of known values.
        ``"mean"``: the per-(sample, channel) mean of the known pixels.

    Returns
    -------
    Tensor
        (N, C, H, W) same dtype; a sample without any known pixel is all zeros.

    Raises
    ------
    ValueError
        On mismatched shapes or an unknown method.
    """
    if x.dim() != 4 or known.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"fill_missing needs x (N, C, H, W) and known (N, H, W), got {tuple(x.shape)} and "
                         f"{tuple(known.shape)}")
    k = known[:, None].to(torch.bool)
    w = k.to(x.dtype)
    s = torch.where(k, x, torch.zeros((), dtype=x.dtype))
    if method == "mean":
        count = w.sum(dim=(-2, -1), keepdim=True)
        mean = s.sum(dim=(-2, -1), keepdim=True) / count.clamp_min(1.0)
        return torch.where(k, x, mean.expand_as(x))
    if method != "smooth":
        raise ValueError(f"unknown fill method {method!r}; use 'smooth' or 'mean'")
    levels = [(s, w)]
    while bool((w == 0).any()) and min(w.shape[-2:]) > 1:
        s = F.avg_pool2d(s, 2, ceil_mode=True, divisor_override=1)
        w = F.avg_pool2d(w, 2, ceil_mode=True, divisor_override=1)
        levels.append((s, w))
    s, w = levels[-1]
    value = torch.where(w > 0, s / w.clamp_min(1e-30), torch.zeros((), dtype=x.dtype))
    for s, w in reversed(levels[:-1]):
        up = F.interpolate(value, size=tuple(s.shape[-2:]), mode="bilinear", align_corners=False)
        value = torch.where(w > 0, s / w.clamp_min(1e-30), up)
    return torch.where(k, x, value)


def latent_weights(missing: Tensor, factor: int = VAE_DOWNSAMPLE, rule: LatentRule = "all") -> Tensor:
    """Per latent cell, how much of it is known, from a pixel mask.

    Parameters
    ----------
    missing:
        (N, H, W) bool, True where the pixel is missing; H and W multiples of ``factor``.
    factor:
        Pixels per latent cell along each side (the VAE's 8).
    rule:
        ``"all"``: 1.0 where all factor x factor pixels are known, else 0.0. ``"fraction"``: the known
        fraction in [0, 1].

    Returns
    -------
    Tensor
        (N, 1, H / factor, W / factor) float32.

    Raises
    ------
    ValueError
        On a bad shape or rule.
    """
    if missing.dim() != 3 or missing.shape[1] % factor or missing.shape[2] % factor:
        raise ValueError(f"missing must be (N, H, W) with H, W multiples of {factor}, got {tuple(missing.shape)}")
    n, h, w = missing.shape
    blocks = missing.to(torch.bool).reshape(n, h // factor, factor, w // factor, factor)
    if rule == "all":
        return (~blocks.any(dim=4).any(dim=2)).to(torch.float32)[:, None]
    if rule == "fraction":
        return (~blocks).to(torch.float32).mean(dim=(2, 4))[:, None]
    raise ValueError(f"unknown latent rule {rule!r}; use 'all' or 'fraction'")


def renoise(x: Tensor, t_from: Tensor | float, t_to: Tensor | float, noise: Tensor,
            schedule: DiscreteVPSchedule) -> Tensor:
    """Diffuse a state forward from ``t_from`` to the noisier ``t_to``: a draw of q(x_to | x_from).

    ``x_to = r x + sqrt(1 - r^2) noise`` with ``r = alpha(t_to) / alpha(t_from)``; if x has marginal
    alpha(t_from) z + sigma(t_from) eps, the result has marginal alpha(t_to) z + sigma(t_to) eps'.

    Raises
    ------
    ValueError
        If ``t_to`` is not later (noisier) than ``t_from``, or the noise has another shape.
    """
    a_from = schedule.alpha(torch.as_tensor(t_from, dtype=torch.float32))
    a_to = schedule.alpha(torch.as_tensor(t_to, dtype=torch.float32))
    if not bool((a_to <= a_from).all()):
        raise ValueError(f"renoise goes to a noisier time: need t_to >= t_from, got {t_from} -> {t_to}")
    if noise.shape != x.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, the state {tuple(x.shape)}")
    r = (a_to / a_from).to(device=x.device, dtype=x.dtype)
    return r * x + torch.sqrt(1.0 - r * r) * noise.to(x.dtype)


class KnownLatentHook:
    """A sampler ``step_hook`` that imposes known latent cells, re-noised to the state's time.

    For each partial modality, the state's latent becomes ``w * (alpha(t) z0 + sigma(t) eps) + (1 - w) *
    latent`` (exactly the re-noised known latent where w = 1, untouched where w = 0).

    Parameters
    ----------
    denoiser:
        Gives the flat state's layout (:meth:`JointDenoiser.unpack` / ``pack``).
    known:
        Per partial key, the clean known latent z0 (R, c, h, w).
    weights:
        Per partial key, (R, 1, h, w) in [0, 1].
    noise:
        Per partial key, the fixed eps (R, c, h, w).
    schedule:
        Gives alpha(t) and sigma(t).
    """

    def __init__(self, denoiser: JointDenoiser, known: Mapping[str, Tensor], weights: Mapping[str, Tensor],
                 noise: Mapping[str, Tensor], schedule: DiscreteVPSchedule) -> None:
        self.denoiser = denoiser
        self.known = dict(known)
        self.weights = dict(weights)
        self.noise = dict(noise)
        self.schedule = schedule

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        alpha = self.schedule.alpha(t).to(x.dtype).reshape(-1, 1, 1, 1)
        sigma = self.schedule.sigma(t).to(x.dtype).reshape(-1, 1, 1, 1)
        latents = self.denoiser.unpack(x)
        for key, z0 in self.known.items():
            w = self.weights[key].to(x.dtype)
            current = latents[key]
            imposed = alpha * z0.to(x.dtype) + sigma * self.noise[key].to(x.dtype)
            blend = w * imposed + (1.0 - w) * current
            latents[key] = torch.where(w >= 1.0, imposed, torch.where(w <= 0.0, current, blend))
        return self.denoiser.pack(latents)


class Composite(NamedTuple):
    """Observed pixels with the generated ones in the gaps.

    Attributes
    ----------
    values:
        (B, members, C, H, W): the observation bit for bit where it was observed, the generated
        values where it was missing.
    filled:
        (B, H, W) bool: True exactly where ``values`` holds generated pixels (all channels, all members).
    """

    values: np.ndarray
    filled: np.ndarray


def composite(observed: np.ndarray, generated: np.ndarray, missing: np.ndarray) -> Composite:
    """Put the observed pixels back into generated images.

    Parameters
    ----------
    observed:
        (B, C, H, W) observation in physical units (anything at missing pixels, e.g. NaN).
    generated:
        (B, members, C, H, W) generated values, same units.
    missing:
        (B, H, W) bool, True where the observation is missing.

    Returns
    -------
    Composite
        ``values`` in the common dtype of the inputs (observed float32 and uint16 keep their exact
        values), ``filled`` a copy of ``missing``.

    Raises
    ------
    ValueError
        On mismatched shapes.
    """
    obs = np.asarray(observed)
    gen = np.asarray(generated)
    miss = np.asarray(missing)
    if gen.ndim != 5 or obs.shape != gen.shape[:1] + gen.shape[2:]:
        raise ValueError(f"generated must be (B, members, C, H, W) matching observed (B, C, H, W); got "
                         f"{gen.shape} and {obs.shape}")
    if miss.dtype != np.bool_ or miss.shape != obs.shape[:1] + obs.shape[2:]:
        raise ValueError(f"missing must be bool (B, H, W) = {obs.shape[:1] + obs.shape[2:]}, got {miss.dtype} "
                         f"{miss.shape}")
    dtype = np.result_type(obs.dtype, gen.dtype)
    values = np.where(miss[:, None, None], gen.astype(dtype, copy=False), obs[:, None].astype(dtype, copy=False))
    return Composite(values, miss.copy())


# ------------------------------------------------------------------------------------- the entry point


@dataclass(frozen=True)
class InpaintResult:
    """What :func:`inpaint` returns.

    Attributes
    ----------
    outputs:
        Denormalised values per generated key (partial and targets), (B, members, ...) as in
        :class:`~copgen_core.generate.GenerationResult`; empty with ``decode=False``.
    observed:
        Per partial key, the observation as given, (B, C, H, W) numpy.
    missing:
        Per partial key, the pixel mask as given, bool (B, H, W) (True = missing).
    known_latents:
        Per partial key, the encoded filled observation z0 (B, c, h, w), CPU float32.
    latent_weights:
        Per partial key, how strongly each latent cell was imposed, (B, h, w) in [0, 1], CPU.
    latents:
        Final latents per generated key (B, members, c, h, w), CPU, when asked for.
    keys, members, notes, settings:
        As in ``GenerationResult``.
    """

    outputs: dict[str, np.ndarray]
    observed: dict[str, np.ndarray]
    missing: dict[str, np.ndarray]
    known_latents: dict[str, Tensor]
    latent_weights: dict[str, Tensor]
    latents: dict[str, Tensor] | None
    keys: tuple[SampleKey, ...]
    members: int
    notes: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.outputs[resolve(name).key]

    def composite(self, name: str) -> Composite:
        """Observed pixels of a partial modality kept bit for bit, generated ones in its gaps.

        Raises
        ------
        ValueError
            If ``name`` was not a partial modality or the run did not decode.
        """
        key = resolve(name).key
        if key not in self.observed:
            raise ValueError(f"{key} was not a partial modality of this run (partial: {sorted(self.observed)})")
        if key not in self.outputs:
            raise ValueError(f"{key} was not decoded; run inpaint(..., decode=True) to composite it")
        return composite(self.observed[key], self.outputs[key], self.missing[key])


def _partial_inputs(
    modality: Modality, value: object, mask: object
) -> tuple[np.ndarray, np.ndarray]:
    key = modality.key
    if modality.kind not in PARTIAL_KINDS:
        raise ValueError(
            f"{key} cannot be partial: gap filling applies to S2, S1 and DEM images; give it whole as a "
            "condition or generate it as a target"
        )
    arr = _as_numpy(key, value)
    want = physical_shape(modality)
    if arr.ndim != 4 or tuple(arr.shape[1:]) != want:
        raise ValueError(f"partial {key} has shape {tuple(arr.shape)}; expected (B, {', '.join(map(str, want))})")
    miss = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if miss.dtype != np.bool_ or miss.shape != (arr.shape[0], *want[1:]):
        raise ValueError(
            f"masks[{key!r}] must be bool (B, H, W) = {(arr.shape[0], *want[1:])} with True where a pixel is "
            f"missing, got {miss.dtype} {miss.shape}"
        )
    bad = ~np.isfinite(arr).all(axis=1) & ~miss
    if bad.any():
        raise ValueError(
            f"partial {key}: {int(bad.sum())} pixels marked known hold NaN/inf; mark them missing in masks[{key!r}]"
        )
    return arr.copy(), miss.copy()


def _prepare_partial(
    modality: Modality, values: np.ndarray, missing: np.ndarray, fill: FillMethod, mode: Mode, notes: list[str],
    prior: np.ndarray | None = None,
) -> Tensor:
    """Observation (B, C, H, W) with gaps -> normalised, gap-filled VAE input (B, C, H, W) float32.

    With ``prior`` (B, C, H, W, NaN where unknown) the missing pixels take the prior's value where it
    has one (every band finite), before the pull-push fill of the rest.
    """
    rows: list[Tensor] = []
    for i in range(values.shape[0]):
        known = ~missing[i]
        v = values[i].astype(np.float32)  # a copy
        if prior is not None:
            usable = missing[i] & np.isfinite(prior[i]).all(axis=0)
            v[:, usable] = prior[i][:, usable]
            known = known | usable
        if not known.any():
            rows.append(torch.zeros(modality.pixel_shape, dtype=torch.float32))
            continue
        # a valid placeholder (the band mean) so that strict normalisation accepts the gaps
        v[:, ~known] = v[:, known].mean(axis=1, dtype=np.float64).astype(np.float32)[:, None]
        try:
            result = normalize(modality, v[None], mode=mode)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"partial {modality.key}, sample {i}: {exc}") from None
        notes.extend(f"partial sample {i}: {n}" for n in result.notes)
        pixels = torch.as_tensor(np.asarray(result.values), dtype=torch.float32).reshape(1, *modality.pixel_shape)
        rows.append(fill_missing(pixels, torch.from_numpy(known)[None], fill)[0])
    return torch.stack(rows)


def _residual_on_prior(values: np.ndarray, prior: np.ndarray, start_decoded: np.ndarray) -> np.ndarray:
    """Where the prior has a value: prior + (decoded member - decoded start latent); elsewhere the member.

    The VAE's reconstruction error of the prior (blur, ~0.07 reflectance for the tiny VAEs) is in both
    decodings and cancels, so only the model's change to the prior reaches the pixels: an unchanged
    prior comes back exactly. ``values`` (B, M, C, H, W), ``prior``/``start_decoded`` (B, C, H, W).
    """
    has = np.isfinite(prior).all(axis=1)[:, None, None]  # (B, 1, 1, H, W)
    residual = values - start_decoded[:, None]
    return np.where(has, prior[:, None] + residual, values).astype(values.dtype)


def _run_solver(
    denoiser: JointDenoiser,
    x: Tensor,
    hook: StepHook | None,
    *,
    steps: int,
    order: int,
    solver: Method,
    spacing: Spacing,
    schedule: DiscreteVPSchedule,
    resample: int,
    jump_steps: int,
    seed: int,
    keys: Sequence[SampleKey],
    members: Sequence[int],
) -> Tensor:
    """The whole trajectory, or (resample > 1) segments of ``jump_steps`` steps each run ``resample`` times."""
    kwargs: dict[str, Any] = {"order": order, "method": solver, "spacing": spacing, "schedule": schedule,
                              "step_hook": hook}
    if resample == 1:
        return sample_dpmpp(denoiser, x, steps=steps, **kwargs)
    grid = time_grid(steps, spacing, schedule=schedule)
    bounds = [*range(0, steps, jump_steps), steps]
    for segment, (a, b) in enumerate(pairwise(bounds)):
        start = x
        for u in range(resample):
            x = sample_dpmpp(denoiser, start, steps=b - a, t_start=float(grid[a]), t_end=float(grid[b]), **kwargs)
            if u < resample - 1:
                eps = sample_noise((x.shape[1],), seed, keys, members, None, f"resample/{segment}/{u}",
                                   device=x.device)
                start = renoise(x, grid[b], grid[a], eps, schedule)
    return x


def inpaint(
    model: CopgenModel,
    conditions: Mapping[str, object],
    partial: Mapping[str, object],
    masks: Mapping[str, object],
    targets: Sequence[str] = (),
    members: int = 1,
    steps: int = 50,
    seed: int = 0,
    keys: Sequence[SampleKey] | None = None,
    *,
    method: InpaintMethod = "repaint",
    resample: int = 1,
    jump_steps: int = 10,
    fill: FillMethod = "smooth",
    latent_rule: LatentRule = "all",
    order: int = 3,
    solver: Method = "singlestep",
    spacing: Spacing = "time_uniform",
    batch_size: int | None = None,
    official_quirks: bool = False,
    condition_encoding: ConditionEncoding = "mean",
    normalize_mode: Mode = "strict",
    decode: bool = True,
    return_latents: bool = False,
    prior: Mapping[str, object] | None = None,
    prior_start: float = 1.0,
) -> InpaintResult:
    """Generate the missing parts of partially observed modalities (and whole targets), given conditions.

    Parameters
    ----------
    model:
        The COP-GEN model (its backbone, VAEs, schedule, precision and batch invariance are used).
    conditions:
        Fully observed modalities, physical values (B, ...) as in ``CopgenModel.generate``; clean
        latents at t = 0.
    partial:
        Partially observed S2/S1/DEM modalities, physical values (B, C, H, W) on the native grid (numpy or
        torch); values at missing pixels are ignored (NaN is fine).
    masks:
        Per partial key, bool (B, H, W): True where the pixel is missing (every channel; e.g. from
        :mod:`transforms.masks`). A sample missing everywhere is generated whole.
    targets:
        Modalities with no observation at all (band infilling), generated whole.
    members:
        Ensemble members per sample.
    steps:
        Solver steps (model calls without resampling).
    seed, keys:
        Run seed and per-sample keys; every draw is keyed on (seed, key, member, modality), so a sample's
        result does not depend on the batch it ran in.
    method:
        ``"repaint"`` (impose the known latents at every solver state) or ``"none"`` (unconstrained:
        the partial modalities are plain targets; only the composite uses the observation, a baseline).
    resample:
        RePaint resampling: each stretch of ``jump_steps`` steps runs ``resample`` times (1 = off); NFE
        about ``steps * resample``.
    jump_steps:
        Length in solver steps of a resampling stretch.
    fill:
        How missing pixels are filled before encoding: ``"smooth"`` (pull-push) or ``"mean"``.
    latent_rule:
        ``"all"`` (a latent cell is known when all its pixels are) or ``"fraction"`` (soft).
    order, solver, spacing:
        DPM-Solver++ settings (``solver`` is ``"singlestep"`` or ``"multistep"``).
    batch_size, official_quirks, condition_encoding, normalize_mode, decode, return_latents:
        As in ``CopgenModel.generate``; ``condition_encoding`` also encodes the partial observations.
    prior, prior_start:
        A guess of the missing pixels (SDEdit-style start; Meng et al. 2022): per generated key
        (partial or target), physical values (B, C, H, W) on the native grid, NaN where there is no
        guess (e.g. the nearest clear acquisition of the same place, :func:`transforms.gapfill.temporal_prior`).
        Each generated latent then starts at continuous time ``prior_start`` < 1 from the re-noised
        encoding of observation + prior (pull-push elsewhere; zeros for a key without a prior) instead
        of from pure noise at t = 1, so the solver keeps the prior's structure at scales coarser than
        the noise level and adapts it to the observed pixels and conditions. Decoded outputs are the
        prior plus the model's change to it (``decoded member - decoded start``) where the prior has a
        value, so the VAE's blur of the prior cancels. ``prior_start = 1`` (default) ignores the prior.

    Returns
    -------
    InpaintResult
        Outputs for partial and target keys, (B, members, ...); ``result.composite(key)`` gives the
        observation with the gaps filled.

    Raises
    ------
    ValueError
        On unknown, duplicated or overlapping modalities, a partial class map or scalar, masks missing
        or of the wrong shape, known pixels holding NaN, inconsistent batch sizes, bad settings, and
        everything ``generate`` refuses.
    """
    for name, value, low in (("members", members, 1), ("steps", steps, 1), ("resample", resample, 1),
                             ("jump_steps", jump_steps, 1)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size!r}")
    if method not in ("repaint", "none"):
        raise ValueError(f"unknown inpainting method {method!r}; use 'repaint' or 'none'")
    if method == "none" and resample > 1:
        raise ValueError("resample > 1 needs method='repaint' (nothing is imposed with method='none')")
    if condition_encoding not in ("mean", "sample"):
        raise ValueError(f"condition_encoding must be 'mean' or 'sample', got {condition_encoding!r}")
    if not 0.0 < prior_start <= 1.0:
        raise ValueError(f"prior_start must be in (0, 1] (continuous time), got {prior_start!r}")
    use_prior = prior is not None and prior_start < 1.0
    if use_prior and resample > 1:
        raise ValueError("a prior (prior_start < 1) and RePaint resampling (resample > 1) do not combine; pick one")
    cond_mods = model._resolve(list(conditions), "conditions")
    partial_mods = model._resolve(list(partial), "partial")
    target_mods = model._resolve(list(targets), "targets")
    if not partial_mods and not target_mods:
        raise ValueError("nothing to generate: give at least one partial modality or target")
    roles = (("conditions", cond_mods), ("partial", partial_mods), ("targets", target_mods))
    for i, (name_a, a) in enumerate(roles):
        for name_b, b in roles[i + 1:]:
            both = sorted(m.key for m in set(a) & set(b))
            if both:
                raise ValueError(f"{both} are both {name_a} and {name_b}; give each modality one role")
    mask_keys = {resolve(k).key for k in masks}
    partial_keys = {m.key for m in partial_mods}
    if mask_keys != partial_keys:
        raise ValueError(
            f"masks must have exactly the partial keys {sorted(partial_keys)}; missing "
            f"{sorted(partial_keys - mask_keys)}, extra {sorted(mask_keys - partial_keys)}"
        )

    cond_raw = {resolve(k).key: v for k, v in conditions.items()}
    physical = {m.key: _check_condition(m, cond_raw[m.key]) for m in cond_mods}
    partial_raw = {resolve(k).key: v for k, v in partial.items()}
    mask_raw = {resolve(k).key: v for k, v in masks.items()}
    observed: dict[str, np.ndarray] = {}
    missing: dict[str, np.ndarray] = {}
    for m in partial_mods:
        observed[m.key], missing[m.key] = _partial_inputs(m, partial_raw[m.key], mask_raw[m.key])
    sizes = {key: _batch_size(v) for key, v in physical.items()} | {k: v.shape[0] for k, v in observed.items()}
    sample_keys = resolve_sample_keys(sizes, keys, "conditions and partial modalities")
    batch = len(sample_keys)
    priors: dict[str, np.ndarray] = {}
    if use_prior:
        assert prior is not None
        gen_keys = {m.key for m in (*partial_mods, *target_mods)}
        for name, guess in prior.items():
            mod = resolve(name)
            if mod.key not in gen_keys:
                raise ValueError(f"prior for {mod.key}, which is not generated here; give priors of partial "
                                 f"modalities or targets only ({sorted(gen_keys)})")
            arr = (guess.detach().cpu().numpy() if isinstance(guess, Tensor) else np.asarray(guess)).astype(np.float32)
            want = (batch, *physical_shape(mod))
            if arr.shape != want:
                raise ValueError(f"prior for {mod.key} has shape {arr.shape}; expected {want} (NaN where unknown)")
            priors[mod.key] = arr

    notes: list[str] = []
    gen_mods = sorted([*partial_mods, *target_mods], key=lambda m: model.modalities.index(m.key))
    with torch.no_grad():
        cond_latents: dict[str, Tensor] = {}
        for mod in cond_mods:
            pixels = model._normalise(mod, physical[mod.key], normalize_mode, notes)
            latent = model._encode(mod, pixels, sample_keys, seed, condition_encoding, batch_size)
            cond_latents[mod.key] = latent.repeat_interleave(members, dim=0)
        known: dict[str, Tensor] = {}
        weights: dict[str, Tensor] = {}
        for mod in partial_mods:
            pixels = _prepare_partial(mod, observed[mod.key], missing[mod.key], fill, normalize_mode, notes)
            known[mod.key] = model._encode(mod, pixels, sample_keys, seed, condition_encoding, batch_size)
            weights[mod.key] = latent_weights(torch.from_numpy(missing[mod.key]), VAE_DOWNSAMPLE, latent_rule).to(
                model.device)

        starts: dict[str, Tensor] = {}
        if use_prior:
            for mod in gen_mods:
                obs = observed.get(mod.key)
                miss = missing.get(mod.key)
                if obs is None:  # a target: nothing observed
                    obs = np.full((batch, *physical_shape(mod)), np.nan, dtype=np.float32)
                    miss = np.ones((batch, *physical_shape(mod)[1:]), dtype=bool)
                assert miss is not None
                if mod.key in priors:
                    pixels = _prepare_partial(mod, obs, miss, fill, normalize_mode, notes, priors[mod.key])
                    starts[mod.key] = model._encode(mod, pixels, sample_keys, seed, "mean", batch_size)
                elif mod.key in known:
                    starts[mod.key] = known[mod.key]
                else:
                    starts[mod.key] = torch.zeros((batch, *mod.latent_shape), device=model.device)

        row_keys = [k for k in sample_keys for _ in range(members)]
        row_members = [j for _ in sample_keys for j in range(members)]
        chosen = {m.key for m in (*cond_mods, *gen_mods)}
        marginal_mods = [resolve(k) for k in model.modalities if k not in chosen]
        results: dict[str, list[Tensor]] = {m.key: [] for m in gen_mods}
        for part in model._chunks(len(row_keys), batch_size):
            part_keys, part_members = row_keys[part], row_members[part]
            noise = {
                m.key: sample_noise(m.latent_shape, seed, part_keys, part_members, m.key, "noise", device=model.device)
                for m in gen_mods
            }
            marginal = {m.key: model._marginal(m, seed, part_keys, part_members, official_quirks) for m in marginal_mods}
            denoiser = JointDenoiser(
                model.backbone,
                [m.key for m in gen_mods],
                {k: v[part] for k, v in cond_latents.items()},
                marginal,
                marginal_timestep=0.0 if official_quirks else None,
                schedule=model.schedule,
                autocast_dtype=PRECISIONS[model.dtype],
                per_row=model.batch_invariant,
                forward=model._forward,
            )
            hook: StepHook | None = None
            if method == "repaint" and known:
                rows = torch.arange(batch, device=model.device).repeat_interleave(members)[part]
                hook = KnownLatentHook(
                    denoiser,
                    {k: z[rows] for k, z in known.items()},
                    {k: w[rows] for k, w in weights.items()},
                    {k: noise[k] for k in known},
                    model.schedule,
                )
            if use_prior:
                rows = torch.arange(batch, device=model.device).repeat_interleave(members)[part]
                a0 = model.schedule.alpha(torch.tensor(prior_start)).to(model.device)
                s0 = model.schedule.sigma(torch.tensor(prior_start)).to(model.device)
                start = {k: a0 * z[rows] + s0 * noise[k] for k, z in starts.items()}  # a draw of q(x_t0 | z)
                x = sample_dpmpp(denoiser, denoiser.pack(start).float(), steps=steps, order=order, method=solver,
                                 spacing=spacing, schedule=model.schedule, step_hook=hook, t_start=prior_start)
            else:
                x = _run_solver(
                    denoiser, denoiser.pack(noise).float(), hook, steps=steps, order=order, solver=solver,
                    spacing=spacing, schedule=model.schedule, resample=resample, jump_steps=jump_steps, seed=seed,
                    keys=part_keys, members=part_members,
                )
            for key, latent in denoiser.unpack(x).items():
                results[key].append(latent.clone())
        latents = {key: torch.cat(parts) for key, parts in results.items()}

        outputs: dict[str, np.ndarray] = {}
        if decode:
            for mod in gen_mods:
                values = model._decode(mod, latents[mod.key], batch_size)
                values = values.reshape(batch, members, *values.shape[1:])
                if use_prior and mod.key in priors:
                    values = _residual_on_prior(values, priors[mod.key], model._decode(mod, starts[mod.key], batch_size))
                outputs[mod.key] = values

    settings = {
        "seed": seed, "steps": steps, "order": order, "solver": solver, "spacing": spacing, "method": method,
        "resample": resample, "jump_steps": jump_steps, "fill": fill, "latent_rule": latent_rule,
        "official_quirks": official_quirks, "condition_encoding": condition_encoding,
        "normalize_mode": normalize_mode, "dtype": model.dtype, "batch_invariant": model.batch_invariant,
        "conditions": [m.key for m in cond_mods], "partial": [m.key for m in partial_mods],
        "targets": [m.key for m in target_mods], "marginalised": [m.key for m in marginal_mods],
        "known_fraction": {k: float((~v).mean()) for k, v in missing.items()},
        "prior_start": prior_start if use_prior else None, "prior": sorted(priors),
    }
    lat_out = (
        {k: v.cpu().reshape(batch, members, *v.shape[1:]) for k, v in latents.items()} if return_latents else None
    )
    return InpaintResult(
        outputs=outputs,
        observed=observed,
        missing=missing,
        known_latents={k: v.cpu() for k, v in known.items()},
        latent_weights={k: v[:, 0].cpu() for k, v in weights.items()},
        latents=lat_out,
        keys=sample_keys,
        members=members,
        notes=tuple(notes),
        settings=settings,
    )


__all__ = [
    "PARTIAL_KINDS", "Composite", "FillMethod", "InpaintMethod", "InpaintResult", "KnownLatentHook", "LatentRule",
    "composite", "fill_missing", "inpaint", "latent_weights", "renoise",
]
