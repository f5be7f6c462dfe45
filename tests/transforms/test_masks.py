"""Missing-data masks from hand-made SCL / cloud-mask arrays, nodata and saturation; cloud-like masks."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from transforms.masks import (
    MaskRules,
    aggregate_mask,
    cloud_like_mask,
    dilate,
    missing_masks,
    tile_missing_masks,
    to_grid,
)
from transforms.tiles import Tile, WorkUnit
from transforms.windows import Window, WindowKey

S2_10 = "S2L2A_B02_B03_B04_B08"
S2_20 = "S2L2A_B05_B06_B07_B11_B12_B8A"
S2_60 = "S2L2A_B01_B09"
S1 = "S1RTC_vh_vv"
DEM = "DEM_DEM"


def _clear_arrays() -> dict[str, np.ndarray]:
    return {
        S2_10: np.full((4, 192, 192), 1500.0, dtype=np.float32),
        S2_20: np.full((6, 96, 96), 2500.0, dtype=np.float32),
        S2_60: np.full((2, 32, 32), 800.0, dtype=np.float32),
        S1: np.full((2, 192, 192), 0.05, dtype=np.float32),
        DEM: np.full((1, 64, 64), 300.0, dtype=np.float32),
    }


def test_scl_classes_decide_what_is_missing_and_snow_is_not() -> None:
    scl = np.full((96, 96), 4, dtype=np.uint8)  # vegetation
    codes = list(range(12))
    for i, code in enumerate(codes):  # one 20 m pixel of each class along row 50
        scl[50, 2 * i] = code
    masks = missing_masks(_clear_arrays(), scl=scl)
    row = masks.missing[S2_20][50, : 2 * len(codes) : 2]
    flagged = {code for code, miss in zip(codes, row, strict=True) if miss}
    assert flagged == {0, 1, 3, 8, 9, 10}


def test_scl_block_aggregates_to_each_native_grid() -> None:
    scl = np.full((96, 96), 11, dtype=np.uint8)  # snow: a valid observation
    scl[0:10, 0:10] = 9  # cloud, high probability: 20 m rows/cols 0..9
    masks = missing_masks(_clear_arrays(), scl=scl)
    expect_10 = np.zeros((192, 192), dtype=bool)
    expect_10[0:20, 0:20] = True
    assert (masks.missing[S2_10] == expect_10).all()
    assert (masks.missing[S2_20] == (scl == 9)).all()
    expect_60 = np.zeros((32, 32), dtype=bool)
    expect_60[0:4, 0:4] = True  # 60 m pixel 3 covers 20 m pixels 9..11, one of them cloudy
    assert (masks.missing[S2_60] == expect_60).all()
    assert not masks.missing[S1].any() and not masks.missing[DEM].any()  # radar and DEM see through
    all_rule = missing_masks(_clear_arrays(), scl=scl, rules=MaskRules(aggregate="all"))
    assert all_rule.missing[S2_60].sum() == 9 and all_rule.missing[S2_60][:3, :3].all()
    assert masks.sky is not None and (masks.sky == expect_10).all()


def test_cloud_mask_pixel_marks_the_covering_coarse_pixels() -> None:
    cloud = np.zeros((1, 192, 192), dtype=np.float32)
    cloud[0, 5, 7] = 2  # thin cloud at one 10 m pixel
    cloud[0, 100, 100] = 3  # shadow
    masks = missing_masks(_clear_arrays(), cloud_mask=cloud)
    assert np.argwhere(masks.missing[S2_10]).tolist() == [[5, 7], [100, 100]]
    assert np.argwhere(masks.missing[S2_20]).tolist() == [[2, 3], [50, 50]]
    assert np.argwhere(masks.missing[S2_60]).tolist() == [[0, 1], [16, 16]]
    # the DEM takes the sky mask only when asked; then a 30 m pixel covers 3 x 3 10 m pixels
    rules = MaskRules(sky_modalities=(S2_10, DEM))
    with_dem = missing_masks(_clear_arrays(), cloud_mask=cloud, rules=rules)
    assert np.argwhere(with_dem.missing[DEM]).tolist() == [[1, 2], [33, 33]]
    assert not with_dem.missing[S2_20].any()


def test_nodata_zero_and_saturation_are_per_pixel_on_the_native_grid() -> None:
    arrays = _clear_arrays()
    s2 = arrays[S2_10]
    s2[:, 0, 0] = np.nan  # no data in every band
    s2[2, 1, 1] = np.nan  # no data in one band
    s2[:, 2, 2] = 0.0  # swath edge: all bands exactly 0
    s2[0, 3, 3] = 0.0  # one dark band: valid
    s2[1, 4, 4] = 64535.0  # saturated (harmonised DN)
    s2[3, 5, 5] = 65535.0  # saturated (raw DN)
    s2[0, 6, 6] = 64534.0  # bright but valid
    arrays[S1][1, 7, 7] = np.inf
    masks = missing_masks(arrays)
    assert np.argwhere(masks.missing[S2_10]).tolist() == [[0, 0], [1, 1], [2, 2], [4, 4], [5, 5]]
    assert np.argwhere(masks.missing[S1]).tolist() == [[7, 7]]
    # band-specific saturation (B04 is channel 0) and zero_is_nodata off
    rules = MaskRules(band_saturation_dn={"B04": 60000.0}, zero_is_nodata=False)
    s2[0, 8, 8] = 61000.0
    custom = missing_masks(arrays, rules=rules)
    assert custom.missing[S2_10][8, 8] and not custom.missing[S2_10][2, 2]


def test_valid_mask_counts_and_absent_or_fully_missing_groups_are_not_present() -> None:
    arrays = _clear_arrays()
    del arrays[S2_60]
    valid = {S1: np.ones((192, 192), dtype=bool)}
    valid[S1][10:12, 20:22] = False
    scl = np.full((96, 96), 4, dtype=np.uint8)
    scl[:48] = 8  # the north half is cloudy
    masks = missing_masks(arrays, valid=valid, scl=scl, modalities=[S2_10, S2_20, S2_60, S1, DEM])
    assert masks.missing[S1].sum() == 4 and masks.missing[S1][10:12, 20:22].all()
    assert masks.present == {S2_10: True, S2_20: True, S2_60: False, S1: True, DEM: True}
    assert masks.missing[S2_60].all() and masks.absent == (S2_60,)
    assert masks.partial == (S2_10, S2_20, S1)
    assert masks.complete == (DEM,)
    assert masks.fraction(S2_10) == pytest.approx(0.5)
    overcast = missing_masks(_clear_arrays(), scl=np.full((96, 96), 9, dtype=np.uint8))
    assert set(overcast.absent) == {S2_10, S2_20, S2_60}


def test_sky_dilation_happens_on_the_10m_grid_before_aggregation() -> None:
    cloud = np.zeros((192, 192), dtype=np.uint8)
    cloud[10, 10] = 1
    masks = missing_masks(_clear_arrays(), cloud_mask=cloud, rules=MaskRules(dilate_px=2))
    expect = np.zeros((192, 192), dtype=bool)
    expect[8:13, 8:13] = True
    assert (masks.missing[S2_10] == expect).all()
    assert np.argwhere(masks.missing[S2_20]).tolist() == [[4, 4], [4, 5], [4, 6], [5, 4], [5, 5], [5, 6],
                                                          [6, 4], [6, 5], [6, 6]]
    disk = missing_masks(_clear_arrays(), cloud_mask=cloud, rules=MaskRules(dilate_px=2, dilate_shape="disk"))
    assert disk.missing[S2_10].sum() == 13  # |dy|^2 + |dx|^2 <= 4


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16), st.integers(0, 3), st.sampled_from(["square", "disk"]))
def test_dilate_matches_scipy(seed: int, px: int, shape: str) -> None:
    mask = np.random.default_rng(seed).random((2, 17, 13)) < 0.05
    yy, xx = np.mgrid[-px : px + 1, -px : px + 1]
    struct = (np.maximum(abs(yy), abs(xx)) <= px) if shape == "square" else (yy**2 + xx**2 <= px * px)
    ref = np.stack([ndimage.binary_dilation(m, structure=struct) if px else m for m in mask])
    assert (dilate(mask, px, shape) == ref).all()  # type: ignore[arg-type]


def test_grid_helpers_repeat_aggregate_and_refuse_bad_ratios() -> None:
    m = np.array([[True, False], [False, False]])
    assert to_grid(m, 4).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    fine = np.zeros((6, 6), dtype=bool)
    fine[0, 0] = fine[0, 1] = fine[1, 0] = True
    assert aggregate_mask(fine, 2, 0.3).tolist() == [[True, False], [False, False]]  # 3/9 >= 0.3
    assert aggregate_mask(fine, 2, 0.5).tolist() == [[False, False], [False, False]]
    with pytest.raises(ValueError, match="not a multiple"):
        to_grid(np.zeros((5, 5), dtype=bool), 192)
    with pytest.raises(ValueError, match="aggregate must be"):
        MaskRules(aggregate=1.5)
    with pytest.raises(ValueError, match=r"expected \(C, 192, 192\)"):
        missing_masks({S2_10: np.zeros((4, 96, 96))})
    with pytest.raises(ValueError, match="square"):
        missing_masks(_clear_arrays(), scl=np.zeros((96, 48)))


def test_tile_masks_use_valid_and_the_tiles_cloud_mask() -> None:
    unit = WorkUnit(Window(WindowKey(32632, 2650, 168)), 0, datetime(2021, 6, 1), ())
    cloud = np.zeros((1, 192, 192), dtype=np.float32)
    cloud[0, 40:44, 40:44] = 1
    arrays = {S2_10: np.full((4, 192, 192), 900.0, dtype=np.float32), "S2L1C_cloud_mask": cloud}
    valid = {S2_10: np.ones((192, 192), dtype=bool), "S2L1C_cloud_mask": np.ones((192, 192), dtype=bool)}
    valid[S2_10][0, :] = False
    tile = Tile(unit, arrays=arrays, valid=valid)
    masks = tile_missing_masks(tile)
    expect = np.zeros((192, 192), dtype=bool)
    expect[0, :] = True
    expect[40:44, 40:44] = True
    assert (masks.missing[S2_10] == expect).all()
    assert not masks.missing["S2L1C_cloud_mask"].any()  # the cloud mask is itself an observation
    without = tile_missing_masks(tile, rules=MaskRules(use_cloud_mask=False))
    assert without.missing[S2_10].sum() == 192


# ----------------------------------------------------------------------------- cloud-like masks


@pytest.mark.parametrize("coverage", [0.0, 0.1, 0.37, 0.8, 1.0])
def test_cloud_like_mask_has_exact_coverage(coverage: float) -> None:
    m = cloud_like_mask((96, 80), seed=3, coverage=coverage)
    assert m.dtype == np.bool_ and m.shape == (96, 80)
    assert m.sum() == round(coverage * 96 * 80)


def test_cloud_like_mask_is_deterministic_and_seeded() -> None:
    a = cloud_like_mask((64, 64), seed=(7, 2), coverage=0.3)
    assert (a == cloud_like_mask((64, 64), seed=(7, 2), coverage=0.3)).all()
    assert (a != cloud_like_mask((64, 64), seed=(7, 3), coverage=0.3)).mean() > 0.1


def test_cloud_like_mask_forms_few_large_blobs() -> None:
    m = cloud_like_mask((192, 192), seed=11, coverage=0.3)
    agree = np.mean(np.r_[(m[1:] == m[:-1]).ravel(), (m[:, 1:] == m[:, :-1]).ravel()])
    assert agree > 0.9  # independent pixels would agree 1 - 2 * 0.3 * 0.7 = 58 % of the time
    _, blobs = ndimage.label(m)
    noise = np.random.default_rng(11).random((192, 192)) < 0.3
    _, specks = ndimage.label(noise)
    assert blobs < 60 < specks


def test_cloud_like_mask_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="coverage"):
        cloud_like_mask((8, 8), 0, 1.2)
    with pytest.raises(ValueError, match="beta"):
        cloud_like_mask((8, 8), 0, 0.5, beta=0)
