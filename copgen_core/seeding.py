"""Deterministic per-sample randomness from stable keys.

Every random draw in generation belongs to a sample identified by ``(run seed, key, member)`` and,
where it matters, a modality and a purpose (``stream``). :func:`derive_seed` hashes a canonical string
of those with BLAKE2b into a 64-bit seed, and each sample draws from its own ``torch.Generator``
seeded with it. So a sample's noise does not depend on the batch size, the order of the batch, the
worker that runs it or anything else drawn before it.

Keys are small immutable values: strings, integers, or (nested) tuples of those, e.g. a tile window
``("32632", 3, 7)``. Integers and strings are kept apart (``3`` and ``"3"`` are different keys).
Noise is always drawn on the CPU and then moved, so it is the same on every device.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Sequence

import torch
from torch import Tensor

SampleKey = str | int | tuple["SampleKey", ...]
"""A sample key: a string, an integer, or a tuple of keys."""

_SEED_MASK = (1 << 63) - 1


def canonical_key(key: object) -> str:
    """Canonical text of a key: ``s"..."`` for strings, ``i<n>`` for integers, ``(a,b)`` for tuples.

    Raises
    ------
    TypeError
        For anything but str, int (incl. numpy integers; not bool) and tuples/lists of those.
        Floats are refused: their text is not a stable identity; round them to integers or strings.
    """
    if isinstance(key, str):
        return "s" + repr(key)
    if isinstance(key, (tuple, list)):
        return "(" + ",".join(canonical_key(k) for k in key) + ")"
    if isinstance(key, bool):
        raise TypeError(f"sample key parts must be str, int or tuples of those; got bool {key!r}")
    try:
        return f"i{operator.index(key)}"  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"sample key parts must be str, int or tuples of those; got {type(key).__name__} {key!r}. "
            "Use integer indices or strings (e.g. a tile id) as keys."
        ) from None


def derive_seed(
    run_seed: int,
    key: SampleKey,
    member: int = 0,
    modality: str | None = None,
    stream: str = "noise",
) -> int:
    """A 63-bit seed for one sample's draws.

    Parameters
    ----------
    run_seed:
        The run's seed (any integer).
    key:
        The sample's stable key (see :func:`canonical_key`).
    member:
        Ensemble member index; ``-1`` (or any fixed value) for draws shared by all members.
    modality:
        Modality key the draw is for, or None.
    stream:
        What the draw is for (``"noise"``, ``"encode"``, ...), so different uses never share numbers.

    Returns
    -------
    int
        In ``[0, 2**63)``, usable with ``torch.Generator.manual_seed``.

    Raises
    ------
    TypeError
        If ``key`` is not a valid sample key, or ``run_seed``/``member`` are not integers.
    """
    text = "|".join(
        (
            "copgen-seed-v1",
            canonical_key(run_seed),
            canonical_key(key),
            canonical_key(member),
            "" if modality is None else canonical_key(modality),
            canonical_key(stream),
        )
    )
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _SEED_MASK


def generator_for(
    run_seed: int,
    key: SampleKey,
    member: int = 0,
    modality: str | None = None,
    stream: str = "noise",
) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of the same arguments."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(derive_seed(run_seed, key, member, modality, stream))
    return gen


def sample_noise(
    shape: Sequence[int],
    run_seed: int,
    keys: Sequence[SampleKey],
    members: Sequence[int],
    modality: str | None = None,
    stream: str = "noise",
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise for a batch, each row from its own generator.

    Parameters
    ----------
    shape:
        Per-sample shape, e.g. a latent's (C, H, W).
    keys, members:
        Per-row sample key and member index (same length B).

    Returns
    -------
    Tensor
        (B, *shape) on ``device`` in ``dtype``; row i equals
        ``torch.randn(shape, generator=generator_for(run_seed, keys[i], members[i], modality, stream))``
        whatever the batch around it.

    Raises
    ------
    ValueError
        If ``keys`` and ``members`` differ in length.
    """
    if len(keys) != len(members):
        raise ValueError(f"keys and members must have the same length, got {len(keys)} and {len(members)}")
    rows = [
        torch.randn(
            tuple(shape), generator=generator_for(run_seed, k, m, modality, stream), dtype=torch.float32
        )
        for k, m in zip(keys, members, strict=True)
    ]
    if not rows:
        return torch.empty((0, *shape), device=device, dtype=dtype)
    return torch.stack(rows).to(device=device, dtype=dtype)
