"""Training samples streamed from a cube written by ``copgen preprocess``, and a VAE latent cache.

A sample is one (window, time) of the cube: per image modality its block in the VAE input space
(:func:`copgen_core.normalize.normalize`, strict mode), plus the window centre's location and the
time slot's date as the two scalar modalities. Nothing is loaded up front but the ledger: the
sample index comes from the done records, and each ``__getitem__`` reads one block per modality.

Pieces
------
:func:`index_samples`
    The (window, time) pairs of one split that hold every required modality completely, and a count
    of the ones skipped, by reason (from the ledger's ``missing`` and ``valid_fraction``).
:class:`CubeDataset`
    Map-style dataset over that index. Items are addressed by ``(index, epoch)`` so the random
    horizontal flip is a function of the sample and the epoch, never of call order.
:class:`ResumableSampler`
    Infinite, deterministic batches of ``(index, epoch)``: a fresh permutation per epoch from the
    seed, sharded over DDP ranks, startable at any micro-batch (exact resume without replaying data).
    ``DataLoader(dataset, batch_sampler=sampler, num_workers=k)`` spreads whole batches over its
    ``k`` workers, so workers never read the same sample.
:func:`spread_images`
    Evenly spaced images of one modality (what a block PCA or a synthesis refit is fitted on).
:func:`encode_latents`
    One pass of the VAEs over a dataset, storing posterior moments per (window, time, modality) in a
    ``.safetensors`` file that a :class:`CubeDataset` can serve instead of pixels.

The split is by window: ``blake2b(split_seed, window key)`` decides, so every time slot of a window
lands in the same split and evaluation only sees windows never trained on.

Warning
-------
Training needs whole 1920 m windows: cubes written with overlap store only each window's centre
block and are refused (preprocess the training cube with ``--overlap-m 0``). The latent cache is
built in memory before it is written (about 245 KB per sample for all ten image modalities in
float32); split very large datasets into several cubes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import zarr
from safetensors import safe_open
from safetensors.torch import save_file

from copgen_core.modalities import Kind, Modality, canonical
from copgen_core.normalize import normalize
from copgen_core.seeding import derive_seed
from copgen_core.vae import KLVAE
from transforms import ledger
from transforms.cube import load_spec, open_store
from transforms.cube_spec import UINT8_FILL, CubeSpec, is_categorical
from transforms.windows import WindowKey

Split = Literal["train", "val", "all"]
SPLITS: tuple[str, ...] = ("train", "val", "all")
CACHE_FORMAT = "copgen-latent-cache"
CACHE_VERSION = "1"


class DatasetError(ValueError):
    """A dataset cannot be built or read as asked; the message says why and what to do."""


@dataclass(frozen=True, order=True)
class SampleRef:
    """One training sample: a window of the cube at one time slot."""

    key: WindowKey
    time_index: int

    @property
    def name(self) -> str:
        """Stable sample name ``<epsg>_<row>_<col>__t<time_index>`` (the ledger's record name)."""
        return f"{self.key}__t{self.time_index}"


def split_of(key: WindowKey, val_fraction: float, split_seed: int = 42) -> Literal["train", "val"]:
    """The split a window belongs to: ``val`` when its hash, as a fraction of 2**64, is below ``val_fraction``."""
    digest = hashlib.blake2b(f"copgen-split|{split_seed}|{key}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "little") / 2.0**64 < val_fraction else "train"


def _image_modalities(modalities: Sequence[str]) -> tuple[Modality, ...]:
    return tuple(m for m in canonical(modalities) if m.is_image)


def index_samples(
    spec: CubeSpec,
    records: Mapping[tuple[WindowKey, int], Mapping[str, Any]],
    modalities: Sequence[str],
    *,
    split: Split = "train",
    val_fraction: float = 0.1,
    split_seed: int = 42,
) -> tuple[tuple[SampleRef, ...], dict[str, int]]:
    """The usable samples of one split, and how many were skipped for which reason.

    Parameters
    ----------
    spec:
        The cube's spec (:func:`transforms.cube.load_spec`).
    records:
        Its done records (:func:`transforms.ledger.done_records`).
    modalities:
        Required modalities (image ones are checked; scalars are always available).
    split, val_fraction, split_seed:
        Which windows to keep (see :func:`split_of`); ``"all"`` keeps both splits.

    Returns
    -------
    refs, skipped
        Sorted sample refs; skip counts keyed ``"not written"``, ``"missing <key>"`` or
        ``"incomplete <key>"`` (valid fraction below 1), counted once per sample (first reason).

    Raises
    ------
    DatasetError
        If a required image modality is not in the cube, or on an unknown split or bad fraction.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {list(SPLITS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    images = _image_modalities(modalities)
    absent = [m.key for m in images if m.key not in spec.modalities]
    if absent:
        raise DatasetError(f"the cube at {spec.url} has no {absent}; it holds {list(spec.modalities)}. "
                           "Train on those, or preprocess a cube that includes them.")
    refs: list[SampleRef] = []
    skipped: Counter[str] = Counter()
    for key, t in spec.planned():
        if split != "all" and split_of(key, val_fraction, split_seed) != split:
            continue
        rec = records.get((key, t))
        reason = _skip_reason(rec, images)
        if reason:
            skipped[reason] += 1
        else:
            refs.append(SampleRef(key, t))
    return tuple(sorted(refs)), dict(sorted(skipped.items()))


def _skip_reason(rec: Mapping[str, Any] | None, images: Sequence[Modality]) -> str:
    if rec is None:
        return "not written"
    prov = rec.get("provenance", {})
    written = set(rec.get("variables", ()))
    missing = set(prov.get("missing", ()))
    valid = prov.get("valid_fraction", {})
    for m in images:
        if m.key in missing or m.key not in written:
            return f"missing {m.key}"
        if m.key in valid and float(valid[m.key]) < 1.0:
            return f"incomplete {m.key}"
    return ""


def _date_vector(when: datetime) -> np.ndarray:
    return np.asarray(normalize("mean_timestamps", np.array([when.year, when.month, when.day])).values)


def _latlon_vector(lat: float, lon: float) -> np.ndarray:
    return np.asarray(normalize("3d_cartesian_lat_lon", np.array([lat, lon])).values)


class CubeDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """Training samples of one split of a cube, read block by block.

    Parameters
    ----------
    url, storage_options:
        The cube (local path or ``gs://...``) and its fsspec options.
    modalities:
        Modality keys or aliases the samples hold (image ones are required, scalars computed).
    split, val_fraction, split_seed:
        Which windows (see :func:`split_of`).
    flip:
        Random horizontal flip of every image modality of a sample together, decided by
        ``(seed, sample, epoch)`` (VAE training; the backbone recipe does not flip).
    seed:
        Seed of the flips and crops.
    crop:
        Side in pixels of a random square crop of the (single) image modality, its offset decided by
        ``(seed, sample, epoch)``; ``None`` serves whole windows. Trains a fully convolutional VAE
        on many more distinct inputs per second than whole 192 px windows (``train-vae --crop``).
    latent_cache:
        A file from :func:`encode_latents`: image modalities are then served as posterior moments
        (2 * 8, h, w) instead of pixels; samples absent from the cache are skipped.

    Attributes
    ----------
    refs:
        The samples, in index order.
    skipped:
        Skip counts by reason (see :func:`index_samples`; ``"not in latent cache"`` too).
    content:
        ``"pixels"`` or ``"moments"``: what image modalities hold.

    Items
    -----
    ``dataset[i]`` or ``dataset[(i, epoch)]`` is a dict: ``"name"`` -> the sample name; each image
    modality key -> float32 tensor (C, H, W) in [-1, 1] (or moments); ``"3d_cartesian_lat_lon"`` and
    ``"mean_timestamps"`` -> float32 (1, 1, 3) when asked for.

    Raises
    ------
    DatasetError
        On a missing modality, an ensemble cube or one with overlap, ``flip`` or ``crop`` with a latent
        cache, a crop that is not a multiple of 8 within one window or asked for several image
        modalities, an empty split, or a latent cache made from another cube.
    """

    def __init__(
        self,
        url: str,
        modalities: Sequence[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
        split: Split = "train",
        val_fraction: float = 0.1,
        split_seed: int = 42,
        flip: bool = False,
        seed: int = 0,
        crop: int | None = None,
        latent_cache: str | Path | None = None,
    ) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.spec = load_spec(url, self.storage_options)
        self.modalities = canonical(modalities)
        self.images = tuple(m for m in self.modalities if m.is_image)
        self.split = split
        self.flip = flip
        self.seed = seed
        if flip and latent_cache is not None:
            raise DatasetError("flips cannot apply to cached latents; read pixels (no latent cache) to flip")
        self.crop = crop
        if crop is not None:
            if latent_cache is not None or len(self.images) != 1:
                raise DatasetError("crop applies to the pixels of exactly one image modality (VAE training), got "
                                   f"{[m.key for m in self.images]}{' with a latent cache' if latent_cache else ''}")
            size = self.images[0].pixel_size
            if crop % 8 or not 8 <= crop <= size:
                raise DatasetError(f"crop {crop} px: use a multiple of 8 between 8 and {size} (the "
                                   f"{self.images[0].key} window)")
        if self.spec.members is not None:
            raise DatasetError(f"the cube at {url} is a generated ensemble ({self.spec.members} members), not real "
                               "data; train on a cube written by 'copgen preprocess'")
        records = ledger.done_records(url, self.storage_options)
        refs, skipped = index_samples(self.spec, records, [m.key for m in self.modalities], split=split,
                                      val_fraction=val_fraction, split_seed=split_seed)
        for group in self.spec.groups:
            wanted = [m for m in self.images if m.key in group.modalities]
            if wanted and group.block_px != wanted[0].pixel_size:
                raise DatasetError(
                    f"the cube at {url} stores {group.block_px} px blocks in {group.path}, not whole "
                    f"{wanted[0].pixel_size} px windows (it was written with overlap, stride "
                    f"{self.spec.windows[0].stride_m:g} m); training needs whole windows: preprocess the training "
                    "cube with --overlap-m 0"
                )
        self.latent_cache = None if latent_cache is None else Path(latent_cache)
        self._cache_rows: dict[str, int] = {}
        if self.latent_cache is not None:
            meta = read_cache_metadata(self.latent_cache)
            if meta["cube_spec_hash"] != self.spec.spec_hash:
                raise DatasetError(f"the latent cache {self.latent_cache} was encoded from another cube (spec hash "
                                   f"{meta['cube_spec_hash'][:12]}..., this cube {self.spec.spec_hash[:12]}...); "
                                   "delete it to re-encode")
            lacking = [m.key for m in self.images if m.key not in meta["modalities"]]
            if lacking:
                raise DatasetError(f"the latent cache {self.latent_cache} holds no {lacking}; delete it to re-encode")
            self._cache_rows = {name: i for i, name in enumerate(meta["samples"])}
            kept = tuple(r for r in refs if r.name in self._cache_rows)
            if len(kept) < len(refs):
                skipped = {**skipped, "not in latent cache": len(refs) - len(kept)}
            refs = kept
        if not refs:
            raise DatasetError(
                f"split {split!r} of the cube at {url} has no usable sample (skipped: {skipped or 'none'}); "
                "check that preprocessing finished, lower --val-fraction, or train on fewer modalities"
            )
        self.refs: tuple[SampleRef, ...] = refs
        self.skipped: dict[str, int] = skipped
        self.content: Literal["pixels", "moments"] = "pixels" if self.latent_cache is None else "moments"
        self._windows = {w.key: w for w in self.spec.windows}
        self._latlon = {w.key: _latlon_vector(*w.centre_latlon()) for w in self.spec.windows}
        self._pid: int | None = None
        self._root: Any = None
        self._arrays: dict[tuple[int, str], zarr.Array] = {}
        self._cache: Any = None

    def __len__(self) -> int:
        return len(self.refs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_pid=None, _arrays={}, _cache=None, _root=None)  # reopened in each worker process
        return state

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the sample stream (stored in training states and provenance)."""
        return {"cube_spec_hash": self.spec.spec_hash, "split": self.split, "samples": len(self.refs),
                "modalities": [m.key for m in self.modalities], "content": self.content, "flip": self.flip,
                "crop": self.crop, "skipped": dict(self.skipped)}

    def _open(self) -> None:
        if self._pid == os.getpid():
            return
        self._root = zarr.open_group(open_store(self.url, self.storage_options, read_only=True), mode="r")
        self._arrays = {}
        self._cache = None if self.latent_cache is None else safe_open(str(self.latent_cache), framework="pt")
        self._pid = os.getpid()

    def read_block(self, ref: SampleRef, modality: Modality) -> np.ndarray:
        """The raw (C, H, W) block of one image modality of a sample, in the cube's units.

        Raises
        ------
        DatasetError
            If the block holds unwritten pixels (NaN or the uint8 fill).
        """
        self._open()
        window = self._windows[ref.key]
        group = self.spec.group(ref.key.epsg, modality.key)
        arr = self._arrays.get((ref.key.epsg, modality.key))
        if arr is None:
            node = self._root.get(f"{group.path}/{modality.key}")
            if not isinstance(node, zarr.Array):
                raise DatasetError(f"the cube at {self.url} has no array {group.path}/{modality.key}; its template "
                                   "is damaged: preprocess it again")
            arr = self._arrays[(ref.key.epsg, modality.key)] = node
        y0, x0 = group.block_origin_px(window)
        bpx = group.block_px
        block = np.asarray(arr[ref.time_index, :, y0:y0 + bpx, x0:x0 + bpx])
        bad = (block == UINT8_FILL) if is_categorical(modality) else np.isnan(block)
        if bad.any():
            raise DatasetError(f"sample {ref.name}: {int(bad.sum())} pixels of {modality.key} are unwritten, although "
                               "the ledger records it complete; re-run preprocessing for this window")
        return block

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        ref = self.refs[index]
        self._open()
        out: dict[str, Any] = {"name": ref.name}
        flip = self.flip and derive_seed(self.seed, (ref.name, int(epoch)), stream="flip") & 1 == 1
        if self.crop is not None:
            room = self.images[0].pixel_size - self.crop + 1
            draw = derive_seed(self.seed, (ref.name, int(epoch)), stream="crop")
            top, left = (draw >> 20) % room, draw % room
        for m in self.modalities:
            if m.is_scalar:
                vec = self._latlon[ref.key] if m.kind is Kind.LATLON else _date_vector(self.spec.times[ref.time_index])
                out[m.key] = torch.from_numpy(vec.copy())
            elif self._cache is not None:
                out[m.key] = self._cache.get_slice(f"moments/{m.key}")[self._cache_rows[ref.name]].float()
            else:
                try:
                    values = np.asarray(normalize(m, self.read_block(ref, m), mode="strict").values)
                except ValueError as exc:
                    raise DatasetError(f"sample {ref.name}, {m.key}: {exc}") from exc
                if flip:
                    values = values[..., ::-1]
                if self.crop is not None:
                    values = values[..., top:top + self.crop, left:left + self.crop]
                out[m.key] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        return out


class ResumableSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Endless deterministic batches of ``(index, epoch)`` for a :class:`CubeDataset`.

    The sample stream is the concatenation of per-epoch permutations (``torch.randperm`` seeded by
    ``(seed, epoch)``); global micro-batch ``b`` takes stream positions
    ``[b * B * W, (b + 1) * B * W)`` and rank ``r`` the ``r``-th slice of ``B`` of them (``W`` ranks,
    ``B`` samples per rank). Batches may straddle an epoch boundary.

    Parameters
    ----------
    num_samples:
        Dataset length.
    batch_size:
        Samples per micro-batch per rank.
    seed:
        Seed of the permutations.
    start:
        First micro-batch to yield (``step * grad_accum`` on resume).
    rank, world_size:
        DDP shard; default: the initialised process group, else (0, 1).
    shuffle:
        False keeps the index order in every epoch (evaluation).

    Raises
    ------
    ValueError
        On an empty dataset, a non-positive batch size, a negative start or a bad rank.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, start: int = 0, rank: int | None = None,
                 world_size: int | None = None, shuffle: bool = True) -> None:
        if num_samples < 1 or batch_size < 1 or start < 0:
            raise ValueError(f"need num_samples >= 1, batch_size >= 1 and start >= 0, got {num_samples}, "
                             f"{batch_size}, {start}")
        from copgen_core.training import distributed

        self.rank = distributed.rank() if rank is None else rank
        self.world_size = distributed.world_size() if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside [0, world_size={self.world_size})")
        self.num_samples, self.batch_size, self.seed, self.start, self.shuffle = (
            num_samples, batch_size, seed, start, shuffle)
        self._perm: tuple[int, torch.Tensor] | None = None

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The (num_samples,) int64 sample order of one epoch."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, ("epoch", epoch), stream="order"))
            self._perm = (epoch, torch.randperm(self.num_samples, generator=gen))
        return self._perm[1]

    def position(self, index: int) -> dict[str, int]:
        """Where global micro-batch ``index`` starts in the sample stream: ``epoch`` and ``epoch_offset``."""
        epoch, offset = divmod(index * self.world_size * self.batch_size, self.num_samples)
        return {"epoch": epoch, "epoch_offset": offset}

    def batch(self, index: int) -> list[tuple[int, int]]:
        """This rank's ``(index, epoch)`` pairs of global micro-batch ``index``."""
        first = (index * self.world_size + self.rank) * self.batch_size
        out = []
        for pos in range(first, first + self.batch_size):
            epoch, offset = divmod(pos, self.num_samples)
            out.append((int(self.epoch_order(epoch)[offset]), epoch))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        index = self.start
        while True:
            yield self.batch(index)
            index += 1

    def __len__(self) -> int:  # pragma: no cover - endless; DataLoader only needs it for len()
        raise TypeError("ResumableSampler is endless; iterate it for as many batches as the run needs")


def loader(dataset: CubeDataset, sampler: ResumableSampler, *, workers: int = 0) -> Iterator[dict[str, Any]]:
    """An endless iterator of collated batches (``DataLoader`` with ``batch_sampler=sampler``)."""
    return iter(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                            persistent_workers=False, pin_memory=False))


def eval_batches(dataset: CubeDataset, batch_size: int, *, max_batches: int | None = None,
                 workers: int = 0) -> Iterator[dict[str, Any]]:
    """One ordered pass over ``dataset`` (epoch 0, no shuffling), at most ``max_batches`` batches."""
    total = -(-len(dataset) // batch_size)
    count = total if max_batches is None else min(total, max_batches)
    batches = [[(i, 0) for i in range(b * batch_size, min((b + 1) * batch_size, len(dataset)))] for b in range(count)]
    return iter(torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers))


# -- latent cache --------------------------------------------------------------------------------------


def spread_images(dataset: CubeDataset, key: str, count: int) -> torch.Tensor:
    """Up to ``count`` images of ``key`` from ``dataset``, evenly spaced over its index, (N, C, H, W).

    Deterministic (no flips, crops or randomness beyond the dataset's own for epoch 0): the samples a
    block PCA or a synthesis refit is computed from (``train-vae --shortcut``, the bundle stage).

    Raises
    ------
    ValueError
        If ``count`` is below 1.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    n = len(dataset)
    idx = sorted({int(i * n / min(n, count)) for i in range(min(n, count))})
    return torch.stack([dataset[i][key] for i in idx])


def _module_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def read_cache_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a latent cache: ``samples``, ``modalities``, ``cube_spec_hash``, ``vaes`` (digests).

    Raises
    ------
    DatasetError
        If the file is missing or not a latent cache of this format.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no latent cache at {path}; build it with encode_latents (copgen train --latent-cache)")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
        raise DatasetError(f"{path} is not a copgen latent cache (version {CACHE_VERSION}); delete it to re-encode")
    return {"samples": json.loads(meta["samples"]), "modalities": json.loads(meta["modalities"]),
            "cube_spec_hash": meta["cube_spec_hash"], "vaes": json.loads(meta["vaes"])}


@torch.no_grad()
def encode_latents(
    dataset: CubeDataset,
    vaes: Mapping[str, KLVAE],
    path: str | Path,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    workers: int = 0,
) -> Path:
    """Encode every sample of ``dataset`` once and store the posterior moments.

    Parameters
    ----------
    dataset:
        A pixel dataset without flips (usually ``split="all"``, so train and val can share the cache).
    vaes:
        A VAE per image modality of ``dataset``.
    path:
        The ``.safetensors`` file to write (atomically): tensors ``moments/<key>`` of shape
        (N, 2 * 8, h, w) in sample order, metadata ``samples`` (names), ``modalities``,
        ``cube_spec_hash`` and ``vaes`` (weight digests).
    batch_size, device, workers:
        Encoding batch, device and DataLoader workers.
    dtype:
        Storage dtype of the moments (float16 halves the file).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    DatasetError
        If the dataset serves moments or flips, or a VAE is missing.
    """
    if dataset.content != "pixels" or dataset.flip:
        raise DatasetError("encode_latents needs a pixel dataset without flips (no latent_cache, flip=False)")
    missing = [m.key for m in dataset.images if m.key not in vaes]
    if missing:
        raise DatasetError(f"encode_latents needs a VAE for {missing}")
    dev = torch.device(device)
    models = {m.key: vaes[m.key].to(dev).eval() for m in dataset.images}
    chunks: dict[str, list[torch.Tensor]] = {m.key: [] for m in dataset.images}
    names: list[str] = []
    for batch in eval_batches(dataset, batch_size, workers=workers):
        names.extend(batch["name"])
        for key, vae in models.items():
            chunks[key].append(vae.moments(batch[key].to(dev)).to("cpu", dtype))
    tensors = {f"moments/{k}": torch.cat(v).contiguous() for k, v in chunks.items()}
    meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "samples": json.dumps(names),
            "modalities": json.dumps(list(models)), "cube_spec_hash": dataset.spec.spec_hash,
            "vaes": json.dumps({k: _module_digest(v) for k, v in models.items()})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def check_cache_vaes(path: str | Path, vaes: Mapping[str, KLVAE]) -> None:
    """Raise :class:`DatasetError` unless the cache was encoded by exactly these VAE weights."""
    saved = read_cache_metadata(path)["vaes"]
    stale = sorted(k for k, v in vaes.items() if k in saved and saved[k] != _module_digest(v))
    if stale:
        raise DatasetError(f"the latent cache {path} was encoded by other weights of the VAEs {stale}; delete it "
                           "to re-encode with the current VAEs")


