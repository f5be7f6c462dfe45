"""The write ledger of a cube: which (window, time) pairs are done, which failed, and with what provenance.

One small JSON object per (window, time) under ``<cube>/_ledger/``:

* ``_ledger/done/<key>__t<time_index>.json`` is written *last*, after every region of the window is
  in the store, in one put (``os.replace`` of a temp file on local disk). Its presence is the only
  definition of "done": a crash before it leaves the window not done and a rerun redoes it.
* ``_ledger/failed/<key>__t<time_index>.json`` records the last failure reason, for the run report;
  it never marks anything done, and :func:`failures` hides entries that were done later.

Records hold no wall-clock time, so a rerun with the same inputs writes the same bytes. Listings
always bypass fsspec's directory cache (``refresh=True``): other processes write here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from transforms.windows import WindowKey

LEDGER_DIR = "_ledger"
DONE = "done"
FAILED = "failed"

LedgerKey = tuple[WindowKey, int]
"""(window key, time index)."""


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and in-filesystem path of a cube URL (local paths made absolute).

    Warning
    -------
    For ``gs://`` URLs with the GCS emulator, set ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` before
    gcsfs is imported, and never list buckets (``ls("")``) on the returned instance: both are gcsfs
    issues described in ``docs/cube.md``.
    """
    if "://" not in url:
        url = os.path.abspath(url)
    return fsspec.core.url_to_fs(url, **dict(storage_options or {}))


def record_name(key: WindowKey, time_index: int) -> str:
    """Object name of a (window, time) record, e.g. ``"32632_2650_168__t0.json"``."""
    return f"{key}__t{int(time_index)}.json"


def parse_record_name(name: str) -> LedgerKey | None:
    """Inverse of :func:`record_name`; ``None`` for anything else (temp files, stray objects)."""
    base = name.rsplit("/", 1)[-1]
    if base.startswith(".") or not base.endswith(".json") or "__t" not in base:
        return None
    key, _, t = base[: -len(".json")].rpartition("__t")
    try:
        return WindowKey.parse(key), int(t)
    except ValueError:
        return None


def encode_record(record: Mapping[str, Any]) -> bytes:
    """Deterministic JSON bytes of a record (sorted keys, compact)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def put_object(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write one object atomically: a temp file + ``os.replace`` locally, one put elsewhere."""
    if isinstance(fs, LocalFileSystem):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        fs.pipe_file(path, data)


def _path(
    url: str, storage_options: Mapping[str, Any] | None, kind: str, key: WindowKey, t: int
) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = filesystem(url, storage_options)
    return fs, f"{root.rstrip('/')}/{LEDGER_DIR}/{kind}/{record_name(key, t)}"


def mark_done(
    url: str,
    key: WindowKey,
    time_index: int,
    *,
    digest: str,
    provenance: Mapping[str, Any],
    variables: Iterable[str] = (),
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Record (key, time_index) as done. Call it only after every region of the window is written.

    Parameters
    ----------
    url:
        Cube URL.
    key, time_index:
        The window and time slot.
    digest:
        Content digest of the written arrays (``"sha256:<hex>"``).
    provenance:
        JSON-serialisable provenance of the window (see ``docs/cube.md``).
    variables:
        Names of the variables written.

    Raises
    ------
    TypeError
        If ``provenance`` is not JSON-serialisable.
    """
    record = {
        "window": str(key),
        "time_index": int(time_index),
        "status": DONE,
        "digest": digest,
        "variables": sorted(variables),
        "provenance": dict(provenance),
    }
    fs, path = _path(url, storage_options, DONE, key, time_index)
    put_object(fs, path, encode_record(record))


def mark_failed(
    url: str,
    key: WindowKey,
    time_index: int,
    reason: str,
    *,
    provenance: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Record that (key, time_index) failed, with a human-readable reason; does not mark it done."""
    record = {
        "window": str(key),
        "time_index": int(time_index),
        "status": FAILED,
        "reason": str(reason),
        "provenance": dict(provenance or {}),
    }
    fs, path = _path(url, storage_options, FAILED, key, time_index)
    put_object(fs, path, encode_record(record))


def read_record(
    url: str, key: WindowKey, time_index: int, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The done record of (key, time_index), or ``None`` if it is not done."""
    fs, path = _path(url, storage_options, DONE, key, time_index)
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


def is_done(url: str, key: WindowKey, time_index: int, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True when the done record of (key, time_index) exists.

    Reads the object itself rather than asking ``exists``: gcsfs answers ``exists`` from a directory
    listing cached earlier in the process, which misses records written by other workers.
    """
    return read_record(url, key, time_index, storage_options) is not None


def _list(url: str, storage_options: Mapping[str, Any] | None, kind: str) -> dict[LedgerKey, str]:
    fs, root = filesystem(url, storage_options)
    folder = f"{root.rstrip('/')}/{LEDGER_DIR}/{kind}"
    try:
        names = fs.ls(folder, detail=False, refresh=True)
    except FileNotFoundError:
        return {}
    out = {}
    for name in names:
        parsed = parse_record_name(name)
        if parsed is not None:
            out[parsed] = name
    return out


def done_set(url: str, storage_options: Mapping[str, Any] | None = None) -> set[LedgerKey]:
    """Every (key, time_index) recorded done, from one fresh listing of ``_ledger/done/``."""
    return set(_list(url, storage_options, DONE))


def _read_all(url: str, storage_options: Mapping[str, Any] | None, kind: str) -> dict[LedgerKey, dict[str, Any]]:
    fs, _ = filesystem(url, storage_options)
    paths = _list(url, storage_options, kind)
    if not paths:
        return {}
    blobs = fs.cat(list(paths.values()))  # concurrent on object stores
    return {k: json.loads(blobs[p]) for k, p in paths.items()}


def done_records(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[LedgerKey, dict[str, Any]]:
    """Every done record, keyed by (key, time_index): one listing plus one batched read."""
    return _read_all(url, storage_options, DONE)


def failures(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[LedgerKey, str]:
    """Failure reason of every (key, time_index) that failed and is not done (since), for the run report."""
    done = done_set(url, storage_options)
    return {k: r["reason"] for k, r in sorted(_read_all(url, storage_options, FAILED).items()) if k not in done}


def completeness(
    url: str, planned: Iterable[LedgerKey], storage_options: Mapping[str, Any] | None = None
) -> tuple[list[LedgerKey], list[LedgerKey]]:
    """Split the planned (key, time_index) pairs into done and missing, both sorted.

    Done records for pairs outside ``planned`` are ignored.
    """
    done = done_set(url, storage_options)
    want = sorted(set(planned))
    return [p for p in want if p in done], [p for p in want if p not in done]
