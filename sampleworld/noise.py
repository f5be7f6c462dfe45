"""Seeded lattice noise that can be evaluated at any point.

Every continuous field of the world (elevation, valleys, forests, clouds, haze) is a sum of value-noise
octaves evaluated at metric coordinates of a region's local frame. Because the noise is a pure function
of position and key, neighbouring scenes, the 1 arc-second DEM and the 10 m UTM grids all sample the
same surface: there are no seams and no tiles to stitch.
"""

from __future__ import annotations

import numpy as np

from sampleworld.keys import stable_key

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0xFF51AFD7ED558CCD)
_M4 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_S11 = np.uint64(11)


def lattice_values(ix: np.ndarray, iy: np.ndarray, key: np.uint64) -> np.ndarray:
    """Pseudo-random values in [-1, 1) at integer lattice points (float64, shape of ``ix``)."""
    h = (ix.astype(np.uint64) * _M1) ^ (iy.astype(np.uint64) * _M2) ^ key
    h ^= h >> _S33
    h *= _M3
    h ^= h >> _S33
    h *= _M4
    h ^= h >> _S33
    return (h >> _S11).astype(np.float64) * 2.0**-52 - 1.0


def value_noise(x: np.ndarray, y: np.ndarray, key: int) -> np.ndarray:
    """Smooth (quintic) value noise with unit lattice spacing.

    Parameters
    ----------
    x, y:
        float64 arrays of the same shape, in lattice units.
    key:
        64-bit key selecting the lattice values.

    Returns
    -------
    numpy.ndarray
        float64 in [-1, 1], shape of ``x``; C2-continuous in space.
    """
    k = np.uint64(key)
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = x - x0
    fy = y - y0
    ix = x0.astype(np.int64)
    iy = y0.astype(np.int64)
    u = fx * fx * fx * (fx * (fx * 6.0 - 15.0) + 10.0)
    v = fy * fy * fy * (fy * (fy * 6.0 - 15.0) + 10.0)
    a = lattice_values(ix, iy, k)
    b = lattice_values(ix + 1, iy, k)
    c = lattice_values(ix, iy + 1, k)
    d = lattice_values(ix + 1, iy + 1, k)
    top = a + (b - a) * u
    bottom = c + (d - c) * u
    return top + (bottom - top) * v


def fbm(
    x_m: np.ndarray,
    y_m: np.ndarray,
    key: int,
    wavelength_m: float,
    octaves: int,
    *,
    gain: float = 0.5,
    ridged: bool = False,
) -> np.ndarray:
    """Fractal (fBm) noise: ``octaves`` value-noise layers, each half the wavelength of the last.

    Each octave is rotated and shifted by angles and offsets derived from ``key`` so the lattice
    never shows as a grid.

    Parameters
    ----------
    x_m, y_m:
        float64 coordinates in metres (a region's local frame: x east, y north), same shape.
    key:
        Field key (see :func:`sampleworld.keys.stable_key`).
    wavelength_m:
        Lattice spacing of the first (coarsest) octave, in metres.
    octaves:
        Number of layers (>= 1).
    gain:
        Amplitude ratio between successive octaves.
    ridged:
        Use ridged layers ``1 - 2|n|`` (sharp crests, for alpine relief).

    Returns
    -------
    numpy.ndarray
        float64, shape of ``x_m``, normalised to [-1, 1] (values rarely exceed +-0.7).
    """
    if octaves < 1:
        raise ValueError(f"octaves must be >= 1, got {octaves}")
    total = np.zeros(np.shape(x_m), dtype=np.float64)
    amp = 1.0
    norm = 0.0
    for octave in range(octaves):
        okey = stable_key(key, octave)
        angle = (okey & 0xFFFF) / 65536.0 * 2.0 * np.pi
        shift_x = ((okey >> 16) & 0xFFFF) / 65536.0 * 997.0
        shift_y = ((okey >> 32) & 0xFFFF) / 65536.0 * 991.0
        scale = 1.0 / (wavelength_m / 2.0**octave)
        ca, sa = np.cos(angle) * scale, np.sin(angle) * scale
        u = x_m * ca - y_m * sa + shift_x
        v = x_m * sa + y_m * ca + shift_y
        n = value_noise(u, v, okey)
        if ridged:
            n = 1.0 - 2.0 * np.abs(n)
        total += amp * n
        norm += amp
        amp *= gain
    return total / norm


def smoothstep(edge0: float | np.ndarray, edge1: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 (``x <= edge0``) to 1 (``x >= edge1``), float64."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
