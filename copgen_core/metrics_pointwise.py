"""Point-wise image metrics of the official COP-GEN evaluation: MAE, RMSE, PSNR and SSIM per band.

Protocol (``benchmark/evaluation/regression.py`` of the official code):

- Values are compared in evaluation units (:func:`to_eval_units`): Sentinel-2 reflectance (DN / 10000),
  Sentinel-1 backscatter in dB clipped to [-50, 10], DEM metres.
- MAE and RMSE are taken in those units.
- PSNR and SSIM are taken after min-max scaling *both* images by the **ground truth's** per-sample
  range to [0, 1] (the prediction is then clipped to [0, 1]), with ``data_range = 1``. Per band, each
  band is scaled by its own range; for a whole sample (``per_band=False``), by the range over all bands.
  A constant truth has its range floored at 1e-6, as the official code does.
- SSIM is torchmetrics' default: an 11 x 11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, averaged
  over the positions whose window lies inside the image (torchmetrics pads by reflection and then crops
  the padded border away, which gives exactly these positions) and over the bands.

Every function takes ``pred`` and ``truth`` shaped (..., C, H, W) and returns (..., C) per band
(``per_band=True``, the default) or (...) per sample. An optional ``mask`` (True = the pixel counts; for
gap filling, the filled pixels) is (..., H, W) (shared by the bands) or (..., C, H, W). A sample or band
without a counted pixel gives NaN. NaN in the inputs propagates: mask no-data out instead.

Warnings
--------
The official evaluation accumulates PSNR over the whole test set (the squared errors of all samples
are pooled before taking the log) and MAE/RMSE over all pixels of all samples. To reproduce those
numbers, average :func:`scaled_mse` (or the squared :func:`rmse`) over the samples first and then apply
:func:`psnr_from_mse` (or the square root); the mean of per-sample PSNRs is a different number.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from copgen_core.modalities import Kind, Modality, resolve

S2_REFLECTANCE_SCALE = 10000.0
"""Sentinel-2 DN per unit reflectance."""
S1_EVAL_DB_RANGE = (-50.0, 10.0)
"""Sentinel-1 backscatter is compared in dB, clipped to this range."""
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
RANGE_FLOOR = 1e-6
"""Smallest truth range used for min-max scaling (the official ``clamp_min(1e-6)``)."""


def to_eval_units(modality: str | Modality, values: np.ndarray) -> np.ndarray:
    """Physical values of an image modality in the units the evaluation compares, float64.

    Parameters
    ----------
    modality:
        Modality key, alias or :class:`~copgen_core.modalities.Modality`.
    values:
        Physical values as the model returns them: S2 DN (reflectance x 10000), S1 linear power,
        DEM metres; any shape.

    Returns
    -------
    np.ndarray
        Same shape, float64: S2 reflectance (DN / 10000); S1 ``10 log10(power)`` clipped to [-50, 10] dB
        (zero or negative power gives -50); DEM metres unchanged. NaN stays NaN.

    Raises
    ------
    ValueError
        For class maps and scalars: use :mod:`copgen_core.metrics_classes` or
        :mod:`copgen_core.metrics_scalars` for those.
    """
    mod = modality if isinstance(modality, Modality) else resolve(modality)
    x = np.asarray(values, dtype=np.float64)
    if mod.kind is Kind.S2:
        return x / S2_REFLECTANCE_SCALE
    if mod.kind is Kind.S1:
        with np.errstate(divide="ignore", invalid="ignore"):
            db = 10.0 * np.log10(np.maximum(x, 1e-30))
        return np.clip(db, *S1_EVAL_DB_RANGE)
    if mod.kind is Kind.DEM:
        return x
    raise ValueError(
        f"{mod.key} ({mod.kind.value}) has no point-wise evaluation units; use the class metrics for LULC "
        "and the cloud mask, haversine_km for lat/lon and date_error_days for dates"
    )


# ------------------------------------------------------------------------------------ helpers


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape} but truth has {t.shape}; they must match")
    if t.ndim < 3:
        raise ValueError(f"images must be (..., C, H, W), got shape {t.shape}; add a band axis")
    return p, t


def _expand_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """A mask of (..., H, W) or (..., C, H, W) as a bool array broadcast to ``shape`` (..., C, H, W)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise ValueError(f"mask must be boolean (True = the pixel counts), got dtype {m.dtype}")
    if m.shape == shape[:-3] + shape[-2:]:
        m = m[..., None, :, :]
    try:
        return np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(
            f"mask has shape {np.shape(mask)}; expected (..., H, W) = {shape[:-3] + shape[-2:]} or "
            f"(..., C, H, W) = {shape}"
        ) from None


def _axes(per_band: bool) -> tuple[int, ...]:
    return (-2, -1) if per_band else (-3, -2, -1)


def _masked_mean(values: np.ndarray, mask: np.ndarray | None, per_band: bool) -> np.ndarray:
    axes = _axes(per_band)
    if mask is None:
        return np.asarray(values.mean(axis=axes))
    total = np.where(mask, values, 0.0).sum(axis=axes)
    count = mask.sum(axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(count > 0, total / np.maximum(count, 1), np.nan))


def minmax_scale(
    pred: np.ndarray, truth: np.ndarray, *, per_band: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``pred`` and ``truth`` (..., C, H, W) by the truth's per-sample range to [0, 1].

    ``(x - min(truth)) / max(max(truth) - min(truth), 1e-6)``, clipped to [0, 1]; min and max are taken
    over (H, W) per band (``per_band``) or over (C, H, W), ignoring NaN.

    Returns
    -------
    (pred01, truth01)
        float64 arrays of the input shape.
    """
    p, t = _pair(pred, truth)
    axes = _axes(per_band)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All-NaN slice")
        lo = np.nanmin(t, axis=axes, keepdims=True)
        hi = np.nanmax(t, axis=axes, keepdims=True)
    scale = np.maximum(hi - lo, RANGE_FLOOR)
    return np.clip((p - lo) / scale, 0.0, 1.0), np.clip((t - lo) / scale, 0.0, 1.0)


# ------------------------------------------------------------------------------------ metrics


def mae(
    pred: np.ndarray, truth: np.ndarray, *, mask: np.ndarray | None = None, per_band: bool = True
) -> np.ndarray:
    """Mean absolute error in the inputs' units, (..., C) per band or (...) per sample."""
    p, t = _pair(pred, truth)
    return _masked_mean(np.abs(p - t), _expand_mask(mask, t.shape), per_band)


def rmse(
    pred: np.ndarray, truth: np.ndarray, *, mask: np.ndarray | None = None, per_band: bool = True
) -> np.ndarray:
    """Root mean squared error in the inputs' units, (..., C) per band or (...) per sample."""
    p, t = _pair(pred, truth)
    return np.sqrt(_masked_mean((p - t) ** 2, _expand_mask(mask, t.shape), per_band))


def scaled_mse(
    pred: np.ndarray, truth: np.ndarray, *, mask: np.ndarray | None = None, per_band: bool = True
) -> np.ndarray:
    """Mean squared error after :func:`minmax_scale` (the quantity PSNR is taken of)."""
    p01, t01 = minmax_scale(pred, truth, per_band=per_band)
    return _masked_mean((p01 - t01) ** 2, _expand_mask(mask, t01.shape), per_band)


def psnr_from_mse(mse: np.ndarray | float) -> np.ndarray:
    """PSNR in dB with data range 1: ``10 log10(1 / mse)`` (inf for a zero error)."""
    with np.errstate(divide="ignore"):
        return np.asarray(-10.0 * np.log10(np.asarray(mse, dtype=np.float64)))


def psnr(
    pred: np.ndarray, truth: np.ndarray, *, mask: np.ndarray | None = None, per_band: bool = True
) -> np.ndarray:
    """Peak signal-to-noise ratio in dB after scaling by the truth's range (data range 1).

    Returns
    -------
    np.ndarray
        (..., C) per band or (...) per sample; inf where the scaled images are identical.
    """
    return psnr_from_mse(scaled_mse(pred, truth, mask=mask, per_band=per_band))


def gaussian_window(size: int = SSIM_KERNEL_SIZE, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The 1-D normalised Gaussian (size,) of torchmetrics' SSIM; the 2-D window is its outer product."""
    dist = np.arange((1 - size) / 2, (1 + size) / 2, 1.0)
    g = np.exp(-((dist / sigma) ** 2) / 2.0)
    return g / g.sum()


def ssim_map(pred01: np.ndarray, truth01: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Local SSIM of two already scaled images at every fully covered window position.

    Parameters
    ----------
    pred01, truth01:
        (..., H, W) images (one band each; leading axes are independent), H and W >= 11.
    data_range:
        Value range of the images (1 after :func:`minmax_scale`).

    Returns
    -------
    np.ndarray
        (..., H - 10, W - 10) float64: entry (i, j) is the SSIM of the window centred on pixel
        (i + 5, j + 5), with C1 = (0.01 data_range)^2 and C2 = (0.03 data_range)^2.

    Raises
    ------
    ValueError
        If the images differ in shape or are smaller than the window.
    """
    p = np.asarray(pred01, dtype=np.float64)
    t = np.asarray(truth01, dtype=np.float64)
    if p.shape != t.shape or t.ndim < 2:
        raise ValueError(f"ssim_map needs two (..., H, W) images of one shape, got {p.shape} and {t.shape}")
    h, w = t.shape[-2:]
    k = SSIM_KERNEL_SIZE
    if h < k or w < k:
        raise ValueError(f"SSIM needs images of at least {k} x {k} pixels, got {h} x {w}")
    g = torch.from_numpy(gaussian_window())
    col, row = g.reshape(1, 1, k, 1), g.reshape(1, 1, 1, k)
    lead = t.shape[:-2]

    def blur(x: np.ndarray) -> torch.Tensor:
        xt = torch.from_numpy(np.ascontiguousarray(x)).reshape(-1, 1, h, w)
        return F.conv2d(F.conv2d(xt, col), row)

    mu_p, mu_t = blur(p), blur(t)
    var_p = blur(p * p) - mu_p**2
    var_t = blur(t * t) - mu_t**2
    cov = blur(p * t) - mu_p * mu_t
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    num = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    den = (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    return (num / den).numpy().reshape(*lead, h - k + 1, w - k + 1)


def ssim(
    pred: np.ndarray, truth: np.ndarray, *, mask: np.ndarray | None = None, per_band: bool = True
) -> np.ndarray:
    """Structural similarity after scaling by the truth's range (torchmetrics' default SSIM).

    Parameters
    ----------
    pred, truth:
        (..., C, H, W) in evaluation units, H and W >= 11.
    mask:
        Optional (..., H, W) or (..., C, H, W) bool: only windows *centred* on a True pixel count
        (their windows may reach unmasked pixels); centres within 5 px of the edge never count.
    per_band:
        (..., C) with each band scaled by its own range, or (...) with the sample scaled by its range
        over all bands and the SSIM map averaged over the bands.

    Returns
    -------
    np.ndarray
        SSIM in [-1, 1] (1 = identical); NaN where no window counts.
    """
    p01, t01 = minmax_scale(pred, truth, per_band=per_band)
    local = ssim_map(p01, t01)
    m = _expand_mask(mask, t01.shape)
    r = (SSIM_KERNEL_SIZE - 1) // 2
    if m is not None:
        m = m[..., r:-r, r:-r]
    return _masked_mean(local, m, per_band)


__all__ = [
    "RANGE_FLOOR", "S1_EVAL_DB_RANGE", "S2_REFLECTANCE_SCALE", "SSIM_K1", "SSIM_K2", "SSIM_KERNEL_SIZE",
    "SSIM_SIGMA", "gaussian_window", "mae", "minmax_scale", "psnr", "psnr_from_mse", "rmse", "scaled_mse",
    "ssim", "ssim_map", "to_eval_units",
]
