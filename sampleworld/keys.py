"""Stable keys for every random draw of the sample world.

Randomness never depends on call order: each field, scene, date or band draws from its own seed,
hashed (BLAKE2b) from the world seed and a tuple of names, e.g. ``(seed, "alps", "valley")`` or
``(seed, "main", "2022-06-21", "S2L2A", "B04")``. Regenerating one scene therefore gives the same
bytes whether it runs alone, first, last or in another process.
"""

from __future__ import annotations

import hashlib

import numpy as np

KeyPart = str | int


def stable_key(*parts: KeyPart) -> int:
    """A 64-bit unsigned integer hashed from ``parts`` (strings and integers, kept distinct).

    Parameters
    ----------
    *parts:
        Strings or integers; ``3`` and ``"3"`` give different keys.

    Returns
    -------
    int
        In ``[0, 2**64)``.

    Raises
    ------
    TypeError
        For a part that is neither ``str`` nor ``int`` (floats have no stable text; round them first).
    """
    text = []
    for p in parts:
        if isinstance(p, bool) or not isinstance(p, (str, int, np.integer)):
            raise TypeError(f"key parts must be str or int, got {type(p).__name__} {p!r}")
        text.append(f"s{p!r}" if isinstance(p, str) else f"i{int(p)}")
    digest = hashlib.blake2b("/".join(text).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def rng_for(*parts: KeyPart) -> np.random.Generator:
    """A NumPy generator (PCG64) seeded from :func:`stable_key` of ``parts``."""
    return np.random.Generator(np.random.PCG64(stable_key(*parts)))


def unit_hash(*parts: KeyPart) -> float:
    """A deterministic float in ``[0, 1)`` from ``parts`` (for single decisions such as a town's size)."""
    return (stable_key(*parts) >> 11) * 2.0**-53
