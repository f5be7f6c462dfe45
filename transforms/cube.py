"""The Zarr v3 ensemble cube: template, validated region writes per window, read-back, finalisation.

Engine-neutral plain functions: the driver calls :func:`create_cube` once, then any number of
processes (Beam workers, Dask tasks, subprocesses) call :func:`write_window` for disjoint or repeated
(window, time) pairs, and the driver calls :func:`finalize_cube` at the end. The layout is in
:mod:`transforms.cube_spec` and ``docs/cube.md``; progress is in :mod:`transforms.ledger`.

Warning
-------
Concurrency rule: one window's block is one shard column per variable, so writers of *different*
windows never touch the same object. Two writers of the *same* (window, time) race, which is
harmless only because they write the same bytes (deterministic inputs); never feed one window from
two different sources at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore

from copgen_core.modalities import BY_KEY, Modality, resolve
from transforms import ledger
from transforms.cube_spec import (
    CLASS_CODES,
    CLASS_NAMES,
    CONTINUOUS_STATS,
    UINT8_FILL,
    UNITS,
    AlignmentError,
    CubeError,
    CubeGroup,
    CubeSpec,
    SpecMismatchError,
    block_offset_m,
    is_categorical,
    variable_names,
)
from transforms.cube_stats import class_frequencies, class_mode, continuous_stats
from transforms.windows import WindowKey

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "PROVENANCE_FIELDS",
    "AlignmentError",
    "CubeError",
    "CubeSpec",
    "SpecMismatchError",
    "content_digest",
    "create_cube",
    "create_or_resume",
    "finalize_cube",
    "load_spec",
    "open_store",
    "read_window",
    "validate_region",
    "verify_window",
    "write_window",
]

ROOT_ATTR = "copgen_cube"
"""Root attribute holding ``{format_version, state, spec_hash, spec}``."""

PROVENANCE_VAR = "provenance"
PROVENANCE_FIELDS: tuple[str, ...] = (
    "window", "time", "time_index", "source_items", "cloud_fraction", "seed", "conditioning", "targets",
    "model_hash", "sampler", "software_version",
)
"""Provenance fields the pipelines record per (window, time); ``window``/``time``/``time_index`` are set here."""


# -- storage ----------------------------------------------------------------------------------------


def open_store(url: str, storage_options: Mapping[str, Any] | None = None, *, read_only: bool = False) -> Store:
    """A Zarr store for a cube URL: :class:`LocalStore` for paths, :class:`FsspecStore` for ``gs://``, ``memory://``..."""
    if "://" not in url or url.startswith("file://"):
        return LocalStore(os.path.abspath(url.removeprefix("file://")), read_only=read_only)
    return FsspecStore.from_url(url, storage_options=dict(storage_options or {}), read_only=read_only)


def _quiet_consolidate(store: Store, path: str = "") -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store, path=path or None, zarr_format=3)


def _root_attrs(store: Store) -> dict[str, Any] | None:
    try:
        return dict(zarr.open_group(store, mode="r").attrs)
    except FileNotFoundError:
        return None


def _cube_info(url: str, attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    if attrs is None:
        raise CubeError(f"no cube at {url}: create it first with create_cube(spec)")
    info = attrs.get(ROOT_ATTR)
    if info is None:
        raise SpecMismatchError(f"{url} holds a Zarr store that is not a copgen cube (no {ROOT_ATTR!r} root "
                                "attribute); use another URL")
    if info.get("state") != "ready":
        raise CubeError(f"the cube template at {url} is incomplete (state {info.get('state')!r}): a create_cube "
                        "was interrupted; run create_cube(spec) again before writing")
    return dict(info)


def load_spec(url: str, storage_options: Mapping[str, Any] | None = None) -> CubeSpec:
    """The :class:`CubeSpec` a cube was created from, read from its root attributes.

    Workers can call this instead of shipping the spec: ``write_window(load_spec(url), ...)``.

    Raises
    ------
    CubeError
        If there is no finished cube at ``url``.
    """
    info = _cube_info(url, _root_attrs(open_store(url, storage_options, read_only=True)))
    return CubeSpec.from_json(info["spec"], url, storage_options)


# -- template ---------------------------------------------------------------------------------------


def _var_attrs(mod: Modality, long_name: str, *, codes: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {"long_name": long_name, "units": UNITS[mod.kind], "copgen_modality": mod.key,
                             "copgen_kind": mod.kind.value}
    if codes:
        attrs["flag_values"] = list(CLASS_CODES[mod.kind])
        attrs["flag_meanings"] = " ".join(CLASS_NAMES[mod.kind])
        attrs["copgen_fill"] = UINT8_FILL
    return attrs


def _template(spec: CubeSpec, group: CubeGroup) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """The lazy template Dataset of one group and its Zarr encoding (nothing is computed)."""
    import dask.array as da
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr
    from affine import Affine

    gb, bpx = group.geobox, group.block_px
    ny, nx = gb.shape
    t_count, m = len(spec.times), spec.members
    times = np.array([np.datetime64(t.replace(tzinfo=None), "ns") for t in spec.times])
    coords: dict[str, Any] = {"time": ("time", times, {"standard_name": "time", "long_name": "time (UTC)"}),
                              "y": gb.y_coords, "x": gb.x_coords,
                              "window": ("window", np.array([str(k) for k in group.windows], dtype=object),
                                         {"long_name": "window key <epsg>_<row>_<col>"})}
    if m is not None:
        coords["member"] = ("member", np.arange(m, dtype=np.int64), {"long_name": "ensemble member"})
    ds = xr.Dataset(coords=coords, attrs={"Conventions": "CF-1.8", "epsg": group.epsg, "gsd_m": group.gsd_m,
                                          "block_px": bpx})
    enc: dict[str, dict[str, Any]] = {}

    def add(name: str, dims: tuple[str, ...], dtype: Any, fill: Any, attrs: dict[str, Any], shard_dims: int) -> None:
        shape = tuple(ds.sizes[d] for d in dims)
        chunks = tuple(1 if d in ("time", "member") else ds.sizes[d] for d in dims[:-2]) + (bpx, bpx)
        ds[name] = (dims, da.full(shape, fill, dtype=dtype, chunks=shape), attrs)
        enc[name] = {"chunks": chunks, "fill_value": fill}
        shards = tuple(ds.sizes[d] if d == "member" else c for d, c in zip(dims, chunks, strict=True))
        if shard_dims and shards != chunks:
            enc[name]["shards"] = shards

    for key in group.modalities:
        mod = BY_KEY[key]
        band = f"{key}__band"
        ds.coords[band] = (band, np.array(mod.channels, dtype=object), {"long_name": f"{key} channel"})
        cat = is_categorical(mod)
        dtype, fill = (np.uint8, UINT8_FILL) if cat else (np.float32, np.nan)
        lead = ("time",) if m is None else ("time", "member")
        add(key, (*lead, band, "y", "x"), dtype, fill, _var_attrs(mod, key, codes=cat), shard_dims=1)
        if not spec.stats:
            continue
        if cat:
            cls = f"{key}__class"
            ds.coords[cls] = (cls, np.array(CLASS_CODES[mod.kind], dtype=np.uint8),
                              {"long_name": f"{key} class code", "flag_meanings": " ".join(CLASS_NAMES[mod.kind])})
            add(f"{key}__freq", ("time", cls, "y", "x"), np.float32, np.nan,
                {**_var_attrs(mod, f"fraction of members in each {key} class", codes=False), "units": "1",
                 "cell_methods": "member: fraction"}, shard_dims=0)
            add(f"{key}__mode", ("time", band, "y", "x"), np.uint8, UINT8_FILL,
                {**_var_attrs(mod, f"modal {key} class over members (ties: smallest code)", codes=True),
                 "cell_methods": "member: mode"}, shard_dims=0)
        else:
            for stat in CONTINUOUS_STATS:
                add(f"{key}__{stat}", ("time", band, "y", "x"), np.float32, np.nan,
                    {**_var_attrs(mod, f"ensemble {stat} of {key}", codes=False), "cell_methods": f"member: {stat}"},
                    shard_dims=0)
    ds[PROVENANCE_VAR] = (("window", "time"), np.full((len(group.windows), t_count), "", dtype=object),
                          {"long_name": "per-window provenance (JSON; empty until finalize_cube)"})
    enc[PROVENANCE_VAR] = {"chunks": (len(group.windows), t_count)}
    ds = ds.rio.write_crs(f"EPSG:{group.epsg}").rio.write_transform(Affine(*gb.transform))
    for name, var in ds.data_vars.items():
        # rioxarray keeps grid_mapping in .encoding; explicit encodings replace it, so store it as an attribute
        var.encoding.pop("grid_mapping", None)
        var.attrs.pop("grid_mapping", None)
        if name != PROVENANCE_VAR:
            var.attrs["grid_mapping"] = "spatial_ref"
    return ds, enc


def _is_empty_location(url: str, storage_options: Mapping[str, Any] | None) -> bool:
    fs, path = ledger.filesystem(url, storage_options)
    try:
        return not fs.ls(path, detail=False, refresh=True)
    except FileNotFoundError:
        return True


def _spec_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def create_cube(spec: CubeSpec, *, overwrite: bool = False) -> None:
    """Write the cube's template (metadata and coordinates only) exactly once.

    Idempotent: if the store already holds a finished cube with the same :attr:`CubeSpec.spec_hash`,
    nothing is written; an interrupted creation (same hash, state ``"creating"``) is redone. Root
    attributes are marked ``"ready"`` and the metadata is consolidated (root and every group) last.

    Parameters
    ----------
    spec:
        The cube to create.
    overwrite:
        Delete whatever is at ``spec.url`` (cube *and* ledger) and create afresh.

    Raises
    ------
    SpecMismatchError
        If ``spec.url`` holds a cube made from a different spec, another Zarr store, or other files,
        and ``overwrite`` is False. The message lists the differing spec fields.

    Warning
    -------
    Call it from the driver only, before any :func:`write_window`; it is not safe to run two
    creations of different specs at once on one URL.
    """
    url, so = spec.url, spec.storage_options
    store = open_store(url, so)
    attrs = _root_attrs(store)
    if overwrite and not _is_empty_location(url, so):
        fs, path = ledger.filesystem(url, so)
        if hasattr(fs, "split_path") and not fs.split_path(path)[1]:
            raise CubeError(f"refusing to overwrite {url}: that is a whole bucket; put the cube under a prefix, "
                            "e.g. gs://bucket/runs/name.zarr")
        fs.rm(path, recursive=True)
        store, attrs = open_store(url, so), None
    info = None if attrs is None else attrs.get(ROOT_ATTR)
    if attrs is None and not _is_empty_location(url, so):
        raise SpecMismatchError(f"{url} is not empty and holds no Zarr cube; use a new URL, or overwrite=True "
                                "(--overwrite) to delete its contents")
    if attrs is not None and info is None:
        raise SpecMismatchError(f"{url} holds a Zarr store that is not a copgen cube; use a new URL, or "
                                "overwrite=True (--overwrite) to replace it")
    if info is not None and info.get("spec_hash") != spec.spec_hash:
        diff = _spec_diff(info.get("spec", {}), spec.to_json())
        raise SpecMismatchError(
            f"the cube at {url} was created from a different spec (spec_hash {str(info.get('spec_hash'))[:12]}... "
            f"!= {spec.spec_hash[:12]}...; fields differ: {diff}). Write to a new URL, or pass overwrite=True "
            "(--overwrite) to delete the existing cube and its ledger."
        )
    if info is not None and info.get("state") == "ready":
        return
    marker = {"format_version": spec.to_json()["format_version"], "spec_hash": spec.spec_hash, "spec": spec.to_json()}
    creating = {ROOT_ATTR: {**marker, "state": "creating"}}
    if attrs is None:
        zarr.open_group(store, mode="w", zarr_format=3, attributes=dict(creating))
    else:
        zarr.open_group(store, mode="r+", zarr_format=3).attrs.update(creating)
    for group in spec.groups:
        ds, enc = _template(spec, group)
        ds.to_zarr(store, group=group.path, mode="w", compute=False, zarr_format=3, consolidated=False,
                   encoding=enc)
        _quiet_consolidate(store, group.path)
    root = zarr.open_group(store, mode="r+", zarr_format=3)
    root.attrs[ROOT_ATTR] = {**marker, "state": "ready"}
    _quiet_consolidate(store)


def create_or_resume(spec: CubeSpec) -> CubeSpec:
    """:func:`create_cube`, resuming a cube the same job started through another STAC API URL or output path.

    The local STAC API listens on a new port at every start, so a job rerun after a crash reaches
    the same catalog at another URL, and its spec (which records the job's config) differs from the
    stored one in ``stac_url`` alone. When the stored spec's :attr:`CubeSpec.content_hash` equals
    ``spec``'s (the same windows, times, modalities and job settings, only ``stac_url``/``output``
    differ), the cube is resumed: the stored spec is returned, and every write must use it, so the
    cube keeps the provenance it was started with and the rerun writes the same bytes.

    Returns
    -------
    CubeSpec
        ``spec`` for a new or identical cube; the stored spec for a resumed one.

    Raises
    ------
    SpecMismatchError
        If ``spec.url`` holds a cube with other content (the message lists the differing fields).
    CubeError
        As :func:`create_cube`.
    """
    try:
        create_cube(spec)
        return spec
    except SpecMismatchError:
        attrs = _root_attrs(open_store(spec.url, spec.storage_options, read_only=True))
        info = (attrs or {}).get(ROOT_ATTR)
        if not isinstance(info, dict) or "spec" not in info:
            raise
        stored = CubeSpec.from_json(info["spec"], spec.url, spec.storage_options)
        if stored.content_hash != spec.content_hash:
            raise
    create_cube(stored)  # finishes an interrupted creation of the stored spec; else a no-op
    return stored


# -- region writes ----------------------------------------------------------------------------------


def validate_region(
    key: WindowKey | str,
    variable: str,
    region: Sequence[slice],
    shape: Sequence[int],
    chunks: Sequence[int],
    shards: Sequence[int] | None = None,
    dims: Sequence[str] | None = None,
) -> None:
    """Check that a region write covers whole write units only (shards, or chunks when unsharded).

    Every region boundary must fall on the unit grid (or the array's edge). A region that starts or
    ends inside a shard would read-modify-write an object that another window's writer may be
    writing at the same time, and one of them would lose data.

    Parameters
    ----------
    key:
        Window key, for the message.
    variable:
        Variable path, for the message.
    region:
        One ``slice(start, stop)`` per array dimension, in array indices.
    shape, chunks, shards, dims:
        The target array's metadata (``zarr.Array.shape/.chunks/.shards/.metadata.dimension_names``).

    Raises
    ------
    AlignmentError
        Naming the window, the variable, the offending offsets per dimension and the fix.
    """
    unit = tuple(shards) if shards is not None else tuple(chunks)
    names = list(dims) if dims is not None else [f"dim{i}" for i in range(len(shape))]
    if len(region) != len(shape):
        raise AlignmentError(f"window {key} variable {variable!r}: region has {len(region)} dimensions, the array "
                             f"{len(shape)} ({names})")
    bad = []
    for name, sl, n, u in zip(names, region, shape, unit, strict=True):
        start, stop = sl.start or 0, n if sl.stop is None else sl.stop
        if start % u or (stop % u and stop != n) or not start < stop <= n:
            bad.append(f"{name}: [{start}, {stop}) vs write unit {u} (size {n})")
    if bad:
        raise AlignmentError(
            f"window {key} variable {variable!r}: region is not aligned with the cube's "
            f"{'shard' if shards is not None else 'chunk'} grid {unit}: {'; '.join(bad)}. A partial write would "
            "race with the neighbouring window's writer and lose data. The cube's template does not match this "
            "window's geometry: write with the CubeSpec that created the cube (load_spec(url)), or recreate the "
            "cube (new URL or --overwrite) with the current code."
        )


def _canonical_nan(x: np.ndarray) -> np.ndarray:
    """Replace every NaN by the one NaN bit pattern the fill value reads back as (for stable digests)."""
    return np.where(np.isnan(x), np.float32(np.nan), x).astype(np.float32) if x.dtype.kind == "f" else x


def _as_codes(name: str, key: WindowKey, a: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iub":
        ok = a.size == 0 or (a.min() >= 0 and a.max() <= 255)
    elif a.dtype.kind == "f":
        ok = bool(np.all(np.isfinite(a)) and np.all(a == np.round(a)) and (a.size == 0 or (a.min() >= 0 and a.max() <= 255)))
    else:
        ok = False
    if not ok:
        raise CubeError(f"window {key} modality {name!r}: categorical values must be integer class codes in "
                        f"[0, 255] (dtype {a.dtype}); map no-data to a code (e.g. 0 for LULC) before writing")
    return a.astype(np.uint8)


def content_digest(blocks: Mapping[str, np.ndarray]) -> str:
    """``"sha256:<hex>"`` over the written blocks: name, dtype, shape and C-order bytes, sorted by name."""
    h = hashlib.sha256()
    for name in sorted(blocks):
        a = np.ascontiguousarray(blocks[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def _prepare(spec: CubeSpec, key: WindowKey, arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[CubeGroup, np.ndarray]]:
    """Validate, crop to the owned block, cast and compute statistics: {variable: (group, block)} with no time axis."""
    window = spec.window(key)
    out: dict[str, tuple[CubeGroup, np.ndarray]] = {}
    for name, raw in arrays.items():
        try:
            mod = resolve(name)
        except KeyError as exc:
            raise CubeError(f"window {key}: {exc.args[0]}") from exc
        if mod.key not in spec.modalities:
            raise CubeError(f"window {key}: modality {mod.key!r} is not in the cube (it holds {list(spec.modalities)}); "
                            "drop it from arrays or create a cube that includes it")
        if mod.key in out:
            raise CubeError(f"window {key}: modality {mod.key!r} passed twice (as {name!r} and another alias)")
        group = spec.group(key.epsg, mod.key)
        n = int(round(window.footprint_m / mod.gsd_m))  # type: ignore[operator]
        want = (len(mod.channels), n, n) if spec.members is None else (spec.members, len(mod.channels), n, n)
        a = np.asarray(raw)
        if a.shape != want:
            layout = "(C, H, W)" if spec.members is None else "(member, C, H, W)"
            raise CubeError(f"window {key} modality {mod.key!r}: expected shape {want} {layout} on the window's "
                            f"native {mod.gsd_m:g} m grid, got {a.shape}")
        off = int(round(block_offset_m(window) / mod.gsd_m))  # type: ignore[operator]
        a = a[..., off:off + group.block_px, off:off + group.block_px]
        if is_categorical(mod):
            block = _as_codes(mod.key, key, a)
            out[mod.key] = (group, block)
            if spec.stats:
                codes = CLASS_CODES[mod.kind]
                freq = class_frequencies(block, codes)
                out[f"{mod.key}__freq"] = (group, freq)
                out[f"{mod.key}__mode"] = (group, class_mode(freq, codes)[None])
        else:
            block = _canonical_nan(a.astype(np.float32))
            out[mod.key] = (group, block)
            if spec.stats:
                for stat, value in continuous_stats(block).items():
                    out[f"{mod.key}__{stat}"] = (group, _canonical_nan(value))
    return out


def _provenance(spec: CubeSpec, key: WindowKey, time_index: int, provenance: Mapping[str, Any]) -> dict[str, Any]:
    fixed = {"window": str(key), "time": spec.time_value(time_index).isoformat(), "time_index": int(time_index)}
    clash = {k: provenance[k] for k in fixed if k in provenance and provenance[k] != fixed[k]}
    if clash:
        raise CubeError(f"window {key} t={time_index}: provenance fields {clash} contradict the write target {fixed}; "
                        "leave them out (write_window sets them)")
    merged = {**dict(provenance), **fixed}
    try:
        json.dumps(merged, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise CubeError(f"window {key} t={time_index}: provenance must be JSON-serialisable ({exc}); convert numpy "
                        "scalars and arrays to Python numbers and lists") from exc
    return merged


def _open_ready_root(spec: CubeSpec, *, read_only: bool) -> zarr.Group:
    store = open_store(spec.url, spec.storage_options, read_only=read_only)
    try:
        root = zarr.open_group(store, mode="r" if read_only else "r+", zarr_format=3)
    except FileNotFoundError:
        _cube_info(spec.url, None)  # raises "no cube"
        raise
    info = _cube_info(spec.url, dict(root.attrs))
    if info["spec_hash"] != spec.spec_hash:
        raise SpecMismatchError(
            f"the cube at {spec.url} was created from another spec (fields differ: "
            f"{_spec_diff(info.get('spec', {}), spec.to_json())}); write with load_spec({spec.url!r}) or the spec "
            "passed to create_cube"
        )
    return root


def _array(root: zarr.Group, path: str) -> zarr.Array:
    node = root.get(path)
    if not isinstance(node, zarr.Array):
        raise CubeError(f"the cube at {root.store} has no array {path!r}: its template is damaged or from other "
                        "code; recreate it (new URL or --overwrite)")
    return node


def _region(spec: CubeSpec, group: CubeGroup, key: WindowKey, time_index: int, ndim: int) -> tuple[slice, ...]:
    y0, x0 = group.block_origin_px(spec.window(key))
    bpx = group.block_px
    return (slice(time_index, time_index + 1), *([slice(None)] * (ndim - 3)),
            slice(y0, y0 + bpx), slice(x0, x0 + bpx))


def write_window(
    spec: CubeSpec,
    key: WindowKey,
    time_index: int,
    arrays: Mapping[str, np.ndarray],
    provenance: Mapping[str, Any],
) -> str:
    """Write one window at one time: a validated region write per variable, then its ledger record.

    Parameters
    ----------
    spec:
        The cube's spec (the one given to :func:`create_cube`, or :func:`load_spec`).
    key:
        A planned window.
    time_index:
        Index into ``spec.times``.
    arrays:
        Modality key (or alias) -> array on the window's native grid (192/96/32/64 px for 10/20/60/30 m):
        ``(member, C, H, W)`` for ensemble cubes, ``(C, H, W)`` for real data; physical units
        (S2 DN, S1 linear gamma0, DEM metres) or integer class codes. NaN marks no-data. Modalities
        left out stay unwritten (fill). With overlap only the window's centre block is stored.
    provenance:
        JSON-serialisable provenance (see :data:`PROVENANCE_FIELDS`); ``window``, ``time`` and
        ``time_index`` are filled in here.

    Returns
    -------
    str
        The content digest recorded in the ledger.

    Raises
    ------
    CubeError
        On an unplanned window, an out-of-range time, an unknown modality or a wrong shape/dtype,
        before anything is written.
    AlignmentError
        If a region does not match the template's chunk/shard grid, before anything is written.
    SpecMismatchError
        If the store holds a cube made from another spec.

    Warning
    -------
    Idempotent and restartable: rewriting the same inputs writes the same bytes, and the ledger
    record comes last, so a crash mid-window leaves it "not done" for the rerun. Statistics are
    computed from the members passed here only.
    """
    merged = _provenance(spec, key, time_index, provenance)
    blocks = _prepare(spec, key, arrays)
    root = _open_ready_root(spec, read_only=False)
    plan = []
    for var, (group, block) in blocks.items():
        arr = _array(root, f"{group.path}/{var}")
        region = _region(spec, group, key, time_index, arr.ndim)
        dims = getattr(arr.metadata, "dimension_names", None)
        validate_region(key, f"{group.path}/{var}", region, arr.shape, arr.chunks, arr.shards,
                        None if dims is None else [str(d) for d in dims])
        plan.append((arr, region, block))
    for arr, region, block in plan:
        arr[region] = block[None]
    digest = content_digest({var: block for var, (_, block) in blocks.items()})
    ledger.mark_done(spec.url, key, time_index, digest=digest, provenance=merged, variables=blocks,
                     storage_options=spec.storage_options)
    return digest


# -- reads ------------------------------------------------------------------------------------------


def _variable(spec: CubeSpec, name: str) -> tuple[Modality, str]:
    base, sep, stat = name.partition("__")
    try:
        mod = resolve(base)
    except KeyError as exc:
        raise CubeError(exc.args[0]) from exc
    var = f"{mod.key}{sep}{stat}"
    if mod.key not in spec.modalities or var not in variable_names(spec, mod.key):
        raise CubeError(f"variable {var!r} is not in the cube at {spec.url}; it holds "
                        f"{[v for k in spec.modalities for v in variable_names(spec, k)]}")
    return mod, var


def _read_block(root: zarr.Group, spec: CubeSpec, key: WindowKey, mod: Modality, var: str, time_index: int) -> np.ndarray:
    group = spec.group(key.epsg, mod.key)
    arr = _array(root, f"{group.path}/{var}")
    return np.asarray(arr[_region(spec, group, key, time_index, arr.ndim)])[0]


def read_window(
    url: str,
    key: WindowKey,
    modality: str,
    time_index: int,
    storage_options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Read the block a window owns for one variable at one time (tests, quicklooks).

    Parameters
    ----------
    url, storage_options:
        The cube.
    key, time_index:
        Window and time slot.
    modality:
        Modality key or alias, or a statistic ``"<key>__mean"``, ``"__std"``, ``"__p05"``, ``"__p50"``,
        ``"__p95"``, ``"__freq"``, ``"__mode"``.

    Returns
    -------
    np.ndarray
        ``(member, C, h, w)`` or ``(C, h, w)`` (real data and statistics) or ``(class, h, w)``
        (``__freq``); ``h = w = stride_m / gsd``. Unwritten pixels are NaN (float) or 255 (uint8).
    """
    spec = load_spec(url, storage_options)
    mod, var = _variable(spec, modality)
    spec.time_value(time_index)
    spec.window(key)
    return _read_block(_open_ready_root(spec, read_only=True), spec, key, mod, var, time_index)


def verify_window(spec: CubeSpec, key: WindowKey, time_index: int) -> bool:
    """True when the window is done and its stored bytes still hash to the digest in its ledger record."""
    record = ledger.read_record(spec.url, key, time_index, spec.storage_options)
    if record is None:
        return False
    root = _open_ready_root(spec, read_only=True)
    blocks = {}
    for var in record["variables"]:
        mod, name = _variable(spec, var)
        blocks[name] = _read_block(root, spec, key, mod, name, time_index)
    return content_digest(blocks) == record["digest"]


# -- finalisation -----------------------------------------------------------------------------------


def finalize_cube(spec: CubeSpec) -> tuple[list[ledger.LedgerKey], list[ledger.LedgerKey]]:
    """Publish the ledger's provenance into each group's ``provenance(window, time)`` table.

    One JSON string per done (window, time) (provenance, digest and variables of its ledger record),
    ``""`` where not done. A region write of an array that is in the template, so the consolidated
    metadata stays valid. Safe to run again after more windows complete.

    Returns
    -------
    (done, missing)
        As :func:`transforms.ledger.completeness` over ``spec.planned()``.
    """
    records = ledger.done_records(spec.url, spec.storage_options)
    root = _open_ready_root(spec, read_only=False)
    for group in spec.groups:
        table = np.full((len(group.windows), len(spec.times)), "", dtype=object)
        for i, key in enumerate(group.windows):
            for t in range(len(spec.times)):
                rec = records.get((key, t))
                if rec is not None:
                    row = {**rec["provenance"], "digest": rec["digest"], "variables": rec["variables"]}
                    table[i, t] = json.dumps(row, sort_keys=True, separators=(",", ":"))
        _array(root, f"{group.path}/{PROVENANCE_VAR}")[...] = table
    return ledger.completeness(spec.url, spec.planned(), spec.storage_options)
