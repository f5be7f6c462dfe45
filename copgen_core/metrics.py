"""Evaluation metrics of COP-GEN outputs (numpy), one import for all of them.

=======================================  ============================================================
module                                   what
=======================================  ============================================================
:mod:`copgen_core.metrics_pointwise`     MAE, RMSE, PSNR, SSIM per band in the official protocol
                                         (evaluation units, truth-range min-max scaling), optional masks
:mod:`copgen_core.metrics_classes`       confusion matrix, accuracy, per-class IoU/F1, mIoU, fw-IoU
:mod:`copgen_core.metrics_scalars`       location error (haversine km), date error (days)
:mod:`copgen_core.metrics_ensemble`      CRPS (exact, fair), spread vs error, coverage, best-of-N
:mod:`copgen_core.metrics_seams`         seam ratio of a mosaic of generated windows
=======================================  ============================================================
"""

from __future__ import annotations

from copgen_core.metrics_classes import (
    LULC_IGNORE_INDEX,
    ClassScores,
    class_indices,
    class_scores,
    confusion_matrix,
)
from copgen_core.metrics_ensemble import (
    best_of_n,
    calibrated_coverage,
    crps_ensemble,
    interval_coverage,
    spread_error,
    spread_skill_ratio,
)
from copgen_core.metrics_pointwise import (
    S1_EVAL_DB_RANGE,
    S2_REFLECTANCE_SCALE,
    gaussian_window,
    mae,
    minmax_scale,
    psnr,
    psnr_from_mse,
    rmse,
    scaled_mse,
    ssim,
    ssim_map,
    to_eval_units,
)
from copgen_core.metrics_scalars import EARTH_RADIUS_KM, date_error_days, days_since_epoch, haversine_km
from copgen_core.metrics_seams import SeamGradients, seam_gradients, seam_ratio

__all__ = [
    "EARTH_RADIUS_KM", "LULC_IGNORE_INDEX", "S1_EVAL_DB_RANGE", "S2_REFLECTANCE_SCALE", "ClassScores",
    "SeamGradients", "best_of_n", "calibrated_coverage", "class_indices", "class_scores", "confusion_matrix", "crps_ensemble",
    "date_error_days", "days_since_epoch", "gaussian_window", "haversine_km", "interval_coverage", "mae",
    "minmax_scale", "psnr", "psnr_from_mse", "rmse", "scaled_mse", "seam_gradients", "seam_ratio",
    "spread_error", "spread_skill_ratio", "ssim", "ssim_map", "to_eval_units",
]
