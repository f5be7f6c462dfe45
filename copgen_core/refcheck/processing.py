"""Golden check of the pre/post-processing against ``<ref_dir>/processing/``.

Every input in ``cases.safetensors`` is run through :func:`copgen_core.normalize.normalize` (official
mode) or :func:`~copgen_core.normalize.denormalize` and compared with the stored output; the
``*_of_*`` round trips chain our own forward and inverse maps, as the official ones did. Floats with
``allclose(rtol=1e-6, atol=1e-6)``, integer outputs exactly (README of the reference set). The modality
keys come from ``cases.json`` -> ``keys_used`` when present, and the normalisation constants are checked
against its ``data_config``, so the check runs on any directory with the same layout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file

from copgen_core.normalize import Mode, denormalize, encode_timestamp, normalize
from copgen_core.normalize_continuous import (
    DEM_MAX_LOG,
    DEM_MIN_LOG,
    DEM_MIN_POSITIVE,
    S1_MAX_DB,
    S1_MIN_DB,
    S1_MIN_POSITIVE,
)
from copgen_core.refcheck import CheckResult

SECTION = "processing"
FLOAT_RTOL = 1e-6
FLOAT_ATOL = 1e-6

DEFAULT_KEYS: dict[str, Any] = {
    "s2": ["S2L2A_B02_B03_B04_B08", "S2L1C_B01_B09_B10"],
    "s1": "S1RTC_vh_vv",
    "dem": "DEM_DEM",
    "lulc": "LULC_LULC",
    "cloud": "S2L1C_cloud_mask",
    "latlon": "3d_cartesian_lat_lon",
    "dates": "mean_timestamps",
}


def _np(x: object) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def compare_close(section: str, name: str, got: object, ref: np.ndarray, rtol: float = FLOAT_RTOL,
                  atol: float = FLOAT_ATOL) -> CheckResult:
    """``allclose(got, ref, rtol, atol)`` as a :class:`CheckResult`.

    ``worst`` is ``max |got - ref| * atol / (atol + rtol |ref|)``: the error rescaled so that it is at most
    ``atol`` (the reported tolerance) exactly when allclose holds. The detail line gives the raw max
    absolute error and how many entries are not bit-equal. A shape mismatch fails with worst = inf.
    """
    g = _np(got)
    if g.shape != ref.shape:
        return CheckResult(section, name, float("inf"), atol, False, f"shape {g.shape} != reference {ref.shape}")
    g64, r64 = g.astype(np.float64), ref.astype(np.float64)
    if g.size == 0:
        return CheckResult(section, name, 0.0, atol, True, "empty")
    err = np.abs(g64 - r64)
    scaled = np.where(np.isnan(err), np.inf, err / (atol + rtol * np.abs(r64))) * atol
    worst = float(scaled.max())
    ok = bool(np.allclose(g64, r64, rtol=rtol, atol=atol))
    detail = f"allclose rtol={rtol:g} atol={atol:g}; max abs err {float(np.nanmax(err)):.3g}, " \
             f"{int((g64 != r64).sum())}/{g.size} not bit-equal"
    return CheckResult(section, name, worst, atol, ok, detail)


def compare_exact(section: str, name: str, got: object, ref: np.ndarray) -> CheckResult:
    """Exact check; ``worst`` is the number of mismatching entries (tolerance 0)."""
    g = _np(got)
    if g.shape != ref.shape:
        return CheckResult(section, name, float("inf"), 0.0, False, f"shape {g.shape} != reference {ref.shape}")
    bad = int(np.sum(g != ref))
    detail = f"{bad}/{ref.size} differ"
    if bad:
        i = int(np.flatnonzero((g != ref).ravel())[0])
        detail += f"; first at flat index {i}: got {g.ravel()[i]!r}, expected {ref.ravel()[i]!r}"
    return CheckResult(section, name, float(bad), 0.0, bad == 0, detail)


def _guarded(name: str, fn: Callable[[], CheckResult]) -> CheckResult:
    try:
        return fn()
    except KeyError as exc:
        return CheckResult(SECTION, name, float("inf"), 0.0, False, f"missing tensor {exc}")
    except Exception as exc:  # noqa: BLE001 - a crash is a failed check, reported with its message
        return CheckResult(SECTION, name, float("inf"), 0.0, False, f"{type(exc).__name__}: {exc}")


def _s2_key(keys: dict[str, Any], product: str) -> str:
    s2 = keys["s2"]
    names = [s2] if isinstance(s2, str) else list(s2)
    for k in names:
        if str(k).startswith(f"S2{product.upper()}"):
            return str(k)
    return str(names[0])


def _constants(meta: dict) -> list[CheckResult]:
    cfg = meta.get("data_config")
    if not cfg:
        return []
    ours = {
        ("min_db", "S1"): S1_MIN_DB, ("max_db", "S1"): S1_MAX_DB, ("min_positive", "S1"): S1_MIN_POSITIVE,
        ("min_db", "DEM"): DEM_MIN_LOG, ("max_db", "DEM"): DEM_MAX_LOG, ("min_positive", "DEM"): DEM_MIN_POSITIVE,
    }
    keys = {"S1": "S1RTC_vh_vv", "DEM": "DEM_DEM"}
    got, ref, names = [], [], []
    for (field, kind), value in ours.items():
        theirs = cfg.get(field, {}).get(keys[kind])
        names.append(f"{field}[{keys[kind]}]")
        got.append(value)
        ref.append(np.nan if theirs is None else float(theirs))
    result = compare_exact(SECTION, "constants/data_config", np.array(got), np.array(ref))
    return [CheckResult(result.section, result.name, result.worst, result.tolerance, result.ok,
                        result.detail + f" ({', '.join(names)})")]


def run(ref_dir: Path) -> list[CheckResult]:
    """Compare every processing output in ``ref_dir/processing`` with ours; one result per tensor.

    Raises
    ------
    FileNotFoundError
        If ``ref_dir/processing/cases.safetensors`` is missing.
    """
    folder = Path(ref_dir) / "processing"
    tensors_path = folder / "cases.safetensors"
    if not tensors_path.is_file():
        raise FileNotFoundError(f"{tensors_path} not found; point the check at a directory laid out like "
                                "shared/reference/copgen/")
    d = load_file(str(tensors_path))
    meta_path = folder / "cases.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    keys = {**DEFAULT_KEYS, **meta.get("keys_used", {})}
    off: Mode = "official"

    def close(name: str, got: Callable[[], object]) -> CheckResult:
        return _guarded(name, lambda: compare_close(SECTION, name, got(), d[name]))

    def exact(name: str, got: Callable[[], object]) -> CheckResult:
        return _guarded(name, lambda: compare_exact(SECTION, name, got(), d[name]))

    def pre(key: object, x: object, in_db: bool = False) -> Any:
        return normalize(str(key), x, mode=off, in_db=in_db).values

    def torch_in(name: str) -> torch.Tensor:
        return torch.from_numpy(d[name])

    def s2_pre(key: str) -> Any:
        return pre(key, torch_in("s2/in_dn").to(torch.float32))

    def s2_torch(key: str, product: str) -> CheckResult:
        return compare_close(SECTION, f"s2/{product}/pre[torch]", s2_pre(key), d[f"s2/{product}/pre"])

    def one_hot_round_trip(key: str, group: str) -> Any:
        return denormalize(key, pre(key, torch_in(f"{group}/in_codes"))[None])

    out: list[CheckResult] = []
    for product in ("l2a", "l1c"):
        key = _s2_key(keys, product)
        out += [
            close(f"s2/{product}/pre", partial(pre, key, d["s2/in_dn"].astype(np.uint16))),
            _guarded(f"s2/{product}/pre[torch]", partial(s2_torch, key, product)),
            close(f"s2/{product}/post_of_pre", partial(lambda k: denormalize(k, s2_pre(k)[None]), key)),
        ]
    s2_key = _s2_key(keys, "l2a")
    out.append(close("s2/post_out", lambda: denormalize(s2_key, torch_in("s2/post_in"))))

    s1, dem = keys["s1"], keys["dem"]
    out += [
        close("s1/pre", lambda: pre(s1, torch_in("s1/in_linear"))),
        close("s1/pre_numpy_path", lambda: pre(s1, d["s1/in_linear"])),
        close("s1/pre_in_db", lambda: pre(s1, torch_in("s1/in_db"), in_db=True)),
        close("s1/post_of_pre", lambda: denormalize(str(s1), pre(s1, torch_in("s1/in_linear"))[None])),
        close("s1/post_out", lambda: denormalize(str(s1), torch_in("s1/post_in"))),
        close("dem/pre", lambda: pre(dem, torch_in("dem/in_m"))),
        close("dem/pre_numpy_path", lambda: pre(dem, d["dem/in_m"])),
        close("dem/post_of_pre", lambda: denormalize(str(dem), pre(dem, torch_in("dem/in_m"))[None])),
        close("dem/post_out", lambda: denormalize(str(dem), torch_in("dem/post_in"))),
    ]
    for group in ("lulc", "cloud"):
        key = str(keys[group])
        out += [
            close(f"{group}/pre", partial(pre, key, d[f"{group}/in_codes"])),
            exact(f"{group}/post_of_pre", partial(one_hot_round_trip, key, group)),
            exact(f"{group}/post_out", partial(denormalize, key, torch_in(f"{group}/post_in"))),
        ]

    ll, dates = str(keys["latlon"]), str(keys["dates"])
    out += [
        close("latlon/encode_lat_lon", lambda: pre(ll, d["latlon/in_deg_float64"])),
        close("latlon/pre_process_from_float32", lambda: pre(ll, d["latlon/in_deg_float64"].astype(np.float32))),
        close("latlon/decode_of_encode", lambda: denormalize(ll, pre(ll, torch_in("latlon/in_deg_float64")))),
        close("latlon/decode_raw_out", lambda: denormalize(ll, torch_in("latlon/decode_raw_in"))),
        close("dates/encode_date", lambda: pre(dates, d["dates/in_ymd"])),
        close("dates/pre_process_from_timestamp", lambda: encode_timestamp(d["dates/timestamp_float32_utc"])),
        exact("dates/decode_of_encode", lambda: denormalize(dates, pre(dates, torch_in("dates/in_ymd")))),
        exact("dates/decode_raw_out", lambda: denormalize(dates, d["dates/decode_raw_in"])),
    ]
    out += _constants(meta)
    return out
