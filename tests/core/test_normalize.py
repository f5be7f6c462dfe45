"""Specification of the modality normalisation (copgen_core.normalize) against the official vectors."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from copgen_core.modalities import BY_KEY, MODALITIES, Kind, Modality
from copgen_core.normalize import (
    CLOUD_PALETTE,
    LULC_CLASS_NAMES,
    LULC_CODES,
    LULC_PALETTE,
    Mode,
    decode_date,
    denormalize,
    encode_date,
    encode_datetime,
    encode_latlon,
    encode_timestamp,
    lulc_rgb,
    normalize,
)
from copgen_core.refcheck import processing as processing_check
from tests.paths import REAL, REFERENCE

PROC_DIR = REFERENCE / "processing"
needs_reference = pytest.mark.skipif(
    not PROC_DIR.is_dir(), reason=f"golden processing vectors not found at {PROC_DIR}"
)
OFF: Mode = "official"


@pytest.fixture(scope="module")
def gold() -> dict[str, np.ndarray]:
    return load_file(str(PROC_DIR / "cases.safetensors"))


def _np(x: object) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _close(got: object, ref: np.ndarray) -> None:
    g = _np(got)
    assert g.shape == ref.shape and g.dtype == ref.dtype
    np.testing.assert_allclose(g, ref, rtol=1e-6, atol=1e-6)


# --- golden vectors, official mode -------------------------------------------------------------


@needs_reference
@pytest.mark.parametrize(
    "key", ["S2L2A_B02_B03_B04_B08", "S2L1C_B01_B09_B10", "S2L2A_B05_B06_B07_B11_B12_B8A"]
)
def test_s2_official_matches_golden_for_uint16_numpy_and_float_torch(gold: dict, key: str) -> None:
    ref = gold["s2/l2a/pre"]
    np.testing.assert_array_equal(normalize(key, gold["s2/in_dn"].astype(np.uint16), mode=OFF).values, ref)
    got = normalize(key, torch.from_numpy(gold["s2/in_dn"]).float(), mode=OFF).values
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), ref)
    assert float(ref.max()) == pytest.approx(12.107, abs=1e-3)  # no clipping at DN 65535
    _close(denormalize(key, torch.from_numpy(gold["s2/post_in"])), gold["s2/post_out"])
    _close(denormalize(key, ref[None]), gold["s2/l2a/post_of_pre"])


@needs_reference
def test_s1_official_matches_golden(gold: dict) -> None:
    _close(normalize("S1RTC_vh_vv", torch.from_numpy(gold["s1/in_linear"]), mode=OFF).values, gold["s1/pre"])
    _close(normalize("S1RTC_vh_vv", gold["s1/in_linear"], mode=OFF).values, gold["s1/pre_numpy_path"])
    _close(normalize("s1", gold["s1/in_db"], mode=OFF, in_db=True).values, gold["s1/pre_in_db"])
    _close(denormalize("s1", gold["s1/pre"][None]), gold["s1/post_of_pre"])
    _close(denormalize("s1", torch.from_numpy(gold["s1/post_in"])), gold["s1/post_out"])
    assert float(gold["s1/pre"].min()) < -1.0  # official keeps positives below the floor


@needs_reference
def test_dem_official_matches_golden_and_loses_negative_elevations(gold: dict) -> None:
    pre = normalize("DEM_DEM", gold["dem/in_m"], mode=OFF).values
    _close(pre, gold["dem/pre"])
    _close(denormalize("dem", torch.from_numpy(gold["dem/pre"])[None]), gold["dem/post_of_pre"])
    _close(denormalize("dem", gold["dem/post_in"]), gold["dem/post_out"])
    flat_in, flat_pre = gold["dem/in_m"].ravel(), pre.ravel()
    assert flat_pre[flat_in == -430.5][0] == flat_pre[flat_in == 0.0][0]  # -430.5 m and 0 m collapse


@needs_reference
@pytest.mark.parametrize(("group", "key"), [("lulc", "LULC_LULC"), ("cloud", "S2L1C_cloud_mask")])
def test_one_hot_official_matches_golden(gold: dict, group: str, key: str) -> None:
    pre = normalize(key, gold[f"{group}/in_codes"], mode=OFF).values
    np.testing.assert_array_equal(pre, gold[f"{group}/pre"])
    np.testing.assert_array_equal(denormalize(key, gold[f"{group}/pre"][None]), gold[f"{group}/post_of_pre"])
    got = denormalize(key, torch.from_numpy(gold[f"{group}/post_in"]))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), gold[f"{group}/post_out"])


@needs_reference
def test_latlon_official_matches_golden(gold: dict) -> None:
    deg = gold["latlon/in_deg_float64"]
    np.testing.assert_array_equal(normalize("latlon", deg, mode=OFF).values, gold["latlon/encode_lat_lon"])
    np.testing.assert_array_equal(encode_latlon(deg[:, 0], deg[:, 1]), gold["latlon/encode_lat_lon"])
    np.testing.assert_array_equal(
        normalize("latlon", deg.astype(np.float32)).values, gold["latlon/pre_process_from_float32"]
    )
    np.testing.assert_array_equal(
        denormalize("latlon", gold["latlon/encode_lat_lon"]), gold["latlon/decode_of_encode"]
    )
    np.testing.assert_array_equal(
        _np(denormalize("latlon", torch.from_numpy(gold["latlon/decode_raw_in"]))),
        gold["latlon/decode_raw_out"],
    )


@needs_reference
def test_dates_official_match_golden(gold: dict) -> None:
    ymd = gold["dates/in_ymd"]
    np.testing.assert_array_equal(
        normalize("mean_timestamps", ymd, mode=OFF).values, gold["dates/encode_date"]
    )
    np.testing.assert_array_equal(encode_date(ymd[:, 0], ymd[:, 1], ymd[:, 2]), gold["dates/encode_date"])
    np.testing.assert_array_equal(
        encode_timestamp(gold["dates/timestamp_float32_utc"]), gold["dates/pre_process_from_timestamp"]
    )
    np.testing.assert_array_equal(
        denormalize("date", gold["dates/encode_date"]), gold["dates/decode_of_encode"]
    )
    np.testing.assert_array_equal(
        _np(decode_date(torch.from_numpy(gold["dates/decode_raw_in"]))), gold["dates/decode_raw_out"]
    )


# --- strict mode -------------------------------------------------------------------------------


def test_strict_dem_raises_negatives_to_the_floor_and_says_so() -> None:
    x = np.array([[-430.5, -1.0, 0.0, 1200.0]], dtype=np.float32)
    values, notes = normalize("dem", x)
    assert values[0, 0] == values[0, 1] == values[0, 2] == pytest.approx(-1.0, abs=1e-6)
    assert any("2 pixels" in n and "below 0 m" in n for n in notes)
    _, notes = normalize("dem", np.array([10.0, 12000.0], dtype=np.float32))
    assert any("clipped" in n for n in notes)
    assert float(normalize("dem", np.array([12000.0])).values[0]) == pytest.approx(1.0, abs=1e-6)
    assert normalize("dem", np.array([100.0, 2000.0])).notes == ()


def test_strict_lulc_unknown_codes_raise_with_the_codes_and_the_fix() -> None:
    codes = np.array([[[1, 2, 3, 255]]])
    with pytest.raises(ValueError, match=r"\[3, 255\].*remap"):
        normalize("LULC_LULC", codes)
    assert normalize("LULC_LULC", codes, mode=OFF).values[0, 0, 2] == 1.0  # official: silently NoData
    with pytest.raises(ValueError, match="4"):
        normalize("cloud_mask", np.array([[0, 4]]))
    with pytest.raises(ValueError, match="non-integer"):
        normalize("lulc", np.array([[1.0, 2.5]]))


def test_strict_lulc_notes_a_nodata_share_training_would_drop() -> None:
    codes = np.ones((1, 10, 10), dtype=np.uint8)
    codes[0, 0, :5] = 0
    assert any("NoData" in n for n in normalize("lulc", codes).notes)
    assert normalize("lulc", np.ones((1, 10, 10), dtype=np.uint8)).notes == ()


@pytest.mark.parametrize("key", ["S2L2A_B01_B09", "s1", "dem", "lulc", "cloud_mask"])
def test_strict_refuses_nan(key: str) -> None:
    x = np.ones((1, 4, 4), dtype=np.float32)
    x[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        normalize(key, x)


@pytest.mark.parametrize("bad", [-1, 65536, 1e6])
def test_strict_s2_refuses_dn_outside_uint16(bad: float) -> None:
    with pytest.raises(ValueError, match="65535"):
        normalize("s2l2a_10m", np.array([[100.0, bad]]))
    assert normalize("s2l2a_10m", np.array([[100.0, bad]]), mode=OFF).values.shape == (1, 2)


def test_s2_baseline_offset_is_removed_only_on_request() -> None:
    dn = np.array([0, 500, 1000, 3000], dtype=np.uint16)
    plain, plain_notes = normalize("s2l2a_10m", dn)
    assert plain[3] == pytest.approx(3000 / 10000 * 2 - 1)
    values, notes = normalize("s2l2a_10m", dn, baseline_offset=True)
    np.testing.assert_allclose(values, np.array([0, 0, 0, 2000]) / 10000 * 2 - 1, atol=1e-7)
    assert any("baseline offset" in n for n in notes) and any("1 pixel" in n and "below" in n for n in notes)
    assert any("no-data" in n for n in plain_notes)
    with pytest.raises(ValueError, match="official"):
        normalize("s2l2a_10m", dn, mode=OFF, baseline_offset=True)
    with pytest.raises(ValueError, match="Sentinel-2"):
        normalize("dem", dn, baseline_offset=True)
    with pytest.raises(ValueError, match="Sentinel-1"):
        normalize("dem", dn, in_db=True)


def test_strict_s1_stays_in_range_and_reports_changes() -> None:
    lin = np.array([0.0, -0.5, 1e-12, 0.05, 5e4], dtype=np.float32)
    values, notes = normalize("s1", lin)
    assert float(values.min()) == pytest.approx(-1.0, abs=1e-6) and float(values.max()) == pytest.approx(
        1.0, abs=1e-6
    )
    assert len(notes) == 2 and "3 pixels" in notes[0]
    db = 10 * np.log10(np.array([0.05, 0.2], dtype=np.float32))
    np.testing.assert_allclose(
        normalize("s1", db, in_db=True).values,
        normalize("s1", np.array([0.05, 0.2], dtype=np.float32)).values,
        atol=1e-6,
    )


def test_unknown_mode_and_modality_are_refused() -> None:
    with pytest.raises(ValueError, match="strict"):
        normalize("dem", np.ones(3), mode="lenient")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="unknown modality"):
        normalize("S3_OLCI", np.ones(3))


# --- shapes, types, dispatch -------------------------------------------------------------------


def test_every_modality_dispatches_and_round_trips_in_its_documented_shapes() -> None:
    rng = np.random.default_rng(0)
    raw: dict[Kind, Callable[[Modality], np.ndarray]] = {
        Kind.S2: lambda m: rng.integers(1, 12000, size=(len(m.channels), 8, 8)).astype(np.uint16),
        Kind.S1: lambda m: rng.uniform(1e-4, 1.0, size=(2, 8, 8)).astype(np.float32),
        Kind.DEM: lambda m: rng.uniform(1.0, 4000.0, size=(1, 8, 8)).astype(np.float32),
        Kind.LULC: lambda m: rng.choice(LULC_CODES[1:], size=(1, 8, 8)),
        Kind.CLOUD: lambda m: rng.integers(0, 4, size=(1, 8, 8)),
        Kind.LATLON: lambda m: np.array([[55.95, -3.19], [-33.87, 151.21]]),
        Kind.DATE: lambda m: np.array([[2021, 7, 15], [2019, 12, 31]]),
    }
    for m in MODALITIES:
        x = raw[m.kind](m)
        y, notes = normalize(m, x)
        assert isinstance(y, np.ndarray)
        assert y.dtype == np.float32 and notes == ()
        if m.is_image:
            assert y.shape == (m.vae_channels, 8, 8)
            back = _np(denormalize(m, y[None]))[0]
        else:
            assert y.shape == (2, 1, 1, 3)
            back = _np(denormalize(m.key, y))[:, 0, 0]
        if m.kind in (Kind.LULC, Kind.CLOUD):
            np.testing.assert_array_equal(back, x)
        elif m.kind is Kind.DATE:
            np.testing.assert_array_equal(back[:, ::-1], x)  # decoded as [day, month, year]
        else:
            np.testing.assert_allclose(back, x, rtol=2e-5, atol=2e-4)


def test_torch_in_gives_torch_out_on_both_paths() -> None:
    x = torch.full((2, 1, 4, 4), 1200.0)
    y = normalize("dem", x).values
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    assert isinstance(denormalize("dem", y), torch.Tensor)
    codes = torch.tensor([[[[1, 2], [4, 11]]]])
    planes = normalize("lulc", codes).values
    assert isinstance(planes, torch.Tensor) and tuple(planes.shape) == (1, 10, 2, 2)
    assert torch.equal(torch.as_tensor(denormalize("lulc", planes)), codes)
    vec = normalize("latlon", torch.tensor([[10.0, 20.0]], dtype=torch.float64)).values
    assert isinstance(vec, torch.Tensor) and tuple(vec.shape) == (1, 1, 1, 3)
    assert isinstance(denormalize("latlon", vec), torch.Tensor)
    assert isinstance(decode_date(torch.from_numpy(encode_date(2020, 2, 29))), torch.Tensor)


def test_one_hot_shapes_and_errors() -> None:
    assert normalize("lulc", np.ones((5, 6), dtype=np.uint8)).values.shape == (10, 5, 6)
    assert normalize("lulc", np.ones((3, 1, 5, 6), dtype=np.uint8)).values.shape == (3, 10, 5, 6)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        normalize("lulc", np.ones((2, 5, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match="10 planes"):
        denormalize("lulc", np.zeros((4, 5, 6), dtype=np.float32))
    ties = np.zeros((1, 4, 1, 2), dtype=np.float32)
    ties[0, 2, 0, 1] = ties[0, 3, 0, 1] = 1.0
    assert denormalize("cloud_mask", ties).tolist() == [[[[0, 2]]]]  # first index wins ties


# --- scalars -----------------------------------------------------------------------------------


def test_dates_use_the_utc_calendar_day() -> None:
    eastern = dt.timezone(dt.timedelta(hours=10))
    late_local = dt.datetime(2021, 7, 16, 5, 0, tzinfo=eastern)  # 2021-07-15 19:00 UTC
    np.testing.assert_array_equal(encode_datetime(late_local), encode_date(2021, 7, 15))
    np.testing.assert_array_equal(encode_datetime(dt.datetime(2021, 7, 15, 23, 59)), encode_date(2021, 7, 15))
    np.testing.assert_array_equal(encode_datetime(dt.date(2021, 7, 15)), encode_date(2021, 7, 15))
    ts = dt.datetime(2021, 7, 15, 23, 59, tzinfo=dt.UTC).timestamp()
    np.testing.assert_array_equal(encode_timestamp(ts), encode_date(2021, 7, 15))
    np.testing.assert_array_equal(encode_timestamp(-1.0), encode_date(1969, 12, 31))
    stacked = normalize("date", [dt.date(2020, 2, 29), late_local]).values
    assert stacked.shape == (2, 1, 1, 3)


def test_date_decode_rules() -> None:
    vec = np.array(
        [[0.0, 1.0, 0.4], [0.0, -1.0, np.float32(0.41)], [0.0, -1.0, np.float32(0.43)]], np.float32
    )
    out = decode_date(vec).tolist()
    assert out[0] == [31, 12, 2020]  # angle 0 -> doy 0 -> n: 31 December
    assert out[1][2] == 2020 and out[2][2] == 2022  # 2020.4999998 -> 2020; 2021.5000004 -> 2022
    with pytest.raises(ValueError, match="NaN"):
        decode_date(np.array([np.nan, 1.0, 0.0]))


def test_invalid_dates_and_years_outside_the_span() -> None:
    with pytest.raises(ValueError, match="2021-02-29"):
        encode_date(2021, 2, 29)
    with pytest.raises(ValueError, match="months"):
        normalize("date", np.array([2021, 13, 1]))
    values, notes = normalize("date", np.array([2100, 2, 28]))
    assert values.shape == (1, 1, 3) and any("2100" in n for n in notes)


def test_strict_latlon_range_checks() -> None:
    with pytest.raises(ValueError, match="91"):
        normalize("latlon", np.array([91.0, 0.0]))
    with pytest.raises(ValueError, match="wrap"):
        normalize("latlon", np.array([10.0, 200.0]))
    assert normalize("latlon", np.array([10.0, 200.0]), mode=OFF).values.shape == (1, 1, 3)


@settings(max_examples=200, deadline=None)
@given(st.dates(min_value=dt.date(1950, 1, 1), max_value=dt.date(2050, 12, 31)))
def test_date_encode_decode_round_trip(day: dt.date) -> None:
    assert decode_date(encode_datetime(day)).ravel().tolist() == [day.day, day.month, day.year]


@settings(max_examples=200, deadline=None)
@given(st.floats(-85.0, 85.0), st.floats(-179.9, 179.9))
def test_latlon_encode_decode_round_trip(lat: float, lon: float) -> None:
    vec = encode_latlon(lat, lon)
    assert abs(float(np.linalg.norm(vec.astype(np.float64))) - 1.0) < 1e-6
    back = denormalize("latlon", vec).ravel()
    assert abs(back[0] - lat) < 1e-4 and abs(back[1] - lon) < 1e-3


# --- constants ---------------------------------------------------------------------------------


@needs_reference
def test_class_tables_match_the_official_config() -> None:
    import json

    meta = json.loads((PROC_DIR / "cases.json").read_text())
    assert [int(k) for k in meta["lulc_value_to_index"]] == list(LULC_CODES)
    assert list(LULC_CLASS_NAMES) == meta["lulc_class_names"]


def test_palettes_and_rgb() -> None:
    assert LULC_PALETTE.shape == (10, 3) and LULC_PALETTE.dtype == np.uint8
    assert CLOUD_PALETTE.tolist() == LULC_PALETTE[:4].tolist()
    rgb = lulc_rgb(np.array([[1, 11], [3, 0]]))
    assert (
        rgb.shape == (2, 2, 3)
        and rgb[0, 0].tolist() == [26, 91, 171]
        and rgb[0, 1].tolist() == [165, 155, 143]
    )
    assert rgb[1, 0].tolist() == [0, 0, 0]
    assert BY_KEY["LULC_LULC"].vae_channels == len(LULC_CODES)


# --- real data ---------------------------------------------------------------------------------

TERRAMESH = REAL / "terramesh"
# TerraMesh renumbers the 9 Esri classes 1..9 in order (documented assumption, see the data README).
TERRAMESH_TO_ESRI = np.array([0, 1, 2, 4, 5, 7, 8, 9, 10, 11])


@pytest.mark.skipif(not TERRAMESH.is_dir(), reason=f"real TerraMesh tiles not found at {TERRAMESH}")
@pytest.mark.parametrize("tile", ["637U_59R_1_3", "38D_378R_2_3"])
def test_real_tiles_normalise_cleanly_in_strict_mode(tile: str) -> None:
    rasterio = pytest.importorskip("rasterio")

    def read(kind: str) -> np.ndarray:
        with rasterio.open(TERRAMESH / kind / f"{tile}.tif") as ds:
            return ds.read()

    s2 = read("S2L2A")[[3, 2, 1, 7]]  # B04, B03, B02, B08
    y, _ = normalize("S2L2A_B02_B03_B04_B08", s2)
    assert y.shape == (4, 224, 224) and -1.0 < float(y.min()) and float(y.max()) < 1.0
    s1, notes = normalize("S1RTC_vh_vv", read("S1RTC"), in_db=True)
    assert notes == () and float(s1.min()) > -1.0 and float(s1.max()) < 1.0
    dem = read("DEM")
    d, notes = normalize("DEM_DEM", dem)
    assert notes == ()
    np.testing.assert_allclose(denormalize("DEM_DEM", d[None])[0], dem, rtol=1e-5, atol=1e-3)
    lulc = TERRAMESH_TO_ESRI[read("LULC")]
    planes, _ = normalize("LULC_LULC", lulc)
    np.testing.assert_array_equal(denormalize("LULC_LULC", planes[None])[0], lulc)


# --- the reference check itself ----------------------------------------------------------------


@needs_reference
def test_reference_check_passes_on_the_golden_set() -> None:
    results = processing_check.run(REFERENCE)
    assert len(results) >= 30
    assert [r.line() for r in results if not r.ok] == []


@needs_reference
def test_reference_check_fails_on_perturbed_copies(tmp_path: Path) -> None:
    shutil.copytree(PROC_DIR, tmp_path / "processing")
    path = tmp_path / "processing" / "cases.safetensors"
    tensors = load_file(str(path))
    tensors["dem/pre"] = tensors["dem/pre"].copy()
    tensors["dem/pre"][0, 2, 3] += 5e-6  # just outside rtol=atol=1e-6
    tensors["lulc/post_out"] = tensors["lulc/post_out"].copy()
    tensors["lulc/post_out"][1, 0, 2, 2] = 7
    tensors["dates/decode_raw_out"] = tensors["dates/decode_raw_out"].copy()
    tensors["dates/decode_raw_out"][13, 0, 0, 0] = 30  # the 31-Dec rule
    del tensors["s1/pre_in_db"]
    save_file(tensors, str(path))
    results = {r.name: r for r in processing_check.run(tmp_path)}
    failed = {name for name, r in results.items() if not r.ok}
    assert failed == {"dem/pre", "lulc/post_out", "dates/decode_raw_out", "s1/pre_in_db"}
    assert "missing" in results["s1/pre_in_db"].detail
    assert results["dem/pre"].worst > results["dem/pre"].tolerance


def test_reference_check_needs_a_processing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cases.safetensors"):
        processing_check.run(tmp_path)
