"""Ensemble metrics: CRPS (exact and fair), spread vs error, interval coverage and best-of-N.

An ensemble is an array with a member axis (``axis``, default 1: generation returns
(B, members, ...)); the truth has the ensemble's shape without that axis. Point-wise functions return
one value per truth element; reduce them (mean over pixels, samples) yourself.
"""

from __future__ import annotations

import numpy as np


def _members_last(ensemble: np.ndarray, truth: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(ensemble, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if e.ndim == 0:
        raise ValueError("ensemble must have a member axis")
    ax = axis % e.ndim if -e.ndim <= axis < e.ndim else None
    if ax is None:
        raise ValueError(f"axis {axis} is out of range for an ensemble of shape {e.shape}")
    e = np.moveaxis(e, ax, -1)
    if t.shape != e.shape[:-1]:
        raise ValueError(
            f"truth has shape {t.shape}; expected the ensemble's shape without the member axis {axis}: "
            f"{e.shape[:-1]}"
        )
    return e, t


def crps_ensemble(
    ensemble: np.ndarray, truth: np.ndarray, *, axis: int = 1, fair: bool = False
) -> np.ndarray:
    """Continuous ranked probability score of an ensemble, point-wise (lower is better).

    Exact estimator of the empirical ensemble distribution:
    ``CRPS = mean_i |x_i - y| - 1/(2 M^2) sum_ij |x_i - x_j|``; the fair variant divides the pair sum by
    ``2 M (M - 1)`` instead (unbiased for the CRPS of the distribution the members are drawn from). The
    pair sum is computed in O(M log M) by sorting: ``sum_ij |x_i - x_j| = 2 sum_i (2i - M - 1) x_(i)``
    for the sorted members x_(1) <= ... <= x_(M).

    Parameters
    ----------
    ensemble:
        Members along ``axis`` (M >= 1; M >= 2 for ``fair``), in the truth's units.
    truth:
        The ensemble's shape without the member axis.
    axis:
        Member axis of ``ensemble``.
    fair:
        Use the fair (unbiased) estimator.

    Returns
    -------
    np.ndarray
        Truth's shape, float64, in the truth's units; |x - y| for a single member.

    Raises
    ------
    ValueError
        On mismatched shapes, or ``fair`` with fewer than 2 members.
    """
    e, t = _members_last(ensemble, truth, axis)
    m = e.shape[-1]
    if fair and m < 2:
        raise ValueError(f"the fair CRPS needs at least 2 members, got {m}")
    skill = np.abs(e - t[..., None]).mean(axis=-1)
    ranks = 2.0 * np.arange(1, m + 1) - m - 1
    pair_half = (np.sort(e, axis=-1) * ranks).sum(axis=-1)  # = sum_ij |x_i - x_j| / 2
    return skill - pair_half / (m * (m - 1) if fair else m * m)


def spread_error(ensemble: np.ndarray, truth: np.ndarray, *, axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Point-wise ensemble spread and error of the ensemble mean.

    Returns
    -------
    (spread, error)
        Truth's shape: ``spread`` the members' standard deviation (ddof 1; NaN for one member),
        ``error`` = ``|mean - truth|``.
    """
    e, t = _members_last(ensemble, truth, axis)
    m = e.shape[-1]
    spread = e.std(axis=-1, ddof=1) if m > 1 else np.full(t.shape, np.nan)
    return spread, np.abs(e.mean(axis=-1) - t)


def spread_skill_ratio(
    ensemble: np.ndarray,
    truth: np.ndarray,
    *,
    axis: int = 1,
    mask: np.ndarray | None = None,
    corrected: bool = True,
) -> float:
    """Spread-skill ratio ``sqrt(mean spread^2) / RMSE(ensemble mean)`` over all (masked) points.

    For an ensemble whose members and truth are exchangeable draws of one distribution (a calibrated
    ensemble) the ratio is 1 with ``corrected`` (the factor ``sqrt((M + 1) / M)`` accounts for the
    mean of M members itself being uncertain; Fortin et al. 2014); below 1 is over-confident, above 1
    under-confident.

    Parameters
    ----------
    mask:
        Optional bool of the truth's shape: only True points count.

    Raises
    ------
    ValueError
        With fewer than 2 members, or no counted point.
    """
    e, t = _members_last(ensemble, truth, axis)
    m = e.shape[-1]
    if m < 2:
        raise ValueError(f"the spread-skill ratio needs at least 2 members, got {m}")
    var = e.var(axis=-1, ddof=1)
    sq_err = (e.mean(axis=-1) - t) ** 2
    if mask is not None:
        keep = np.asarray(mask)
        if keep.shape != t.shape or keep.dtype != np.bool_:
            raise ValueError(f"mask must be bool of the truth's shape {t.shape}, got {keep.dtype} {keep.shape}")
        var, sq_err = var[keep], sq_err[keep]
    if var.size == 0:
        raise ValueError("no point counts: the mask is all False")
    factor = np.sqrt((m + 1) / m) if corrected else 1.0
    return float(np.sqrt(var.mean()) / np.sqrt(sq_err.mean()) * factor)


def interval_coverage(
    ensemble: np.ndarray,
    truth: np.ndarray,
    *,
    axis: int = 1,
    lower: float = 0.05,
    upper: float = 0.95,
) -> np.ndarray:
    """Whether the truth lies in the ensemble's central interval, point-wise.

    The interval is ``[quantile(lower), quantile(upper)]`` of the members (numpy's linear quantiles),
    bounds included. Its mean over points is the coverage; for a calibrated ensemble it tends to
    ``upper - lower`` (0.9) as the ensemble grows (fewer members give narrower empirical intervals;
    :func:`calibrated_coverage` gives the expected value for a given size).

    Returns
    -------
    np.ndarray
        bool, truth's shape (False where the truth or the members are NaN).

    Raises
    ------
    ValueError
        On mismatched shapes or ``not 0 <= lower < upper <= 1``.
    """
    if not 0.0 <= lower < upper <= 1.0:
        raise ValueError(f"need 0 <= lower < upper <= 1, got lower={lower}, upper={upper}")
    e, t = _members_last(ensemble, truth, axis)
    lo, hi = np.quantile(e, [lower, upper], axis=-1)
    return (t >= lo) & (t <= hi)


def calibrated_coverage(members: int, *, lower: float = 0.05, upper: float = 0.95) -> float:
    """Expected :func:`interval_coverage` of a perfectly calibrated ensemble of ``members`` members.

    When the truth and the members are exchangeable draws of one continuous distribution, the truth's
    rank among the ``members + 1`` values is uniform, and inside the gap between two neighbouring
    members its place is uniform too. numpy's linear ``quantile(q)`` lies ``q (members - 1)`` gaps
    above the lowest member, so the truth falls below ``quantile(lower)`` with probability
    ``(1 + lower (members - 1)) / (members + 1)``, and likewise above ``quantile(upper)``. Hence::

        calibrated_coverage = (upper - lower) (members - 1) / (members + 1)

    i.e. 0.70 for 8 members, 0.83 for 24, 0.85 for 32, tending to ``upper - lower``: a measured coverage
    is calibrated when it is near this value, not near 0.9, unless the ensemble is large.

    Raises
    ------
    ValueError
        On ``members < 1`` or ``not 0 <= lower < upper <= 1``.
    """
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if not 0.0 <= lower < upper <= 1.0:
        raise ValueError(f"need 0 <= lower < upper <= 1, got lower={lower}, upper={upper}")
    return (upper - lower) * (members - 1) / (members + 1)


def best_of_n(
    scores: np.ndarray, *, axis: int = 1, higher_is_better: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample best member of a metric (the official ``best-of-n.py``: pick per tile, then average).

    Parameters
    ----------
    scores:
        A metric per member, the members along ``axis`` (e.g. (B, members) MAE).
    higher_is_better:
        True for SSIM, PSNR, accuracy, IoU; False for errors. NaN scores are never picked unless all are.

    Returns
    -------
    (best, index)
        The best score and its member index, shaped like ``scores`` without ``axis``.
    """
    s = np.moveaxis(np.asarray(scores, dtype=np.float64), axis, -1)
    filler = -np.inf if higher_is_better else np.inf
    clean = np.where(np.isnan(s), filler, s)
    index = clean.argmax(axis=-1) if higher_is_better else clean.argmin(axis=-1)
    best = np.take_along_axis(s, index[..., None], axis=-1)[..., 0]
    return best, index


__all__ = ["best_of_n", "calibrated_coverage", "crps_ensemble", "interval_coverage", "spread_error", "spread_skill_ratio"]
