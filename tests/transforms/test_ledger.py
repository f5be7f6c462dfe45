"""transforms.ledger: done/failed records, listings and completeness on local disk and memory://."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transforms import ledger
from transforms.windows import WindowKey

A, B, C = WindowKey(32632, 2650, 168), WindowKey(32632, 2650, 169), WindowKey(32733, -5, 12)


@pytest.fixture(params=["local", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "cube.zarr") if request.param == "local" else f"memory://{uuid.uuid4().hex}/cube.zarr"


@given(st.integers(32601, 32760), st.integers(-5000, 5000), st.integers(-500, 500), st.integers(0, 10_000))
def test_record_names_round_trip(epsg: int, row: int, col: int, t: int) -> None:
    key = WindowKey(epsg, row, col)
    assert ledger.parse_record_name("a/b/" + ledger.record_name(key, t)) == (key, t)


@pytest.mark.parametrize("name", [".tmp-abc123", "x.json", "32632_1_1.json", "32632_1_x__t0.json", "k__tz.json"])
def test_stray_names_are_not_records(name: str) -> None:
    assert ledger.parse_record_name(name) is None


def test_done_missing_and_failed(url: str) -> None:
    assert ledger.done_set(url) == set() and ledger.failures(url) == {}
    assert not ledger.is_done(url, A, 0)
    ledger.mark_done(url, A, 0, digest="sha256:aa", provenance={"seed": 1}, variables=["DEM_DEM"])
    ledger.mark_failed(url, B, 0, "STAC item S2B_x unreadable: HTTP 403")
    ledger.mark_done(url, C, 1, digest="sha256:cc", provenance={})
    assert ledger.is_done(url, A, 0) and not ledger.is_done(url, A, 1) and not ledger.is_done(url, B, 0)
    assert ledger.done_set(url) == {(A, 0), (C, 1)}
    assert ledger.failures(url) == {(B, 0): "STAC item S2B_x unreadable: HTTP 403"}
    planned = [(k, t) for k in (A, B) for t in (0, 1)]
    done, missing = ledger.completeness(url, planned)
    assert done == [(A, 0)]  # (C, 1) is done but not planned: ignored
    assert missing == [(A, 1), (B, 0), (B, 1)]
    rec = ledger.read_record(url, A, 0)
    assert rec == {"window": str(A), "time_index": 0, "status": "done", "digest": "sha256:aa",
                   "variables": ["DEM_DEM"], "provenance": {"seed": 1}}


def test_a_failure_done_later_leaves_the_report(url: str) -> None:
    ledger.mark_failed(url, A, 2, "CUDA OOM", provenance={"seed": 3})
    assert ledger.failures(url) == {(A, 2): "CUDA OOM"}
    ledger.mark_done(url, A, 2, digest="sha256:ff", provenance={"seed": 3})
    assert ledger.failures(url) == {} and ledger.done_set(url) == {(A, 2)}


def test_records_are_deterministic_bytes_and_rewrites_leave_no_temp_files(tmp_path: Path) -> None:
    url = str(tmp_path / "cube.zarr")
    for _ in range(2):
        ledger.mark_done(url, A, 0, digest="sha256:aa", provenance={"z": 1, "a": [1, 2]})
    folder = tmp_path / "cube.zarr" / "_ledger" / "done"
    assert sorted(os.listdir(folder)) == [f"{A}__t0.json"]
    raw = (folder / f"{A}__t0.json").read_bytes()
    assert raw == ledger.encode_record(json.loads(raw))
    assert raw.index(b'"digest"') < raw.index(b'"provenance"')  # sorted keys


def test_stray_objects_in_the_ledger_are_ignored(tmp_path: Path) -> None:
    url = str(tmp_path / "cube.zarr")
    ledger.mark_done(url, A, 0, digest="sha256:aa", provenance={})
    folder = tmp_path / "cube.zarr" / "_ledger" / "done"
    (folder / ".tmp-crashed").write_bytes(b"{")  # a writer died before os.replace
    (folder / "notes.txt").write_text("hi")
    assert ledger.done_set(url) == {(A, 0)}
    assert list(ledger.done_records(url)) == [(A, 0)]


def test_non_serialisable_provenance_raises_and_records_nothing(tmp_path: Path) -> None:
    url = str(tmp_path / "cube.zarr")
    with pytest.raises(TypeError):
        ledger.mark_done(url, A, 0, digest="sha256:aa", provenance={"bad": {1, 2}})
    assert ledger.done_set(url) == set()


def test_relative_local_paths_resolve_like_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ledger.mark_done("rel.zarr", A, 4, digest="sha256:aa", provenance={})
    assert ledger.is_done(str(tmp_path / "rel.zarr"), A, 4)
