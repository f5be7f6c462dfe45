"""Per-modality pre- and post-processing: raw values <-> the space the VAEs and the backbone see.

One entry point per direction, dispatched on the modality's kind:

* :func:`normalize` (``pre_process_data``): raw values -> :class:`Normalized` ``(values, notes)``.
* :func:`denormalize` (``post_process_data``): decoded values -> raw units.

======================  ==============================  ===========================================
kind                    raw input                       normalised
======================  ==============================  ===========================================
S2 (all 6 groups)       DN, any shape, e.g. (C, H, W)   float32 ``DN/10000*2-1``, same shape
S1                      linear power (or dB, ``in_db``) float32 in [-1, 1], same shape
DEM                     metres                          float32 in [-1, 1], same shape
LULC                    Esri codes (1, H, W)            (10, H, W) float32 one-hot +-1
cloud mask              codes 0..3 (1, H, W)            (4, H, W) float32 one-hot +-1
lat/lon                 [lat, lon] (..., 2) degrees     (..., 1, 1, 3) float32 unit vector
date                    date(s) or [y, m, d] (..., 3)   (..., 1, 1, 3) float32 [sin, cos, year]
======================  ==============================  ===========================================

``mode="official"`` reproduces COP-GEN bit for bit, quirks included (negative elevations lost,
unknown class codes silently -> 0, the S2 +1000 DN baseline offset kept, no clipping). The default
``mode="strict"`` refuses bad input (NaN, out-of-range DN, unknown class codes) with a message that
names the problem and the fix, and reports in ``notes`` everything it changed.

Multi-band groups need nothing special: the per-band map applies elementwise to (C, H, W). numpy in
gives numpy out and torch in gives torch out (on the same device) in both directions, except that
dates given as ``datetime`` objects come back as numpy.
"""

from __future__ import annotations

from copgen_core.modalities import Kind, Modality, resolve
from copgen_core.normalize_classes import (
    CLOUD_CLASS_NAMES,
    CLOUD_CODES,
    CLOUD_PALETTE,
    LULC_CLASS_NAMES,
    LULC_CODES,
    LULC_PALETTE,
    cloud_post,
    cloud_pre,
    lulc_post,
    lulc_pre,
    lulc_rgb,
)
from copgen_core.normalize_common import Array, Mode, Normalized, check_mode
from copgen_core.normalize_continuous import dem_post, dem_pre, s1_post, s1_pre, s2_post, s2_pre
from copgen_core.normalize_scalars import date_pre as _date_pre
from copgen_core.normalize_scalars import (
    decode_date,
    encode_date,
    encode_datetime,
    encode_latlon,
    encode_timestamp,
    latlon_post,
    latlon_pre,
)

__all__ = [
    "CLOUD_CLASS_NAMES", "CLOUD_CODES", "CLOUD_PALETTE", "LULC_CLASS_NAMES", "LULC_CODES", "LULC_PALETTE",
    "Mode", "Normalized", "decode_date", "denormalize", "encode_date", "encode_datetime", "encode_latlon",
    "encode_timestamp", "lulc_rgb", "normalize",
]


def _modality(modality: str | Modality) -> Modality:
    return modality if isinstance(modality, Modality) else resolve(modality)


def normalize(
    modality: str | Modality,
    values: object,
    *,
    mode: Mode = "strict",
    baseline_offset: bool = False,
    in_db: bool = False,
) -> Normalized:
    """Raw values of one modality to its VAE / backbone input space.

    Parameters
    ----------
    modality:
        A :class:`~copgen_core.modalities.Modality`, an official key or an alias (``"dem"``, ``"s1"``...).
    values:
        Raw values in the layout of the table in the module docstring (numpy or torch).
    mode:
        ``"strict"`` (default) or ``"official"``.
    baseline_offset:
        S2 only, strict only: subtract the +1000 DN offset of processing baseline >= 04.00 first.
    in_db:
        S1 only: the input is in dB instead of linear power.

    Returns
    -------
    Normalized
        ``(values, notes)``: float32 array and the strict-mode notes (empty tuple if nothing to say).

    Raises
    ------
    KeyError
        Unknown modality name.
    ValueError
        Bad mode, an option given for a kind it does not apply to, or input strict mode refuses.
    """
    check_mode(mode)
    m = _modality(modality)
    if baseline_offset and m.kind is not Kind.S2:
        raise ValueError(f"baseline_offset applies to Sentinel-2 only, not to {m.key}")
    if in_db and m.kind is not Kind.S1:
        raise ValueError(f"in_db applies to Sentinel-1 only, not to {m.key}")
    if m.kind is Kind.S2:
        return s2_pre(values, mode=mode, baseline_offset=baseline_offset)  # type: ignore[arg-type]
    if m.kind is Kind.S1:
        return s1_pre(values, mode=mode, in_db=in_db)  # type: ignore[arg-type]
    if m.kind is Kind.DEM:
        return dem_pre(values, mode=mode)  # type: ignore[arg-type]
    if m.kind is Kind.LULC:
        return lulc_pre(values, mode=mode)  # type: ignore[arg-type]
    if m.kind is Kind.CLOUD:
        return cloud_pre(values, mode=mode)  # type: ignore[arg-type]
    if m.kind is Kind.LATLON:
        return latlon_pre(values, mode=mode)  # type: ignore[arg-type]
    return _date_pre(values, mode=mode)


def denormalize(modality: str | Modality, values: Array) -> Array:
    """Decoded values of one modality back to raw units (the official ``post_process_data``).

    ======================  =====================================================================
    kind                    output
    ======================  =====================================================================
    S2                      float32 DN ``(y+1)/2*10000``, same shape, no clipping
    S1                      float32 linear power, clamped to the normalisation range
    DEM                     float32 metres in [5.9e-6, 8847.47]
    LULC / cloud mask       int64 raw codes, (K, H, W) -> (1, H, W), (B, K, H, W) -> (B, 1, H, W)
    lat/lon                 float32 (..., 3) -> (..., 2) [lat, lon] degrees
    date                    int64 (..., 3) -> (..., 3) [day, month, year]
    ======================  =====================================================================

    numpy in gives numpy out, torch in gives torch out on the same device.

    Raises
    ------
    KeyError
        Unknown modality name.
    ValueError
        Wrong channel count or last-axis size for the kind; non-finite date vectors.
    """
    m = _modality(modality)
    post = {
        Kind.S2: s2_post, Kind.S1: s1_post, Kind.DEM: dem_post, Kind.LULC: lulc_post, Kind.CLOUD: cloud_post,
        Kind.LATLON: latlon_post, Kind.DATE: decode_date,
    }[m.kind]
    return post(values)
