"""Evaluation metrics against hand-computed values and brute-force numpy references."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copgen_core import metrics as M

FAST = settings(max_examples=40, deadline=None)


# ----------------------------------------------------------------------------- units and scaling


def test_eval_units_follow_the_official_protocol() -> None:
    assert M.to_eval_units("S2L2A_B02_B03_B04_B08", np.array([0.0, 2500.0, 10000.0])).tolist() == [0, 0.25, 1]
    db = M.to_eval_units("S1RTC_vh_vv", np.array([1.0, 0.1, 100.0, 1e-6, 0.0, np.nan]))
    assert db[:5] == pytest.approx([0.0, -10.0, 10.0, -50.0, -50.0])  # clipped to [-50, 10] dB
    assert np.isnan(db[5])
    assert M.to_eval_units("DEM_DEM", np.array([12.5])).tolist() == [12.5]
    with pytest.raises(ValueError, match="class metrics"):
        M.to_eval_units("LULC_LULC", np.zeros(3))


def test_minmax_scale_uses_the_truth_range_per_band_or_per_sample() -> None:
    truth = np.stack([np.full((2, 2), 5.0), np.array([[0.0, 2.0], [1.0, 1.0]])])[None]  # (1, 2, 2, 2)
    pred = truth + 1.0
    p01, t01 = M.minmax_scale(pred, truth, per_band=True)
    # band 0 is constant: its range floors at 1e-6, so truth maps to 0 and pred (1 above) clips to 1
    assert t01[0, 0].tolist() == [[0, 0], [0, 0]] and p01[0, 0].tolist() == [[1, 1], [1, 1]]
    assert t01[0, 1].tolist() == [[0, 1], [0.5, 0.5]]
    assert p01[0, 1].tolist() == [[0.5, 1], [1, 1]]
    p01, t01 = M.minmax_scale(pred, truth, per_band=False)  # range 0..5 over both bands
    assert t01[0, 1].tolist() == [[0, 0.4], [0.2, 0.2]]
    assert p01[0, 1] == pytest.approx(np.array([[0.2, 0.6], [0.4, 0.4]]))


def test_psnr_matches_a_hand_computed_value() -> None:
    truth = np.array([[[[0.0, 2.0], [1.0, 1.0]]]])
    pred = np.array([[[[0.2, 2.0], [1.0, 1.2]]]])
    # scaled by range 2: errors 0.1, 0, 0, 0.1 -> mse 0.005 -> 10 log10(200)
    assert M.scaled_mse(pred, truth)[0, 0] == pytest.approx(0.005)
    assert M.psnr(pred, truth)[0, 0] == pytest.approx(10 * math.log10(200))
    assert M.psnr(truth, truth)[0, 0] == np.inf


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_mae_rmse_per_band_per_sample_and_masked_match_brute_force() -> None:
    rng = _rng(1)
    pred, truth = rng.normal(size=(3, 2, 4, 5)), rng.normal(size=(3, 2, 4, 5))
    mask = rng.random((3, 4, 5)) < 0.4
    mask[1] = False  # a sample without counted pixels
    err = pred - truth
    assert M.mae(pred, truth) == pytest.approx(np.abs(err).mean(axis=(2, 3)))
    assert M.rmse(pred, truth, per_band=False) == pytest.approx(np.sqrt((err**2).mean(axis=(1, 2, 3))))
    got_mae, got_rmse = M.mae(pred, truth, mask=mask), M.rmse(pred, truth, mask=mask, per_band=False)
    for b in range(3):
        if b == 1:
            assert np.isnan(got_mae[b]).all() and np.isnan(got_rmse[b])
            continue
        for c in range(2):
            assert got_mae[b, c] == pytest.approx(np.abs(err[b, c][mask[b]]).mean())
        assert got_rmse[b] == pytest.approx(np.sqrt((err[b][:, mask[b]] ** 2).mean()))


def test_mask_ignores_nan_outside_it_and_rejects_bad_shapes() -> None:
    truth = np.ones((1, 1, 3, 3))
    pred = truth.copy()
    pred[0, 0, 0, 0] = np.nan
    mask = np.ones((1, 3, 3), dtype=bool)
    mask[0, 0, 0] = False
    assert M.mae(pred, truth, mask=mask)[0, 0] == 0.0
    assert np.isnan(M.mae(pred, truth)[0, 0])
    with pytest.raises(ValueError, match="mask has shape"):
        M.mae(pred, truth, mask=np.ones((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        M.mae(pred, truth, mask=np.ones((1, 3, 3)))
    with pytest.raises(ValueError, match="must match"):
        M.mae(pred, truth[..., :2])


# ----------------------------------------------------------------------------- SSIM


def _ssim_brute(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """SSIM map by explicit weighted sums over every fully covered 11 x 11 window."""
    g = M.gaussian_window()
    w = np.outer(g, g)
    h, wd = t.shape
    out = np.empty((h - 10, wd - 10))
    c1, c2 = 0.01**2, 0.03**2
    for i in range(h - 10):
        for j in range(wd - 10):
            a, b = p[i : i + 11, j : j + 11], t[i : i + 11, j : j + 11]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * a * a).sum() - ma**2, (w * b * b).sum() - mb**2
            cov = (w * a * b).sum() - ma * mb
            out[i, j] = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return out


def test_gaussian_window_is_torchmetrics_default() -> None:
    g = M.gaussian_window()
    d = np.arange(-5, 6)
    assert g.shape == (11,) and g.sum() == pytest.approx(1.0)
    assert g == pytest.approx(np.exp(-(d**2) / (2 * 1.5**2)) / np.exp(-(d**2) / (2 * 1.5**2)).sum())


def test_ssim_matches_brute_force_window_sums() -> None:
    rng = _rng(2)
    truth = rng.random((2, 2, 15, 13)) * 3.0
    pred = truth + rng.normal(scale=0.4, size=truth.shape)
    got = M.ssim(pred, truth)
    p01, t01 = M.minmax_scale(pred, truth)
    for b in range(2):
        for c in range(2):
            ref = _ssim_brute(p01[b, c], t01[b, c])
            assert M.ssim_map(p01[b, c], t01[b, c]) == pytest.approx(ref, abs=1e-12)
            assert got[b, c] == pytest.approx(ref.mean(), abs=1e-12)
    # per sample: scaled by the range over both bands, map averaged over bands and positions
    p01, t01 = M.minmax_scale(pred, truth, per_band=False)
    whole = M.ssim(pred, truth, per_band=False)
    for b in range(2):
        ref = np.mean([_ssim_brute(p01[b, c], t01[b, c]) for c in range(2)])
        assert whole[b] == pytest.approx(ref, abs=1e-12)


def test_ssim_is_one_for_identical_images_and_lower_otherwise() -> None:
    truth = _rng(3).random((1, 3, 16, 16))
    assert M.ssim(truth, truth) == pytest.approx(np.ones((1, 3)))
    noisy = truth + _rng(4).normal(scale=0.3, size=truth.shape)
    assert (M.ssim(noisy, truth) < 0.9).all()


def test_ssim_mask_counts_only_windows_centred_on_masked_pixels() -> None:
    rng = _rng(5)
    truth = rng.random((1, 1, 14, 14))
    pred = truth + rng.normal(scale=0.2, size=truth.shape)
    mask = np.zeros((1, 14, 14), dtype=bool)
    mask[0, 5, 5] = mask[0, 8, 6] = True  # map positions (0, 0) and (3, 1)
    mask[0, 0, 0] = True  # too close to the edge: never a window centre
    p01, t01 = M.minmax_scale(pred, truth)
    local = M.ssim_map(p01[0, 0], t01[0, 0])
    assert M.ssim(pred, truth, mask=mask)[0, 0] == pytest.approx((local[0, 0] + local[3, 1]) / 2)
    with pytest.raises(ValueError, match="at least 11 x 11"):
        M.ssim(pred[..., :10, :10], truth[..., :10, :10])


# ----------------------------------------------------------------------------- classes


def test_class_indices_map_raw_lulc_codes_and_refuse_unknown_ones() -> None:
    codes = np.array([[0, 1, 2, 4], [5, 7, 8, 11]])
    assert M.class_indices("LULC_LULC", codes).tolist() == [[0, 1, 2, 3], [4, 5, 6, 9]]
    assert M.class_indices("S2L1C_cloud_mask", np.array([3, 0])).tolist() == [3, 0]
    with pytest.raises(ValueError, match=r"codes \[3, 6\]"):
        M.class_indices("LULC_LULC", np.array([3, 6, 1]))
    with pytest.raises(ValueError, match="not a class map"):
        M.class_indices("DEM_DEM", np.array([1]))


def test_confusion_matrix_matches_a_loop_with_ignore_mask_and_batch_dims() -> None:
    rng = _rng(6)
    truth = rng.integers(0, 4, size=(2, 3, 5, 5))
    pred = rng.integers(0, 4, size=truth.shape)
    mask = rng.random(truth.shape) < 0.7
    cm = M.confusion_matrix(pred, truth, 4, ignore_index=0, mask=mask, batch_dims=1)
    assert cm.shape == (2, 4, 4)
    ref = np.zeros((2, 4, 4), dtype=np.int64)
    for idx in np.ndindex(truth.shape):
        if mask[idx] and truth[idx] != 0:
            ref[idx[0], truth[idx], pred[idx]] += 1
    assert (cm == ref).all()
    assert (M.confusion_matrix(pred, truth, 4) == np.bincount(4 * truth.ravel() + pred.ravel(), minlength=16)
            .reshape(4, 4)).all()
    with pytest.raises(ValueError, match=r"indices \[7\] outside"):
        M.confusion_matrix(np.array([7]), np.array([1]), 4)
    with pytest.raises(ValueError, match="integer class indices"):
        M.confusion_matrix(np.array([1.0]), np.array([1]), 4)


def test_class_scores_match_hand_computed_values() -> None:
    truth = np.array([0, 1, 1, 1, 2, 2, 3, 3])
    pred = np.array([0, 1, 1, 2, 2, 0, 3, 1])
    s = M.class_scores(M.confusion_matrix(pred, truth, 4))
    assert s.accuracy == pytest.approx(5 / 8)
    # class 0: tp 1 fp 1 fn 0; 1: tp 2 fp 1 fn 1; 2: tp 1 fp 1 fn 1; 3: tp 1 fp 0 fn 1
    assert s.iou == pytest.approx([1 / 2, 2 / 4, 1 / 3, 1 / 2])
    assert s.f1 == pytest.approx([2 / 3, 4 / 6, 2 / 4, 2 / 3])
    assert s.precision == pytest.approx([1 / 2, 2 / 3, 1 / 2, 1])
    assert s.recall == pytest.approx([1, 2 / 3, 1 / 2, 1 / 2])
    assert s.miou == pytest.approx(np.mean([1 / 2, 2 / 4, 1 / 3, 1 / 2]))
    assert s.fw_iou == pytest.approx((1 * 0.5 + 3 * 0.5 + 2 / 3 + 2 * 0.5) / 8)
    # ignoring class 0: its truth pixel drops out, it leaves the means, predicting it stays an error
    cm = M.confusion_matrix(pred, truth, 4, ignore_index=0)
    ign = M.class_scores(cm, ignore_index=0)
    assert ign.accuracy == pytest.approx(4 / 7)
    assert np.isnan(ign.iou[0])
    assert ign.iou[1:] == pytest.approx([2 / 4, 1 / 3, 1 / 2])
    assert ign.miou == pytest.approx(np.mean([2 / 4, 1 / 3, 1 / 2]))


def test_absent_classes_are_nan_and_left_out_of_the_means() -> None:
    s = M.class_scores(M.confusion_matrix(np.array([1, 1]), np.array([1, 1]), 3))
    assert np.isnan(s.iou[0]) and np.isnan(s.iou[2]) and s.iou[1] == 1.0
    assert s.miou == 1.0 and s.mean_f1 == 1.0 and s.accuracy == 1.0


# ----------------------------------------------------------------------------- location and date


def test_haversine_known_distances() -> None:
    one_degree = 6371.0 * math.pi / 180
    assert M.haversine_km(np.array([0.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(one_degree)
    assert M.haversine_km(np.array([0.0, 0.0]), np.array([0.0, 180.0])) == pytest.approx(6371.0 * math.pi)
    assert M.haversine_km(np.array([90.0, 10.0]), np.array([90.0, -70.0])) == pytest.approx(0.0, abs=1e-9)
    assert M.haversine_km(np.array([10.0, 179.5]), np.array([10.0, -179.5])) == pytest.approx(
        one_degree * math.cos(math.radians(10)), rel=1e-4
    )


@FAST
@given(
    st.floats(-89, 89), st.floats(-180, 180), st.floats(-89, 89), st.floats(-180, 180),
)
def test_haversine_matches_the_law_of_cosines(lat1: float, lon1: float, lat2: float, lon2: float) -> None:
    a, b = np.radians([lat1, lon1]), np.radians([lat2, lon2])
    cosine = math.sin(a[0]) * math.sin(b[0]) + math.cos(a[0]) * math.cos(b[0]) * math.cos(a[1] - b[1])
    ref = 6371.0 * math.acos(max(-1.0, min(1.0, cosine)))
    got = float(M.haversine_km(np.array([lat1, lon1]), np.array([lat2, lon2])))
    assert got == pytest.approx(ref, abs=0.05)  # the law of cosines loses precision for close points


def test_date_error_handles_the_decoded_day_month_year_order() -> None:
    pred = np.array([[1, 1, 2021], [1, 3, 2020], [15, 6, 2019]])  # [day, month, year]
    truth = np.array([[2020, 12, 31], [2020, 2, 28], [2019, 6, 15]])  # [year, month, day]
    assert M.date_error_days(pred, truth).tolist() == [1, 2, 0]
    assert M.date_error_days(truth, truth, pred_order="ymd").tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="check the date order"):
        M.date_error_days(truth, truth)  # [year, month, day] read as day-month-year
    with pytest.raises(ValueError, match="invalid date year=2021 month=2 day=29"):
        M.date_error_days(np.array([29, 2, 2021]), np.array([2021, 3, 1]))


@FAST
@given(st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31)), st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31)))
def test_date_error_matches_python_dates(a: dt.date, b: dt.date) -> None:
    got = M.date_error_days(np.array([a.day, a.month, a.year]), np.array([b.year, b.month, b.day]))
    assert int(got) == abs((a - b).days)
    assert int(M.days_since_epoch(a.year, a.month, a.day)) == (a - dt.date(1970, 1, 1)).days


# ----------------------------------------------------------------------------- ensembles


def _crps_brute(ens: np.ndarray, y: float, fair: bool) -> float:
    m = len(ens)
    pairs = np.abs(ens[:, None] - ens[None, :]).sum()
    return float(np.abs(ens - y).mean() - pairs / (2 * m * (m - 1) if fair else 2 * m * m))


@FAST
@given(
    st.lists(st.floats(-100, 100), min_size=2, max_size=12),
    st.floats(-100, 100),
    st.booleans(),
)
def test_crps_sorted_estimator_matches_the_pair_sum(members: list[float], y: float, fair: bool) -> None:
    ens = np.array(members)
    got = M.crps_ensemble(ens[None, :], np.array([y]), fair=fair)
    assert got.shape == (1,)
    assert got[0] == pytest.approx(_crps_brute(ens, y, fair), abs=1e-9)


def test_crps_axis_single_member_and_fair_requirements() -> None:
    rng = _rng(7)
    ens = rng.normal(size=(3, 4, 5))  # members on axis 1
    truth = rng.normal(size=(3, 5))
    got = M.crps_ensemble(ens, truth)
    for i in range(3):
        for j in range(5):
            assert got[i, j] == pytest.approx(_crps_brute(ens[i, :, j], truth[i, j], False))
    assert M.crps_ensemble(ens[:, :1], truth) == pytest.approx(np.abs(ens[:, 0] - truth))
    assert (M.crps_ensemble(ens, truth, fair=True) < got).all()  # the fair one removes the spread bias
    with pytest.raises(ValueError, match="at least 2 members"):
        M.crps_ensemble(ens[:, :1], truth, fair=True)
    with pytest.raises(ValueError, match="without the member axis"):
        M.crps_ensemble(ens, truth[:, :2])


def test_spread_error_and_ratio_hand_computed() -> None:
    ens = np.array([[1.0, 3.0], [2.0, 2.0]])  # two points (axis 0), two members (axis 1)
    truth = np.array([4.0, 1.0])
    spread, error = M.spread_error(ens, truth)
    assert spread == pytest.approx([math.sqrt(2), 0.0]) and error.tolist() == [2.0, 1.0]
    # sqrt(mean var) = sqrt(1) ; rmse = sqrt((4 + 1) / 2)
    assert M.spread_skill_ratio(ens, truth, corrected=False) == pytest.approx(1 / math.sqrt(2.5))
    assert M.spread_skill_ratio(ens, truth) == pytest.approx(math.sqrt(1.5) / math.sqrt(2.5))
    assert M.spread_skill_ratio(ens, truth, mask=np.array([True, False]), corrected=False) == pytest.approx(
        math.sqrt(2) / 2
    )


def test_calibrated_ensemble_has_unit_spread_skill_and_nominal_coverage() -> None:
    rng = _rng(8)
    draws = rng.normal(size=(20000, 20))  # members and truth exchangeable
    ens, truth = draws[:, :19], draws[:, 19]
    assert M.spread_skill_ratio(ens, truth) == pytest.approx(1.0, abs=0.02)
    assert M.spread_skill_ratio(2 * ens, truth) > 1.8  # under-confident when too wide
    # the truth falls between the min and max of M exchangeable members with probability (M-1)/(M+1)
    cover = M.interval_coverage(ens, truth, lower=0.0, upper=1.0)
    assert cover.mean() == pytest.approx(18 / 20, abs=0.01)
    assert (cover == ((truth >= ens.min(axis=1)) & (truth <= ens.max(axis=1)))).all()
    assert M.interval_coverage(ens, truth).mean() < cover.mean()
    with pytest.raises(ValueError, match="lower < upper"):
        M.interval_coverage(ens, truth, lower=0.9, upper=0.1)


@pytest.mark.parametrize("members", [8, 24])
def test_calibrated_coverage_is_what_a_calibrated_ensemble_scores(members: int) -> None:
    rng = _rng(members)
    draws = rng.uniform(size=(40000, members + 1))  # members and truth exchangeable
    measured = M.interval_coverage(draws[:, :members], draws[:, members]).mean()
    assert M.calibrated_coverage(members) == pytest.approx(0.9 * (members - 1) / (members + 1))
    assert measured == pytest.approx(M.calibrated_coverage(members), abs=0.01)  # 0.70 for 8, 0.83 for 24
    assert M.calibrated_coverage(members, lower=0.0, upper=1.0) == pytest.approx((members - 1) / (members + 1))
    with pytest.raises(ValueError, match="members"):
        M.calibrated_coverage(0)


def test_best_of_n_picks_per_sample_and_skips_nan() -> None:
    scores = np.array([[0.3, 0.1, 0.2], [np.nan, 0.5, 0.4]])
    best, idx = M.best_of_n(scores, higher_is_better=False)
    assert best.tolist() == [0.1, 0.4] and idx.tolist() == [1, 2]
    best, idx = M.best_of_n(scores, higher_is_better=True)
    assert best.tolist() == [0.3, 0.5] and idx.tolist() == [0, 1]
    best, idx = M.best_of_n(scores.T, axis=0, higher_is_better=True)
    assert idx.tolist() == [0, 1]


# ----------------------------------------------------------------------------- seams


def _seam_brute(img: np.ndarray, pitch: tuple[int, int], offset: tuple[int, int]) -> tuple[float, float]:
    """Across/inside means by window id: a pair straddles a border when the window ids differ."""
    h, w = img.shape
    wid_r = np.floor_divide(np.arange(h) - offset[0], pitch[0])
    wid_c = np.floor_divide(np.arange(w) - offset[1], pitch[1])
    across: list[float] = []
    inside: list[float] = []
    for i in range(h):
        for j in range(w):
            for di, dj in ((1, 0), (0, 1)):
                a, b = i + di, j + dj
                if a >= h or b >= w:
                    continue
                d = abs(img[a, b] - img[i, j])
                same = wid_r[a] == wid_r[i] and wid_c[b] == wid_c[j]
                (inside if same else across).append(d)
    return float(np.mean(across)), float(np.mean(inside))


@FAST
@given(
    st.integers(6, 14), st.integers(6, 14), st.integers(2, 5), st.integers(2, 5),
    st.integers(-3, 7), st.integers(-3, 7), st.integers(0, 2**16),
)
def test_seam_gradients_match_window_id_brute_force(
    h: int, w: int, py: int, px: int, oy: int, ox: int, seed: int
) -> None:
    img = _rng(seed).random((h, w))
    got = M.seam_gradients(img[None], (py, px), (oy, ox))
    across, inside = _seam_brute(img, (py, px), (oy, ox))
    assert got.across[0] == pytest.approx(across) and got.inside[0] == pytest.approx(inside)


def test_seam_ratio_is_one_without_seams_and_grows_with_window_offsets() -> None:
    yy, xx = np.mgrid[0:32, 0:32].astype(float)
    ramp = 0.5 * yy + 0.5 * xx  # every neighbour difference is 0.5
    assert M.seam_ratio(ramp, 8) == pytest.approx(1.0)
    jumps = (yy // 8) * 3.0 + (xx // 8) * 3.0  # a step of 3 at every border, flat inside
    assert M.seam_ratio(ramp + jumps, 8) == pytest.approx((0.5 + 3.0) / 0.5)
    assert M.seam_ratio(jumps, 8) == np.inf
    shifted = (np.floor_divide(yy - 3, 8) + np.floor_divide(xx - 3, 8)) * 3.0
    assert M.seam_ratio(ramp + shifted, 8, offset=3) == pytest.approx(7.0)
    assert M.seam_ratio(ramp + shifted, 8, offset=0) < 2.0  # the wrong grid misses the seams
    per_band = M.seam_ratio(np.stack([ramp, ramp + jumps]), (8, 8))
    assert per_band == pytest.approx([1.0, 7.0])


def test_cell_edge_baseline_separates_decoder_blocks_from_window_seams() -> None:
    yy, xx = np.mgrid[0:64, 0:64].astype(float)
    ramp = 0.5 * yy + 0.5 * xx
    cells = (yy // 4) * 2.0 + (xx // 4) * 2.0  # a decoder's 4 px cells: a step of 2 at every cell edge
    # windows every 16 px are cell edges too: against every inside pair they look like seams ...
    assert M.seam_ratio(ramp + cells, 16) > 2.0
    # ... against the other cell edges they are invisible
    assert M.seam_ratio(ramp + cells, 16, inside_every=4) == pytest.approx(1.0)
    seams = (yy // 16) * 5.0 + (xx // 16) * 5.0  # real window seams on top of the cells
    assert M.seam_ratio(ramp + cells + seams, 16, inside_every=4) == pytest.approx((2.5 + 5.0) / 2.5)
    with pytest.raises(ValueError, match="inside_every"):
        M.seam_ratio(ramp, 16, inside_every=1)


def test_seam_ratio_refuses_layouts_without_borders() -> None:
    with pytest.raises(ValueError, match="no window border"):
        M.seam_ratio(np.zeros((8, 8)), 16)
    with pytest.raises(ValueError, match="pitch must be >= 2"):
        M.seam_ratio(np.zeros((8, 8)), 1)
    flat = M.seam_ratio(np.zeros((8, 8)), 4)
    assert np.isnan(flat)
