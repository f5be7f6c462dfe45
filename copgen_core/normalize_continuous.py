"""Normalisation of the continuous image modalities: Sentinel-2 DN, Sentinel-1 backscatter, DEM.

Each maps raw values into the VAE input range (about [-1, 1]) and back, elementwise, so any shape
works: a band (H, W), a band group (C, H, W) or a batch (B, C, H, W). Arithmetic is float32 with
float32 constants, the order of the official ``pre_process_data`` / ``post_process_data`` (bit-exact
with the golden vectors).

Forward maps (copgen-model.md §1.3):

* S2: ``DN / 10000 * 2 - 1``; no clipping (DN 65535 -> 12.107).
* S1: ``v <= 0 -> 2.638e-6``; ``dB = 10 log10(v)``; ``(dB + 55.787186) / 96.012986 * 2 - 1``.
* DEM: ``m <= 0 -> 5.899e-6``; ``(log1p(m) - 6e-6) / (9.088 - 6e-6) * 2 - 1``.

Inverses undo the affine map, clamp to [0, 1] (S1, DEM) and floor at the minimum positive value.
"""

from __future__ import annotations

import torch

from copgen_core.normalize_common import Array, Mode, Normalized, back, check_mode, count, pct, to_torch

S2_DN_SCALE = 10000.0
"""Sentinel-2 DN per unit reflectance."""

S2_DN_MAX = 65535
"""Largest valid Sentinel-2 DN (uint16)."""

S2_BASELINE_OFFSET_DN = 1000
"""DN offset added to L1C/L2A products from processing baseline 04.00 (Jan 2022) on."""

S1_MIN_DB = -55.787186
S1_MAX_DB = 40.2258
S1_MIN_POSITIVE = 2.6380407689430285e-06
"""Sentinel-1 normalisation range in dB and the linear floor that replaces v <= 0 (official config)."""

DEM_MIN_LOG = 0.000006
DEM_MAX_LOG = 9.088
DEM_MIN_POSITIVE = 5.899129519093549e-06
"""DEM normalisation range of log1p(metres) (9.088 ~ log1p(8849 m)) and the floor for m <= 0."""

DEM_MAX_M = 8847.47
"""Top of the calibrated range, about expm1(9.088) m: strict mode clips above it, post-processing never exceeds it."""


def _no_nan(x: torch.Tensor, what: str, fix: str) -> None:
    if bool(torch.isnan(x).any()):
        raise ValueError(f"{what}: input holds {count(torch.isnan(x))} NaN values; {fix}")


def s2_pre(dn: Array, *, mode: Mode = "strict", baseline_offset: bool = False) -> Normalized:
    """Sentinel-2 DN (reflectance x 10000) to the VAE range: ``DN / 10000 * 2 - 1``, float32.

    Parameters
    ----------
    dn:
        DN of any shape, integer or float (numpy or torch).
    mode:
        ``"official"`` applies the map as is (no checks, no clipping). ``"strict"`` also refuses NaN and
        DN outside [0, 65535].
    baseline_offset:
        Strict mode only: subtract the +1000 DN offset of processing baseline >= 04.00 products first;
        DN below the offset (other than the no-data 0) are raised to 0 and reported. COP-GEN was
        trained without removing it, so leave it False to match the training distribution.

    Raises
    ------
    ValueError
        Strict mode: NaN or DN outside [0, 65535]; official mode with ``baseline_offset=True``.
    """
    check_mode(mode)
    x, as_np = to_torch(dn)
    notes: list[str] = []
    if mode == "official":
        if baseline_offset:
            raise ValueError("mode='official' never removes the S2 baseline offset; use mode='strict' for that")
    else:
        _no_nan(x, "S2", "mask or fill no-data with 0 before normalising")
        bad = (x < 0) | (x > S2_DN_MAX)
        if bool(bad.any()):
            lo, hi = float(x.min()), float(x.max())
            raise ValueError(
                f"S2: {count(bad)} DN values lie outside [0, {S2_DN_MAX}] (range {lo:g}..{hi:g}); pass raw "
                "uint16 DN (reflectance x 10000), not scaled reflectance or a signed/offset product"
            )
        nodata = x == 0
        if baseline_offset:
            below = (x < S2_BASELINE_OFFSET_DN) & ~nodata
            if bool(below.any()):
                notes.append(f"S2: {pct(count(below), x.numel())} below the {S2_BASELINE_OFFSET_DN} DN baseline "
                             "offset were raised to 0 after removing it")
            x = torch.clamp(x - S2_BASELINE_OFFSET_DN, min=0.0)
            x = torch.where(nodata, torch.zeros_like(x), x)
            notes.append(f"S2: removed the +{S2_BASELINE_OFFSET_DN} DN baseline offset (COP-GEN was trained "
                         "without removing it)")
        if bool(nodata.any()):
            notes.append(f"S2: {pct(count(nodata), x.numel())} have DN 0 (no-data); they map to -1")
    y = x / S2_DN_SCALE * 2 - 1
    return Normalized(back(y, as_np), tuple(notes))


def s2_post(y: Array) -> Array:
    """Inverse of :func:`s2_pre`: ``(y + 1) / 2 * 10000`` as float32 DN, no clipping."""
    t, as_np = to_torch(y)
    return back((t + 1) / 2 * S2_DN_SCALE, as_np)


def _db_range() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(S1_MIN_DB, dtype=torch.float32), torch.tensor(S1_MAX_DB, dtype=torch.float32)


def s1_pre(values: Array, *, mode: Mode = "strict", in_db: bool = False) -> Normalized:
    """Sentinel-1 RTC backscatter (linear power, or dB with ``in_db``) to the VAE range, float32.

    Official: ``v <= 0`` becomes ``S1_MIN_POSITIVE``; positive values below it are kept (giving
    values below -1), nothing is clipped. Strict: NaN raises; every value below the floor is raised to
    it and values above ``S1_MAX_DB`` are clipped to it, each reported in the notes, so the result
    lies in [-1, 1].

    Raises
    ------
    ValueError
        Strict mode, if the input holds NaN.
    """
    check_mode(mode)
    x, as_np = to_torch(values)
    notes: list[str] = []
    if mode == "strict":
        _no_nan(x, "S1", "fill no-data (e.g. with 0, which maps to the floor) before normalising")
    if in_db:
        x = 10 ** (x / 10)
    floor = torch.tensor(S1_MIN_POSITIVE, dtype=torch.float32, device=x.device)
    mn, mx = (c.to(x.device) for c in _db_range())
    if mode == "strict":
        low = x < floor
        if bool(low.any()):
            notes.append(f"S1: {pct(count(low), x.numel())} below {S1_MIN_POSITIVE:.4g} linear "
                         f"({S1_MIN_DB} dB, incl. <= 0) were raised to that floor")
        high = x > 10 ** (S1_MAX_DB / 10)
        if bool(high.any()):
            notes.append(f"S1: {pct(count(high), x.numel())} above {S1_MAX_DB} dB were clipped to it")
        x = torch.where(low, floor, x)
    else:
        x = torch.where(x <= 0, floor, x)
    db = 10 * torch.log10(x)
    if mode == "strict":
        db = torch.minimum(db, mx)
    y = (db - mn) / (mx - mn) * 2 - 1
    return Normalized(back(y, as_np), tuple(notes))


def s1_post(y: Array) -> Array:
    """Inverse of :func:`s1_pre`: linear backscatter, float32, in [S1_MIN_POSITIVE, 10^(S1_MAX_DB/10)]."""
    t, as_np = to_torch(y)
    u = torch.clamp((t + 1) / 2, 0, 1)
    db = u * (S1_MAX_DB - S1_MIN_DB) + S1_MIN_DB
    return back(torch.clamp(10 ** (db / 10), min=S1_MIN_POSITIVE), as_np)


def dem_pre(metres: Array, *, mode: Mode = "strict") -> Normalized:
    """Elevation in metres to the VAE range, float32.

    Official: elevations <= 0 m become ``DEM_MIN_POSITIVE`` (so below-sea-level terrain is lost) and
    nothing is clipped (8849 m gives 1.0000343). Strict: the same floor, reported in the notes, plus
    clipping at the calibrated top (log1p = 9.088, about 8849 m); NaN raises.

    Raises
    ------
    ValueError
        Strict mode, if the input holds NaN.
    """
    check_mode(mode)
    x, as_np = to_torch(metres)
    notes: list[str] = []
    floor = torch.tensor(DEM_MIN_POSITIVE, dtype=torch.float32, device=x.device)
    lo = torch.tensor(DEM_MIN_LOG, dtype=torch.float32, device=x.device)
    hi = torch.tensor(DEM_MAX_LOG, dtype=torch.float32, device=x.device)
    if mode == "strict":
        _no_nan(x, "DEM", "fill voids (e.g. by interpolation) before normalising")
        below = x < 0
        if bool(below.any()):
            notes.append(f"DEM: {pct(count(below), x.numel())} below 0 m (min {float(x.min()):g} m) were "
                         f"raised to the floor {DEM_MIN_POSITIVE:.2g} m; COP-GEN cannot represent them")
    v = torch.log1p(torch.where(x <= 0, floor, x))
    if mode == "strict":
        above = v > hi
        if bool(above.any()):
            notes.append(f"DEM: {pct(count(above), x.numel())} above the calibrated top ({DEM_MAX_M:g} m) were "
                         "clipped to it")
        v = torch.minimum(v, hi)
    y = (v - lo) / (hi - lo) * 2 - 1
    return Normalized(back(y, as_np), tuple(notes))


def dem_post(y: Array) -> Array:
    """Inverse of :func:`dem_pre`: metres, float32, in [DEM_MIN_POSITIVE, ~8847.47]."""
    t, as_np = to_torch(y)
    u = torch.clamp((t + 1) / 2, 0, 1)
    metres = torch.expm1(u * (DEM_MAX_LOG - DEM_MIN_LOG) + DEM_MIN_LOG)
    return back(torch.clamp(metres, min=DEM_MIN_POSITIVE), as_np)
