"""Quicklooks of a whole cube: one set of PNGs per (group, modality, time).

For generated cubes: the ensemble mean (or modal class), a sheet of members, and a spread map (std of
the first band, or 1 - modal frequency for classes). For real-data cubes: the tile mosaic of each time.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from copgen_core.modalities import BY_KEY, Kind
from transforms import quicklook as ql

NO_DATA = 255  # the cubes' uint8 fill (transforms.cube_spec.UINT8_FILL)


def _render(kind: Kind, key: str, data: np.ndarray, gsd_m: float) -> np.ndarray:
    """(band, y, x) physical values -> RGB."""
    if kind is Kind.S2:
        channels = BY_KEY[key].channels
        if channels[:3] == ("B04", "B03", "B02"):
            return ql.rgb_composite(data[:3])
        if "B11" in channels:  # 20 m: SWIR / NIR / red-edge false colour
            idx = [channels.index(b) for b in ("B11", "B8A", "B05")]
            return ql.rgb_composite(data[idx], max_dn=5000)
        return ql.colormap(data[0])
    if kind is Kind.S1:
        return ql.s1_false_colour(data)
    if kind is Kind.DEM:
        return ql.hillshade(data[0], gsd_m=gsd_m)
    if kind is Kind.LULC:
        return ql.categorical(data[0], {**ql.LULC_COLOURS, NO_DATA: (0, 0, 0)})
    if kind is Kind.CLOUD:
        return ql.categorical(data[0], {**ql.CLOUD_COLOURS, NO_DATA: (0, 0, 0)})
    raise ValueError(f"no quicklook for {key}")


def _groups(url: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    import zarr

    from transforms.cube import open_store

    root = zarr.open_group(open_store(url, storage_options, read_only=True), mode="r")
    return [f"{z}/{r}" for z, zg in sorted(root.groups()) for r, _ in sorted(zg.groups())]


def render_cube(url: str, out_dir: Path, *, storage_options: Mapping[str, Any] | None = None,
                max_members: int = 8, size: int = 384) -> list[Path]:
    """Write PNG quicklooks of every modality in every group of the cube at ``url``; returns the paths.

    Raises
    ------
    FileNotFoundError
        If ``url`` holds no copgen cube.

    Notes
    -----
    Seamless canvases (``copgen seamless``: one time, no ``time`` dimension) render as one time.
    """
    import xarray as xr

    from transforms.cube import open_store

    try:
        paths = _groups(url, storage_options)
    except Exception as exc:
        raise FileNotFoundError(f"{url} holds no readable copgen cube ({type(exc).__name__}: {exc}); "
                                "pass the --output of a generate or preprocess run") from exc
    written: list[Path] = []
    for gpath in paths:
        ds = xr.open_zarr(open_store(url, storage_options, read_only=True), group=gpath, consolidated=False)
        gsd = float(ds.attrs.get("gsd_m", 10.0))
        for key in [k for k in ds.data_vars if k in BY_KEY]:
            kind = BY_KEY[key].kind
            var = ds[key] if "time" in ds[key].dims else ds[key].expand_dims("time")  # seamless canvases
            stem = f"{gpath.replace('/', '_')}_{key}"
            for ti in range(var.sizes["time"]):
                arr = var.isel(time=ti).values
                tag = f"{stem}_t{ti}"
                if "member" not in var.dims:
                    if np.isnan(arr.astype(float)).all():
                        continue
                    written.append(ql.save_png(ql.upscale(_render(kind, key, arr, gsd), size),
                                               out_dir / f"{tag}.png"))
                    continue
                if kind in (Kind.LULC, Kind.CLOUD):
                    members = arr.astype(np.int64)
                    centre = (ds[f"{key}__mode"].isel(time=ti).values if f"{key}__mode" in ds.data_vars else members[0])
                    freq = ds[f"{key}__freq"].isel(time=ti).values if f"{key}__freq" in ds.data_vars else None
                    spread = 1.0 - np.nanmax(freq, axis=0) if freq is not None else None
                else:
                    members = arr
                    with warnings.catch_warnings():  # canvases hold NaN outside the windows
                        warnings.simplefilter("ignore", RuntimeWarning)
                        centre = np.nanmean(arr, axis=0) if np.isfinite(arr).any() else arr[0]
                        spread = np.nanstd(arr[:, 0], axis=0)
                written.append(ql.save_png(ql.upscale(_render(kind, key, centre, gsd), size),
                                           out_dir / f"{tag}_mean.png"))
                sheet = [ql.upscale(_render(kind, key, members[m], gsd), size // 2)
                         for m in range(min(max_members, members.shape[0]))]
                written.append(ql.save_png(ql.grid(sheet, cols=4), out_dir / f"{tag}_members.png"))
                if spread is not None:
                    written.append(ql.save_png(ql.upscale(ql.colormap(spread), size), out_dir / f"{tag}_spread.png"))
    return written
