"""Quicklook renderers map physical values to the colours a person expects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from transforms import quicklook as ql


def test_rgb_composite_orders_and_stretches() -> None:
    bands = np.zeros((3, 4, 4))
    bands[0] = 3000  # red saturates
    bands[2, 0, 0] = np.nan
    img = ql.rgb_composite(bands)
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8
    assert (img[..., 0] == 255).all() and (img[..., 1] == 0).all() and img[0, 0, 2] == 0
    shifted = ql.rgb_composite(bands + 1000, offset_dn=1000)
    assert np.array_equal(shifted, img)


def test_categorical_uses_official_colours_and_flags_unknown() -> None:
    codes = np.array([[1, 5], [7, 3]])
    img = ql.categorical(codes, ql.LULC_COLOURS)
    assert tuple(img[0, 0]) == (26, 91, 171)  # water
    assert tuple(img[0, 1]) == (255, 219, 92)  # crops
    assert tuple(img[1, 0]) == (237, 2, 42)  # built area
    assert tuple(img[1, 1]) == (255, 0, 255)  # code 3 is not an Esri class


def test_hillshade_lights_slopes_facing_the_sun() -> None:
    x = np.arange(64, dtype=float)
    facing_west = np.tile(x * 30, (64, 1))  # elevation rises eastward: the slope faces west, towards 315 deg
    facing_east = np.tile(-x * 30, (64, 1))
    assert ql.hillshade(facing_west).mean() > ql.hillshade(facing_east).mean()


def test_s1_false_colour_and_colormap_and_grid(tmp_path: Path) -> None:
    vv_vh = np.stack([np.full((8, 8), 0.1), np.full((8, 8), 0.01)])
    img = ql.s1_false_colour(vv_vh)
    assert img.shape == (8, 8, 3) and img[..., 0].mean() > img[..., 1].mean()
    ramp = ql.colormap(np.linspace(0, 1, 64).reshape(8, 8), 0, 1)
    assert tuple(ramp[0, 0]) == (68, 1, 84) and tuple(ramp[-1, -1]) == (253, 231, 37)
    sheet = ql.grid([img, ramp, ql.upscale(img, 8)], cols=2, pad=2)
    assert sheet.shape == (2 * 8 + 3 * 2, 2 * 8 + 3 * 2, 3)
    out = ql.save_png(sheet, tmp_path / "a" / "sheet.png")
    assert np.array_equal(np.asarray(Image.open(out)), sheet)


def test_nodata_renders_black_and_clouds_white() -> None:
    dem = np.full((16, 16), 500.0)
    dem[:4] = np.nan
    img = ql.hillshade(dem)
    assert (img[:4] == 0).all() and (img[4:] > 0).any()
    cloud = ql.categorical(np.array([[0, 1], [2, 3]]), ql.CLOUD_COLOURS)
    assert tuple(cloud[0, 1]) == (255, 255, 255)
