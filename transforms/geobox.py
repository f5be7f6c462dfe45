"""GeoBox: the unit of spatial truth (CRS + affine transform + shape) that travels with every array."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

Affine6 = tuple[float, float, float, float, float, float]
"""Affine coefficients in rasterio/GDAL order (a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f."""


@dataclass(frozen=True)
class GeoBox:
    """A north-up pixel grid.

    Attributes
    ----------
    epsg:
        EPSG code of the CRS (e.g. 32632 for UTM 32N, 4326 for geographic).
    transform:
        Affine coefficients (a, b, c, d, e, f) mapping pixel (col, row) corners to CRS coordinates.
    shape:
        (height, width) in pixels.
    """

    epsg: int
    transform: Affine6
    shape: tuple[int, int]

    @classmethod
    def from_origin(cls, epsg: int, x0: float, y0: float, res: float, height: int, width: int) -> GeoBox:
        """Grid whose upper-left corner is (x0, y0) with square pixels of ``res`` CRS units."""
        return cls(epsg, (float(res), 0.0, float(x0), 0.0, -float(res), float(y0)), (int(height), int(width)))

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units (metres for UTM, degrees for EPSG:4326)."""
        return float(self.transform[0])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        a, _, c, _, e, f = self.transform
        h, w = self.shape
        return (c, f + e * h, c + a * w, f)

    @cached_property
    def x_coords(self) -> np.ndarray:
        """Pixel-centre x coordinates, shape (width,), float64."""
        a, _, c, *_ = self.transform
        return c + a * (np.arange(self.shape[1]) + 0.5)

    @cached_property
    def y_coords(self) -> np.ndarray:
        """Pixel-centre y coordinates, shape (height,), float64 (decreasing for north-up)."""
        *_, e, f = self.transform
        return f + e * (np.arange(self.shape[0]) + 0.5)

    def to_dict(self) -> dict[str, object]:
        return {"epsg": self.epsg, "transform": list(self.transform), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> GeoBox:
        t = tuple(float(v) for v in d["transform"])  # type: ignore[attr-defined]
        s = tuple(int(v) for v in d["shape"])  # type: ignore[attr-defined]
        return cls(int(d["epsg"]), t, s)  # type: ignore[arg-type,call-overload]

    def rasterio_transform(self):  # noqa: ANN201 - rasterio's Affine
        """The transform as an ``affine.Affine`` (rasterio installed)."""
        from affine import Affine

        return Affine(*self.transform)
