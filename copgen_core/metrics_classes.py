"""Class-map metrics (LULC, cloud mask): confusion matrix, accuracy, per-class IoU, mIoU and F1.

As the official ``benchmark/evaluation/classification.py``: pixels whose *truth* is the ignore index
are dropped (the quant script ignores index 0, NoData, for LULC); a prediction of the ignored class on
another pixel still counts as an error. The confusion matrix is ``cm[truth, pred]``.

Per-class scores are NaN for a class that is in neither the truth nor the prediction (the official
code writes 0 there but leaves the class out of the means, which is what the NaN-skipping means here
do). Unlike the official code, the ignored class is also left out of mIoU and mean F1: there its
IoU is 0 whenever the model predicts it at all, which only measures how often it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copgen_core.modalities import Kind, Modality, resolve
from copgen_core.normalize_classes import CLOUD_CODES, LULC_CODES

LULC_IGNORE_INDEX = 0
"""The official LULC evaluation ignores index 0 (NoData)."""


def class_indices(modality: str | Modality, codes: np.ndarray) -> np.ndarray:
    """Raw class codes of LULC or the cloud mask -> class indices (int64, same shape).

    LULC codes (0, 1, 2, 4, 5, 7, 8, 9, 10, 11) map to indices 0..9; cloud-mask codes 0..3 are their
    own indices.

    Raises
    ------
    ValueError
        For another modality, or a code outside the table (the message lists the codes found).
    """
    mod = modality if isinstance(modality, Modality) else resolve(modality)
    if mod.kind not in (Kind.LULC, Kind.CLOUD):
        raise ValueError(f"{mod.key} is not a class map; class_indices applies to LULC and the cloud mask")
    table_codes = LULC_CODES if mod.kind is Kind.LULC else CLOUD_CODES
    arr = np.asarray(codes)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{mod.key} codes must be whole numbers; got non-integer or NaN values")
    lookup = np.full(max(table_codes) + 1, -1, dtype=np.int64)
    lookup[list(table_codes)] = np.arange(len(table_codes))
    ints = arr.astype(np.int64)
    bad = (ints < 0) | (ints > max(table_codes))
    idx = np.where(bad, -1, lookup[np.clip(ints, 0, max(table_codes))])
    if np.any(idx < 0):
        unknown = sorted({int(v) for v in np.unique(ints[idx < 0])})
        raise ValueError(f"{mod.key}: codes {unknown} are not in {list(table_codes)}; pass raw class codes")
    return idx


def confusion_matrix(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    *,
    ignore_index: int | None = None,
    mask: np.ndarray | None = None,
    batch_dims: int = 0,
) -> np.ndarray:
    """Confusion matrix ``cm[..., truth, pred]`` of class-index maps.

    Parameters
    ----------
    pred, truth:
        Integer class indices in [0, num_classes), same shape (any).
    num_classes:
        K.
    ignore_index:
        Pixels whose truth equals it are not counted.
    mask:
        Optional bool of the same shape: only True pixels count.
    batch_dims:
        Keep the first ``batch_dims`` axes (e.g. 2 for per (sample, member) matrices); all other axes
        are pooled.

    Returns
    -------
    np.ndarray
        int64 (*shape[:batch_dims], K, K).

    Raises
    ------
    ValueError
        On mismatched shapes or indices outside [0, K) (among the counted pixels).
    """
    p = np.asarray(pred)
    t = np.asarray(truth)
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape} but truth has {t.shape}; they must match")
    if not 0 <= batch_dims <= t.ndim:
        raise ValueError(f"batch_dims must be in [0, {t.ndim}], got {batch_dims}")
    for name, a in (("pred", p), ("truth", t)):
        if a.dtype.kind not in "iub":
            raise ValueError(f"{name} must hold integer class indices, got dtype {a.dtype}; use class_indices()")
    keep = np.ones(t.shape, dtype=bool)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != t.shape or m.dtype != np.bool_:
            raise ValueError(f"mask must be bool of shape {t.shape}, got {m.dtype} {m.shape}")
        keep &= m
    if ignore_index is not None:
        keep &= t != ignore_index
    for name, a in (("pred", p), ("truth", t)):
        bad = keep & ((a < 0) | (a >= num_classes))
        if bad.any():
            raise ValueError(
                f"{name} holds class indices {sorted({int(v) for v in np.unique(a[bad])})} outside "
                f"[0, {num_classes}); pass indices (class_indices() maps raw codes) or fix num_classes"
            )
    lead = t.shape[:batch_dims]
    n_batch = int(np.prod(lead)) if lead else 1
    batch_id = np.broadcast_to(
        np.arange(n_batch).reshape(lead + (1,) * (t.ndim - batch_dims)), t.shape
    )
    flat = (batch_id * num_classes + t.astype(np.int64)) * num_classes + p.astype(np.int64)
    counts = np.bincount(flat[keep], minlength=n_batch * num_classes * num_classes)
    return counts.reshape(*lead, num_classes, num_classes)


@dataclass(frozen=True)
class ClassScores:
    """Scores from a confusion matrix; leading axes as the matrix's.

    Attributes
    ----------
    accuracy:
        (...) pixel accuracy (top-1) over the counted pixels.
    iou, precision, recall, f1:
        (..., K) per class; NaN where undefined (class absent from truth and prediction, or no
        prediction of it for precision, no truth of it for recall).
    miou, mean_f1:
        (...) means over the classes with a defined score, the ignored class left out.
    fw_iou:
        (...) frequency-weighted IoU (weights: truth pixels per class).
    """

    accuracy: np.ndarray
    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    miou: np.ndarray
    mean_f1: np.ndarray
    fw_iou: np.ndarray


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean(x: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(x)
    n = valid.sum(axis=-1)
    return _ratio(np.where(valid, x, 0.0).sum(axis=-1), n)


def class_scores(cm: np.ndarray, *, ignore_index: int | None = None) -> ClassScores:
    """Accuracy, per-class IoU/precision/recall/F1, mIoU, mean F1 and fw-IoU of ``cm[..., truth, pred]``.

    Parameters
    ----------
    cm:
        (..., K, K) counts from :func:`confusion_matrix` (build it with the same ``ignore_index``).
    ignore_index:
        A class left out of the means (its per-class entries are NaN).

    Raises
    ------
    ValueError
        If ``cm`` is not (..., K, K).
    """
    c = np.asarray(cm, dtype=np.float64)
    if c.ndim < 2 or c.shape[-1] != c.shape[-2]:
        raise ValueError(f"cm must be (..., K, K), got shape {c.shape}")
    k = c.shape[-1]
    tp = np.diagonal(c, axis1=-2, axis2=-1)
    truth_n = c.sum(axis=-1)
    pred_n = c.sum(axis=-2)
    fp, fn = pred_n - tp, truth_n - tp
    iou = _ratio(tp, tp + fp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    precision = _ratio(tp, pred_n)
    recall = _ratio(tp, truth_n)
    if ignore_index is not None:
        if not 0 <= ignore_index < k:
            raise ValueError(f"ignore_index {ignore_index} is outside [0, {k})")
        for arr in (iou, f1, precision, recall):
            arr[..., ignore_index] = np.nan
    weights = np.where(np.isnan(iou), 0.0, truth_n)
    fw = _ratio((weights * np.nan_to_num(iou)).sum(axis=-1), weights.sum(axis=-1))
    accuracy = _ratio(tp.sum(axis=-1), c.sum(axis=(-2, -1)))
    return ClassScores(
        accuracy=accuracy, iou=iou, precision=precision, recall=recall, f1=f1,
        miou=_nanmean(iou), mean_f1=_nanmean(f1), fw_iou=fw,
    )


__all__ = ["LULC_IGNORE_INDEX", "ClassScores", "class_indices", "class_scores", "confusion_matrix"]
