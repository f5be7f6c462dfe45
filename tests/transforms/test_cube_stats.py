"""transforms.cube_stats: ensemble statistics against plain NumPy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from transforms.cube_stats import NO_CLASS, class_frequencies, class_mode, continuous_stats, nan_percentile

LULC_CODES = (0, 1, 2, 4, 5, 7, 8, 9, 10, 11)

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
maybe_nan = st.one_of(finite, st.just(float("nan")))


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6), elements=maybe_nan),
    q=st.sampled_from([0.0, 5.0, 37.5, 50.0, 95.0, 100.0]),
)
def test_nan_percentile_equals_numpy_nanpercentile(x: np.ndarray, q: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        want = np.nanpercentile(x.astype(np.float64), q, axis=0)
    np.testing.assert_allclose(nan_percentile(x, q), want, rtol=1e-12, atol=0, equal_nan=True)


def test_continuous_stats_match_numpy_without_nan() -> None:
    x = np.random.default_rng(1).normal(1000, 300, (7, 4, 16, 16)).astype(np.float32)
    s = continuous_stats(x)
    x64 = x.astype(np.float64)
    assert set(s) == {"mean", "std", "p05", "p50", "p95"}
    assert all(v.shape == (4, 16, 16) and v.dtype == np.float32 for v in s.values())
    np.testing.assert_allclose(s["mean"], x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(s["std"], x64.std(0, ddof=1), rtol=1e-6)
    for name, q in (("p05", 5), ("p50", 50), ("p95", 95)):
        np.testing.assert_allclose(s[name], np.percentile(x64, q, axis=0), rtol=1e-6)
    assert np.all(s["p05"] <= s["p50"]) and np.all(s["p50"] <= s["p95"])


def test_continuous_stats_ignore_nan_members_and_all_nan_pixels_stay_nan() -> None:
    x = np.random.default_rng(2).uniform(0, 1, (5, 1, 3, 3))
    x[0, 0, 0, 0] = np.nan  # one member missing at one pixel
    x[:, 0, 2, 2] = np.nan  # every member missing
    s = continuous_stats(x)
    np.testing.assert_allclose(s["mean"][0, 0, 0], x[1:, 0, 0, 0].mean(), rtol=1e-6)
    np.testing.assert_allclose(s["p50"][0, 0, 0], np.median(x[1:, 0, 0, 0]), rtol=1e-6)
    assert all(np.isnan(v[0, 2, 2]) for v in s.values())
    assert not any(np.isnan(v[0, 1, 1]) for v in s.values())


def test_single_member_std_is_nan_and_percentiles_equal_the_member() -> None:
    x = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    s = continuous_stats(x)
    assert np.isnan(s["std"]).all()
    for name in ("mean", "p05", "p50", "p95"):
        np.testing.assert_array_equal(s[name], x[0])


def test_continuous_stats_refuse_wrong_rank() -> None:
    with pytest.raises(ValueError, match=r"\(M, C, H, W\)"):
        continuous_stats(np.zeros((3, 8, 8)))


def test_class_frequencies_count_members_per_code() -> None:
    rng = np.random.default_rng(3)
    m = rng.choice([1, 2, 5, 255], size=(6, 1, 8, 8)).astype(np.uint8)
    f = class_frequencies(m, LULC_CODES)
    assert f.shape == (10, 8, 8) and f.dtype == np.float32
    for k, code in enumerate(LULC_CODES):
        np.testing.assert_allclose(f[k], (m[:, 0] == code).sum(0) / 6)
    # the 255 fill belongs to no class, so those pixels sum to less than one
    np.testing.assert_allclose(f.sum(0), (m[:, 0] != 255).sum(0) / 6, rtol=1e-6)


def test_class_mode_breaks_ties_towards_the_smallest_code_and_marks_no_class() -> None:
    m = np.array([[[[2, 5, 255]]], [[[5, 5, 255]]], [[[2, 2, 255]]], [[[5, 1, 255]]]], dtype=np.uint8)  # (4,1,1,3)
    f = class_frequencies(m, LULC_CODES)
    mode = class_mode(f, LULC_CODES)
    # pixel 0: 2 twice, 5 twice -> tie -> 2; pixel 1: 5 twice, 2 once, 1 once -> 5; pixel 2: nothing valid
    np.testing.assert_array_equal(mode, np.array([[2, 5, NO_CLASS]], dtype=np.uint8))
    assert mode.dtype == np.uint8


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.uint8, (5, 4, 4), elements=st.sampled_from([0, 1, 2, 3])))
def test_class_mode_is_a_most_frequent_code(m: np.ndarray) -> None:
    codes = (0, 1, 2, 3)
    mode = class_mode(class_frequencies(m, codes), codes)
    counts = np.stack([(m == c).sum(0) for c in codes])
    np.testing.assert_array_equal(counts[mode, np.arange(4)[:, None], np.arange(4)[None]], counts.max(0))
    first_max = np.argmax(counts, axis=0)  # smallest code among the maxima
    np.testing.assert_array_equal(mode, np.asarray(codes)[first_max])
