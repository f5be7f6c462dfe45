"""Any-to-any generation with COP-GEN: physical conditions in, denormalised targets out.

:class:`CopgenModel` ties a backbone to one KL-VAE per image modality (loaded lazily, only for the
modalities a call needs) and :meth:`CopgenModel.generate` runs the whole chain:

1. validate and normalise the conditions (physical units) one sample at a time;
2. encode image conditions with their VAE (posterior mean by default, or a seeded posterior sample);
3. sample the target latents with DPM-Solver++ (:func:`sample_latents`), every modality of the
   backbone being either a *condition* (clean latent, t = 0), a *target* (from pure noise) or
   *marginalised* (held at pure noise with t = 1000, i.e. fully noised, on every call);
4. decode the targets with their VAEs and denormalise them to physical units.

Randomness comes only from :mod:`copgen_core.seeding`: the initial noise of target ``m`` for sample
``key`` and member ``j`` is drawn from its own generator, so results do not depend on batch size,
order or worker. On the CPU in fp32 the model is also evaluated one sample at a time
(``batch_invariant``), which makes a sample's output bitwise identical whatever batch it ran in.

The latent-space core (:class:`JointDenoiser`, :func:`sample_latents`) knows nothing of VAEs or
physical units; the golden sampler check and gap filling use it directly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from copgen_core.backbone import CopgenBackbone
from copgen_core.modalities import Kind, Modality, resolve
from copgen_core.normalize import denormalize, normalize
from copgen_core.normalize_common import Mode
from copgen_core.sampler import DEFAULT_T_END, Callback, Method, Spacing, StepHook, sample_dpmpp
from copgen_core.schedule import DiscreteVPSchedule, copgen_schedule
from copgen_core.seeding import SampleKey, canonical_key, derive_seed, sample_noise
from copgen_core.vae import KLVAE

Precision = Literal["fp32", "bf16", "fp16"]
ConditionEncoding = Literal["mean", "sample"]
VAELoader = KLVAE | Callable[[], KLVAE] | str | Path
"""A VAE, a zero-argument callable returning one, or a checkpoint path for ``checkpoints.load_vae``."""

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEM_RANGE_M = (-500.0, 9000.0)
"""Elevations outside this range (metres) are refused as input errors."""


# ------------------------------------------------------------------------------------- latent core


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class JointDenoiser:
    """The sampler's ``eps_fn`` over the flat state of the target latents.

    The state x (R, D) is the concatenation, in canonical modality order, of the target latents
    flattened as ``R (C H W)``. A call feeds the backbone the targets (unpacked from x) at timestep
    ``t * 1000``, the conditions at 0 and the marginalised modalities at ``marginal_timestep``, and
    returns the targets' ε̂, packed the same way, in float32.

    Parameters
    ----------
    backbone:
        The ε-prediction network; its ``config.modalities`` decide the modalities and their order.
    targets:
        Modality keys (or aliases) to generate.
    conditions:
        Clean latents (R, C, H, W) per conditioned modality.
    marginal:
        Per marginalised modality: a fixed latent (R, C, H, W), or a zero-argument callable that
        returns a fresh one for every call (the official quirk).
    marginal_timestep:
        Timestep the backbone sees for marginalised modalities: ``schedule.num_steps`` (1000, pure
        noise; the default) or 0 to reproduce the official quirk.
    schedule:
        Maps continuous time to the backbone's timestep; COP-GEN's when None.
    autocast_dtype:
        Run the backbone under ``torch.autocast`` with this dtype (bf16/fp16), or None for fp32.
    per_row:
        Evaluate the backbone one row at a time (bitwise batch invariance on the CPU).
    forward:
        The callable to evaluate instead of ``backbone`` itself (e.g. a ``torch.compile``d copy).
    guidance:
        Classifier-free guidance weight w (not in the official sampler, which has none): each call
        also evaluates the backbone with every condition marginalised (its ``unconditional``
        latent at ``marginal_timestep``) and returns ``eps_u + w (eps_c - eps_u)``. 1.0 (the
        default) is plain conditioning: one backbone call, bit for bit the unguided path. Needs
        conditions and a backbone trained with condition dropout to mean anything.
    unconditional:
        Per condition key, the latent (R, C, H, W) that replaces it in the unguided branch (pure
        noise, held for the whole solve); required when ``guidance != 1``.

    Raises
    ------
    ValueError
        If the three groups overlap or miss a backbone modality, a latent has the wrong shape, the
        row counts differ, or guidance is not finite, below 0, or lacks its unconditional latents.
    """

    def __init__(
        self,
        backbone: CopgenBackbone,
        targets: Sequence[str],
        conditions: Mapping[str, Tensor],
        marginal: Mapping[str, Tensor | Callable[[], Tensor]] | None = None,
        *,
        marginal_timestep: float | None = None,
        schedule: DiscreteVPSchedule | None = None,
        autocast_dtype: torch.dtype | None = None,
        per_row: bool = False,
        forward: Callable[[list[Tensor], list[Tensor]], list[Tensor]] | None = None,
        guidance: float = 1.0,
        unconditional: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.schedule = schedule or copgen_schedule()
        self.keys: tuple[str, ...] = tuple(backbone.config.modalities)
        self.forward = forward if forward is not None else backbone
        target_keys = {resolve(k).key for k in targets}
        self.conditions = {resolve(k).key: v for k, v in conditions.items()}
        self.marginal = {resolve(k).key: v for k, v in (marginal or {}).items()}
        groups = (
            ("targets", target_keys),
            ("conditions", set(self.conditions)),
            ("marginal", set(self.marginal)),
        )
        for i, (name_a, a) in enumerate(groups):
            for name_b, b in groups[i + 1 :]:
                if a & b:
                    raise ValueError(
                        f"modalities {sorted(a & b)} are both {name_a} and {name_b}; pick one role"
                    )
        outside = set().union(*(g for _, g in groups)) - set(self.keys)
        if outside:
            raise ValueError(f"modalities {sorted(outside)} are not in the backbone's {list(self.keys)}")
        missing = set(self.keys) - set().union(*(g for _, g in groups))
        if missing:
            raise ValueError(
                f"backbone modalities {sorted(missing)} are neither targets, conditions nor marginal"
            )
        if not target_keys:
            raise ValueError("no target modality to generate; give at least one target")
        self.targets: tuple[Modality, ...] = tuple(resolve(k) for k in self.keys if k in target_keys)
        self.marginal_timestep = float(
            self.schedule.num_steps if marginal_timestep is None else marginal_timestep
        )
        self.autocast_dtype = autocast_dtype
        self.per_row = per_row
        self.rows: int | None = None
        for key, latent in self.conditions.items():
            self._check_latent(key, latent, "condition")
        for key, held in self.marginal.items():
            if isinstance(held, Tensor):
                self._check_latent(key, held, "marginal latent")
        if not math.isfinite(guidance) or guidance < 0:
            raise ValueError(f"guidance must be a finite weight >= 0 (1 = plain conditioning), got {guidance!r}")
        self.guidance = float(guidance)
        self.unconditional: dict[str, Tensor] = {}
        if self.guidance != 1.0 and self.conditions:
            given = {resolve(k).key: v for k, v in (unconditional or {}).items()}
            lacking = sorted(set(self.conditions) - set(given))
            if lacking:
                raise ValueError(
                    f"guidance {guidance} needs an unconditional (noise) latent for every condition; "
                    f"missing {lacking}"
                )
            for key in self.conditions:
                self._check_latent(key, given[key], "unconditional latent")
                self.unconditional[key] = given[key]

    def _check_latent(self, key: str, value: Tensor, what: str) -> None:
        want = resolve(key).latent_shape
        if value.dim() != 4 or tuple(value.shape[1:]) != want:
            raise ValueError(
                f"{what} {key} has shape {tuple(value.shape)}, expected (R, {', '.join(map(str, want))})"
            )
        if self.rows is None:
            self.rows = int(value.shape[0])
        elif value.shape[0] != self.rows:
            raise ValueError(
                f"{what} {key} has {value.shape[0]} rows, others have {self.rows}; all must match"
            )

    @property
    def state_size(self) -> int:
        """D: the number of values per row of the flat state."""
        return sum(m.latent_numel for m in self.targets)

    def pack(self, latents: Mapping[str, Tensor]) -> Tensor:
        """Target latents (R, C, H, W) per key -> flat state (R, D), canonical order."""
        by_key = {resolve(k).key: v for k, v in latents.items()}
        return torch.cat([by_key[m.key].reshape(by_key[m.key].shape[0], -1) for m in self.targets], dim=1)

    def unpack(self, x: Tensor) -> dict[str, Tensor]:
        """Flat state (R, D) -> target latents (R, C, H, W) per key (views of x)."""
        out: dict[str, Tensor] = {}
        start = 0
        for m in self.targets:
            out[m.key] = x[:, start : start + m.latent_numel].reshape(x.shape[0], *m.latent_shape)
            start += m.latent_numel
        return out

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """ε̂ of the targets (R, D), float32, for state x (R, D) at continuous times t (R,)."""
        eps = self._eps(x, t, guided=False)
        if not self.unconditional:
            return eps
        eps_u = self._eps(x, t, guided=True)
        return eps_u + self.guidance * (eps - eps_u)

    def _eps(self, x: Tensor, t: Tensor, guided: bool) -> Tensor:
        """One backbone evaluation; ``guided`` swaps every condition for its unconditional latent."""
        rows = x.shape[0]
        targets = self.unpack(x)
        t_model = self.schedule.model_time(t)
        latents: list[Tensor] = []
        timesteps: list[Tensor] = []
        for key in self.keys:
            if key in targets:
                latents.append(targets[key])
                timesteps.append(t_model)
            elif key in self.conditions and not guided:
                latents.append(self.conditions[key].to(x.dtype))
                timesteps.append(torch.zeros(rows, device=x.device, dtype=t.dtype))
            else:
                value = self.unconditional[key] if key in self.conditions else self.marginal[key]
                latents.append(
                    (value if isinstance(value, Tensor) else value()).to(device=x.device, dtype=x.dtype)
                )
                timesteps.append(torch.full((rows,), self.marginal_timestep, device=x.device, dtype=t.dtype))
        wanted = [i for i, key in enumerate(self.keys) if key in targets]
        with _autocast(x.device, self.autocast_dtype):
            if self.per_row and rows > 1:
                outs = [
                    self.forward([v[r : r + 1] for v in latents], [s[r : r + 1] for s in timesteps])
                    for r in range(rows)
                ]
                eps = [torch.cat([o[i] for o in outs], dim=0) for i in wanted]
            else:
                out = self.forward(latents, timesteps)
                eps = [out[i] for i in wanted]
        return torch.cat([e.float().reshape(rows, -1) for e in eps], dim=1)


def sample_latents(
    backbone: CopgenBackbone,
    noise: Mapping[str, Tensor],
    conditions: Mapping[str, Tensor],
    marginal: Mapping[str, Tensor | Callable[[], Tensor]] | None = None,
    *,
    steps: int = 50,
    order: int = 3,
    method: Method = "singlestep",
    spacing: Spacing = "time_uniform",
    orders: Sequence[int] | None = None,
    t_start: float = 1.0,
    t_end: float = DEFAULT_T_END,
    marginal_timestep: float | None = None,
    schedule: DiscreteVPSchedule | None = None,
    autocast_dtype: torch.dtype | None = None,
    per_row: bool = False,
    forward: Callable[[list[Tensor], list[Tensor]], list[Tensor]] | None = None,
    callback: Callback | None = None,
    step_hook: StepHook | None = None,
    guidance: float = 1.0,
    unconditional: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Sample target latents from their initial noise given clean condition latents.

    This is the official ``_sample_batch`` core (DPM-Solver++ over the concatenated targets), with
    marginalised modalities handled as in :class:`JointDenoiser`.

    Parameters
    ----------
    noise:
        Initial noise (R, C, H, W) per target modality; the keys are the targets.
    conditions, marginal, marginal_timestep, schedule, autocast_dtype, per_row, forward, guidance,
    unconditional:
        See :class:`JointDenoiser`.
    steps, order, method, spacing, orders, t_start, t_end, callback, step_hook:
        See :func:`copgen_core.sampler.sample_dpmpp` (``callback``/``step_hook`` see the flat state;
        use :meth:`JointDenoiser.unpack` to split it).

    Returns
    -------
    dict[str, Tensor]
        Final latent (R, C, H, W) float32 per target key, at t = 1e-3.

    Raises
    ------
    ValueError
        As :class:`JointDenoiser` and :func:`~copgen_core.sampler.sample_dpmpp`.
    """
    denoiser = JointDenoiser(
        backbone,
        list(noise),
        conditions,
        marginal,
        marginal_timestep=marginal_timestep,
        schedule=schedule,
        autocast_dtype=autocast_dtype,
        per_row=per_row,
        forward=forward,
        guidance=guidance,
        unconditional=unconditional,
    )
    for key, value in noise.items():
        denoiser._check_latent(resolve(key).key, value, "noise")
    x = denoiser.pack(noise).float()
    with torch.no_grad():
        x = sample_dpmpp(
            denoiser,
            x,
            steps=steps,
            order=order,
            method=method,
            spacing=spacing,
            schedule=denoiser.schedule,
            orders=orders,
            t_start=t_start,
            t_end=t_end,
            callback=callback,
            step_hook=step_hook,
        )
    return {k: v.clone() for k, v in denoiser.unpack(x).items()}


# ------------------------------------------------------------------------------------- physical I/O


def physical_shape(modality: Modality) -> tuple[int, ...]:
    """Per-sample shape of a modality's physical values (without the batch dimension).

    S2/S1/DEM (C, H, W) in band order; LULC and cloud mask (1, H, W) class codes; lat/lon (2,)
    ``[lat, lon]`` degrees; date (3,) ``[year, month, day]``.
    """
    if modality.kind is Kind.LATLON:
        return (2,)
    if modality.kind is Kind.DATE:
        return (3,)
    side = modality.pixel_size
    channels = 1 if modality.kind in (Kind.LULC, Kind.CLOUD) else len(modality.channels)
    return (channels, side, side)


def _describe(modality: Modality) -> str:
    if modality.kind is Kind.LATLON:
        return "(B, 2) [lat, lon] degrees"
    if modality.kind is Kind.DATE:
        return "(B, 3) [year, month, day] integers, or a sequence of B dates"
    c, h, w = physical_shape(modality)
    what = (
        "class codes" if modality.kind in (Kind.LULC, Kind.CLOUD) else f"bands {', '.join(modality.channels)}"
    )
    return f"(B, {c}, {h}, {w}) with {what}"


def _as_numpy(key: str, value: object) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValueError(f"condition {key} has dtype {arr.dtype}; pass a numeric array (numpy or torch)")
    return arr


def _is_date_sequence(value: object) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(v, dt.date) for v in value)
    )


def _check_condition(modality: Modality, value: object) -> np.ndarray | list[dt.date]:
    """Validate one physical condition; return it as numpy (or a list of dates)."""
    key = modality.key
    if modality.kind is Kind.DATE and _is_date_sequence(value):
        return list(value)  # type: ignore[call-overload]
    arr = _as_numpy(key, value)
    want = physical_shape(modality)
    if arr.ndim != len(want) + 1 or tuple(arr.shape[1:]) != want:
        raise ValueError(f"condition {key} has shape {tuple(arr.shape)}; expected {_describe(modality)}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"condition {key} holds {bad} NaN/inf values; fill or mask them before generating")
    if modality.kind is Kind.S1 and arr.size and float(arr.min()) < 0:
        raise ValueError(
            f"condition {key} holds negative backscatter (min {float(arr.min())!r}); S1 must be linear power "
            ">= 0 (pass dB through 10**(dB/10) first)"
        )
    if modality.kind is Kind.DEM and arr.size:
        lo, hi = float(arr.min()), float(arr.max())
        if lo < DEM_RANGE_M[0] or hi > DEM_RANGE_M[1]:
            raise ValueError(
                f"condition {key} has elevations in [{lo!r}, {hi!r}] m, outside {list(DEM_RANGE_M)}; "
                "pass metres above sea level (not feet, not a scaled raster)"
            )
    return arr


def _batch_size(value: np.ndarray | list[dt.date]) -> int:
    return len(value) if isinstance(value, list) else int(value.shape[0])


# ------------------------------------------------------------------------------------- the model


def resolve_sample_keys(sizes: Mapping[str, int], keys: Sequence[SampleKey] | None,
                        what: str) -> tuple[SampleKey, ...]:
    """The B sample keys of a call, checked against the batch sizes of its inputs.

    Parameters
    ----------
    sizes:
        Batch size of each input (``what`` names them in errors).
    keys:
        The caller's keys, or None for ``0..B-1``.

    Raises
    ------
    ValueError
        Inputs disagree on B, B is unknown (no inputs and no keys) or 0, the key count differs from B, or a
        key is not a str/int/tuple of those.
    """
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{what} disagree on the batch size B: {dict(sizes)}")
    if sizes:
        batch = next(iter(sizes.values()))
    elif keys is not None:
        batch = len(keys)
    else:
        raise ValueError(f"no {what}: pass keys=[...] (one per sample) so that B is known")
    if batch < 1:
        raise ValueError("the batch is empty (B = 0); give at least one sample")
    sample_keys: tuple[SampleKey, ...] = tuple(range(batch)) if keys is None else tuple(keys)
    if len(sample_keys) != batch:
        raise ValueError(f"got {len(sample_keys)} keys for B = {batch} samples; give one key per sample")
    for k in sample_keys:
        try:
            canonical_key(k)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
    return sample_keys


@dataclass(frozen=True)
class GenerationResult:
    """What :meth:`CopgenModel.generate` returns.

    Attributes
    ----------
    outputs:
        Denormalised values per target key (numpy), shaped (B, members, ...): S2 float32 DN and S1
        float32 linear power (B, members, C, H, W); DEM float32 metres (B, members, 1, H, W); LULC and
        cloud mask int64 codes (B, members, 1, H, W); lat/lon float32 (B, members, 2) ``[lat, lon]``
        degrees; date int64 (B, members, 3) ``[day, month, year]`` (the official decoder's order).
        Empty when generated with ``decode=False``.
    latents:
        Final latents per target key, float32 (B, members, C, h, w) on the CPU, when asked for.
    keys:
        The sample key of each of the B samples.
    members:
        Ensemble members per sample.
    notes:
        What strict normalisation changed or noticed in the conditions.
    settings:
        The sampling settings used (seed, steps, order, method, spacing, ...), for provenance.
    """

    outputs: dict[str, np.ndarray]
    latents: dict[str, Tensor] | None
    keys: tuple[SampleKey, ...]
    members: int
    notes: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.outputs[resolve(name).key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.outputs


class CopgenModel:
    """A COP-GEN model for any-to-any generation: a backbone plus lazily loaded VAEs.

    Parameters
    ----------
    backbone:
        The ε-prediction network; it may cover a subset of the 12 modalities.
    vaes:
        Per image modality key (or alias): a :class:`KLVAE`, a zero-argument loader returning one,
        or a checkpoint path (loaded with ``checkpoints.load_vae``). A VAE is loaded the first time a
        call needs it (to encode a condition or decode a target) and then kept.
    device:
        Where to run; the backbone's device when None. The backbone and VAEs are moved there.
    dtype:
        ``"fp32"`` (default), or ``"bf16"``/``"fp16"`` to run the backbone under ``torch.autocast``
        (GPU). The sampler state and the VAEs stay float32.
    compile:
        Run the backbone through ``torch.compile`` (GPU; compiles on the first call per batch shape).
    batch_invariant:
        Evaluate the backbone and VAEs one sample at a time so that each sample's output is bitwise
        identical whatever batch it ran in. Default: on for CPU fp32, off otherwise (on a GPU,
        batched kernels differ in the last bits anyway, and per-sample calls waste throughput).
    schedule:
        Noise schedule; COP-GEN's when None.

    Warnings
    --------
    Memory: a micro-batch of R rows holds R copies of every latent plus the backbone activations for
    R x num_tokens tokens; bound it with ``batch_size``. The model is not thread-safe: give each
    thread its own instance (the weights can be shared).
    """

    def __init__(
        self,
        backbone: CopgenBackbone,
        vaes: Mapping[str, VAELoader] | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: Precision = "fp32",
        compile: bool = False,
        batch_invariant: bool | None = None,
        schedule: DiscreteVPSchedule | None = None,
    ) -> None:
        if dtype not in PRECISIONS:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {list(PRECISIONS)}")
        if device is None:
            first = next(backbone.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device).eval()
        self.backbone.requires_grad_(False)
        self.dtype: Precision = dtype
        self.schedule = schedule or copgen_schedule()
        self.batch_invariant = (
            (self.device.type == "cpu" and dtype == "fp32") if batch_invariant is None else batch_invariant
        )
        self._forward: Callable[[list[Tensor], list[Tensor]], list[Tensor]] = (
            torch.compile(self.backbone) if compile else self.backbone  # type: ignore[assignment]
        )
        self._vae_sources: dict[str, VAELoader] = {}
        for name, loader in (vaes or {}).items():
            mod = resolve(name)
            if not mod.is_image:
                raise ValueError(f"{mod.key} is a scalar modality and takes no VAE; drop it from vaes")
            self._vae_sources[mod.key] = loader
        self._vaes: dict[str, KLVAE] = {}

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modality keys this model covers, in canonical order."""
        return tuple(self.backbone.config.modalities)

    @property
    def loaded_vaes(self) -> tuple[str, ...]:
        """Keys of the VAEs loaded so far."""
        return tuple(self._vaes)

    def vae(self, name: str) -> KLVAE:
        """The VAE of an image modality, loading it on first use.

        Raises
        ------
        ValueError
            If no VAE was given for the modality, or the loader returned something else.
        """
        key = resolve(name).key
        if key in self._vaes:
            return self._vaes[key]
        if key not in self._vae_sources:
            raise ValueError(
                f"no VAE for {key}: it is needed to encode or decode that modality; pass "
                f"vaes={{'{key}': <KLVAE, loader or checkpoint path>}} to CopgenModel "
                f"(have: {sorted(self._vae_sources)})"
            )
        source = self._vae_sources[key]
        if isinstance(source, KLVAE):
            vae = source
        elif isinstance(source, (str, Path)):
            from copgen_core.checkpoints import load_vae

            vae = load_vae(source, key, device=self.device)
        else:
            vae = source()
        if not isinstance(vae, KLVAE):
            raise ValueError(f"the VAE loader for {key} returned {type(vae).__name__}, not a KLVAE")
        vae = vae.to(self.device).eval()
        vae.requires_grad_(False)
        self._vaes[key] = vae
        return vae

    # ---------------------------------------------------------------------------- validation

    def _resolve(self, names: Sequence[str], what: str) -> list[Modality]:
        out: list[Modality] = []
        for name in names:
            try:
                mod = resolve(name)
            except KeyError as exc:
                raise ValueError(f"{what}: {exc.args[0]}") from None
            if mod.key not in self.modalities:
                raise ValueError(
                    f"{what}: {mod.key} is not a modality of this model, which covers {list(self.modalities)}"
                )
            if mod in out:
                raise ValueError(f"{what}: {mod.key} is given twice")
            out.append(mod)
        return sorted(out, key=lambda m: self.modalities.index(m.key))

    def _chunks(self, total: int, batch_size: int | None) -> Iterator[slice]:
        step = total if not batch_size else batch_size
        for start in range(0, total, max(step, 1)):
            yield slice(start, min(start + step, total))

    # ---------------------------------------------------------------------------- stages

    def _normalise(
        self, modality: Modality, value: np.ndarray | list[dt.date], mode: Mode, notes: list[str]
    ) -> Tensor:
        """Physical (B, ...) -> normalised (B, C, H, W) float32 on the CPU, one sample at a time."""
        rows: list[Tensor] = []
        for i in range(_batch_size(value)):
            try:
                result = normalize(modality, value[i : i + 1], mode=mode)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"condition {modality.key}, sample {i}: {exc}") from None
            notes.extend(f"sample {i}: {n}" for n in result.notes)
            rows.append(torch.as_tensor(np.asarray(result.values), dtype=torch.float32))
        return torch.cat(rows).reshape(-1, *(modality.pixel_shape))

    def _encode(
        self,
        modality: Modality,
        pixels: Tensor,
        keys: Sequence[SampleKey],
        seed: int,
        encoding: ConditionEncoding,
        batch_size: int | None,
    ) -> Tensor:
        """Normalised condition (B, C, H, W) -> clean latent (B, c, h, w) on the device."""
        if modality.is_scalar:
            return pixels.to(self.device)
        vae = self.vae(modality.key)
        step = 1 if self.batch_invariant else batch_size
        out: list[Tensor] = []
        for part in self._chunks(pixels.shape[0], step):
            x = pixels[part].to(self.device)
            if encoding == "sample":
                eps = sample_noise(
                    modality.latent_shape,
                    seed,
                    keys[part],
                    [-1] * x.shape[0],
                    modality.key,
                    "encode",
                    device=self.device,
                )
                out.append(vae.encode(x, eps=eps).float())
            else:
                out.append(vae.encode(x).float())
        return torch.cat(out)

    def _decode(self, modality: Modality, latents: Tensor, batch_size: int | None) -> np.ndarray:
        """Target latents (R, c, h, w) -> physical values (R, ...) as numpy."""
        if modality.is_scalar:
            vec = latents.reshape(latents.shape[0], 3).cpu().numpy()
            return np.stack(
                [np.asarray(denormalize(modality, vec[r : r + 1]))[0] for r in range(vec.shape[0])]
            )
        vae = self.vae(modality.key)
        step = 1 if self.batch_invariant else batch_size
        out: list[np.ndarray] = []
        for part in self._chunks(latents.shape[0], step):
            pixels = vae.decode(latents[part].to(self.device)).float().cpu().numpy()
            out.extend(
                np.asarray(denormalize(modality, pixels[r : r + 1]))[0] for r in range(pixels.shape[0])
            )
        return np.stack(out)

    # ---------------------------------------------------------------------------- generate

    def generate(
        self,
        conditions: Mapping[str, object],
        targets: Sequence[str],
        members: int = 1,
        steps: int = 50,
        seed: int = 0,
        keys: Sequence[SampleKey] | None = None,
        *,
        return_latents: bool = False,
        decode: bool = True,
        order: int = 3,
        method: Method = "singlestep",
        spacing: Spacing = "time_uniform",
        batch_size: int | None = None,
        official_quirks: bool = False,
        condition_encoding: ConditionEncoding = "mean",
        normalize_mode: Mode = "strict",
        guidance: float = 1.0,
    ) -> GenerationResult:
        """Generate ``targets`` given physical ``conditions``, ``members`` times per sample.

        Parameters
        ----------
        conditions:
            Per modality key (or alias), physical values with batch dimension B (numpy or torch):
            S2 DN (B, C, H, W), S1 linear power (B, 2, 192, 192) [vv, vh], DEM metres (B, 1, 64, 64),
            LULC / cloud-mask codes (B, 1, 192, 192), lat/lon (B, 2) degrees, dates (B, 3)
            ``[year, month, day]`` or a sequence of B ``datetime.date``. May be empty (unconditional
            generation, then ``keys`` gives B). Never modified.
        targets:
            Modality keys (or aliases) to generate; disjoint from the conditions. Every other
            modality of the model is marginalised: held at pure noise with t = 1000 on every call.
        members:
            Ensemble members per sample (independent noise each).
        steps:
            Solver steps = model calls per sample (50 in the paper).
        seed:
            Run seed; with the sample key, member and modality it seeds every draw.
        keys:
            Stable key of each sample (str, int or tuples, e.g. ``("32632", 3, 7)``); default
            ``0..B-1``. The noise of (key, member) is the same in any batch, order or process.
        return_latents:
            Also return the final latents.
        decode:
            Decode targets to physical values (needs their VAEs); False returns latents only.
        order, method, spacing:
            DPM-Solver++ settings (see :func:`copgen_core.sampler.sample_dpmpp`); the defaults are the
            official sampler.
        batch_size:
            Rows (sample x member) per sampler run and VAE call; all B x members at once when None.
        official_quirks:
            Reproduce the official treatment of modalities that are neither conditioned nor
            generated: fresh noise on every call, labelled t = 0 (seeded per sample here).
        condition_encoding:
            ``"mean"`` (default): image conditions are the VAE posterior mean. ``"sample"``: a
            posterior sample as the official code, seeded per (seed, key, modality) and shared by the
            members of a sample.
        normalize_mode:
            ``"strict"`` (default; refuses bad input) or ``"official"`` normalisation.
        guidance:
            Classifier-free guidance weight (see :class:`JointDenoiser`); 1.0, the default and the
            official sampler, is plain conditioning. Above 1 pulls the members towards what the
            conditions imply (sharper, less diverse, twice the backbone calls); ignored without
            conditions. The unguided branch's noise is seeded per (seed, key, member, modality).

        Returns
        -------
        GenerationResult
            Targets only, each shaped (B, members, ...); see :class:`GenerationResult`.

        Raises
        ------
        ValueError
            Unknown or duplicated modality, one outside the model, a modality both condition and
            target, no targets, a condition of the wrong shape (expected and got are named), NaN/inf
            or out-of-range values, inconsistent batch sizes or keys, a missing VAE, bad settings.
        """
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size!r}")
        if not math.isfinite(guidance) or guidance < 0:
            raise ValueError(f"guidance must be a finite weight >= 0 (1 = plain conditioning), got {guidance!r}")
        if condition_encoding not in ("mean", "sample"):
            raise ValueError(f"condition_encoding must be 'mean' or 'sample', got {condition_encoding!r}")
        cond_mods = self._resolve(list(conditions), "conditions")
        target_mods = self._resolve(list(targets), "targets")
        if not target_mods:
            raise ValueError("targets is empty; name at least one modality to generate")
        both = sorted(m.key for m in set(cond_mods) & set(target_mods))
        if both:
            raise ValueError(
                f"{both} are both conditions and targets; a modality is either given or generated"
            )

        raw_by_key = {resolve(k).key: v for k, v in conditions.items()}
        physical = {m.key: _check_condition(m, raw_by_key[m.key]) for m in cond_mods}
        sample_keys = resolve_sample_keys({key: _batch_size(v) for key, v in physical.items()}, keys, "conditions")
        batch = len(sample_keys)

        notes: list[str] = []
        with torch.no_grad():
            cond_latents: dict[str, Tensor] = {}
            for mod in cond_mods:
                pixels = self._normalise(mod, physical[mod.key], normalize_mode, notes)
                latent = self._encode(mod, pixels, sample_keys, seed, condition_encoding, batch_size)
                cond_latents[mod.key] = latent.repeat_interleave(members, dim=0)

            row_keys = [k for k in sample_keys for _ in range(members)]
            row_members = [j for _ in sample_keys for j in range(members)]
            chosen = {m.key for m in cond_mods} | {m.key for m in target_mods}
            marginal_mods = [resolve(k) for k in self.modalities if k not in chosen]
            results: dict[str, list[Tensor]] = {m.key: [] for m in target_mods}
            for part in self._chunks(len(row_keys), batch_size):
                part_keys, part_members = row_keys[part], row_members[part]
                noise = {
                    m.key: sample_noise(
                        m.latent_shape, seed, part_keys, part_members, m.key, "noise", device=self.device
                    )
                    for m in target_mods
                }
                marginal = {
                    m.key: self._marginal(m, seed, part_keys, part_members, official_quirks)
                    for m in marginal_mods
                }
                unguided = (
                    {
                        m.key: sample_noise(
                            m.latent_shape, seed, part_keys, part_members, m.key, "guidance", device=self.device
                        )
                        for m in cond_mods
                    }
                    if guidance != 1.0
                    else None
                )
                out = sample_latents(
                    self.backbone,
                    noise,
                    {k: v[part] for k, v in cond_latents.items()},
                    marginal,
                    steps=steps,
                    order=order,
                    method=method,
                    spacing=spacing,
                    marginal_timestep=0.0 if official_quirks else None,
                    schedule=self.schedule,
                    autocast_dtype=PRECISIONS[self.dtype],
                    per_row=self.batch_invariant,
                    forward=self._forward,
                    guidance=guidance,
                    unconditional=unguided,
                )
                for key, value in out.items():
                    results[key].append(value)
            latents = {key: torch.cat(parts) for key, parts in results.items()}

            outputs: dict[str, np.ndarray] = {}
            if decode:
                for mod in target_mods:
                    values = self._decode(mod, latents[mod.key], batch_size)
                    outputs[mod.key] = values.reshape(batch, members, *values.shape[1:])

        settings = {
            "seed": seed,
            "steps": steps,
            "order": order,
            "method": method,
            "spacing": spacing,
            "official_quirks": official_quirks,
            "condition_encoding": condition_encoding,
            "normalize_mode": normalize_mode,
            "guidance": guidance,
            "dtype": self.dtype,
            "batch_invariant": self.batch_invariant,
            "conditions": [m.key for m in cond_mods],
            "targets": [m.key for m in target_mods],
            "marginalised": [m.key for m in marginal_mods],
        }
        lat_out = (
            {k: v.cpu().reshape(batch, members, *v.shape[1:]) for k, v in latents.items()}
            if return_latents
            else None
        )
        return GenerationResult(outputs, lat_out, sample_keys, members, tuple(notes), settings)

    def _marginal(
        self, modality: Modality, seed: int, keys: Sequence[SampleKey], members: Sequence[int], quirk: bool
    ) -> Tensor | Callable[[], Tensor]:
        """Held noise for a marginalised modality, or (quirk) a source of fresh noise per call."""
        if not quirk:
            return sample_noise(
                modality.latent_shape, seed, keys, members, modality.key, "marginal", device=self.device
            )
        generators = [
            torch.Generator().manual_seed(derive_seed(seed, k, m, modality.key, "quirk"))
            for k, m in zip(keys, members, strict=True)
        ]
        shape = modality.latent_shape

        def fresh() -> Tensor:
            return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(self.device)

        return fresh
