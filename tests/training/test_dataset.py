"""The training dataset over a preprocessed cube: index, split, items, flips, sampler, latent cache."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from copgen_core.modalities import resolve
from copgen_core.normalize import encode_date, encode_latlon, normalize
from copgen_core.presets import vae_preset
from copgen_core.vae import KLVAE
from tests.training.conftest import DATE, DEM, INCOMPLETE, LATLON, MISSING, S2_60, TIMES
from transforms import ledger
from transforms.cube import CubeSpec, create_cube, load_spec, read_window, write_window
from transforms.dataset import (
    CubeDataset,
    DatasetError,
    ResumableSampler,
    SampleRef,
    check_cache_vaes,
    encode_latents,
    index_samples,
    loader,
    split_of,
    spread_images,
)
from transforms.windows import Window, WindowKey, iter_grid

ALL = [S2_60, DEM, LATLON, DATE]


def test_index_skips_missing_incomplete_and_unwritten_samples(tiny_cube: str) -> None:
    spec = load_spec(tiny_cube)
    records = ledger.done_records(tiny_cube)
    refs, skipped = index_samples(spec, records, ALL, split="all")
    assert skipped == {f"incomplete {S2_60}": 1, f"missing {DEM}": 1}
    assert len(refs) == 9 * 2 - 2
    assert SampleRef(*MISSING) not in refs and SampleRef(*INCOMPLETE) not in refs
    s2_only, s2_skipped = index_samples(spec, records, [S2_60], split="all")
    assert SampleRef(*MISSING) in s2_only and s2_skipped == {f"incomplete {S2_60}": 1}
    first = min(records)
    _, unwritten = index_samples(spec, {k: v for k, v in records.items() if k != first}, [S2_60], split="all")
    assert unwritten["not written"] == 1


def test_split_is_by_window_disjoint_and_deterministic(tiny_cube: str) -> None:
    train = CubeDataset(tiny_cube, [S2_60], split="train", val_fraction=0.3)
    val = CubeDataset(tiny_cube, [S2_60], split="val", val_fraction=0.3)
    everything = CubeDataset(tiny_cube, [S2_60], split="all")
    train_windows, val_windows = {r.key for r in train.refs}, {r.key for r in val.refs}
    assert train_windows and val_windows and not train_windows & val_windows
    assert set(train.refs) | set(val.refs) == set(everything.refs)
    assert all(split_of(k, 0.3) == "val" for k in val_windows)
    assert [split_of(WindowKey(32632, r, 0), 0.5, 7) for r in range(64)].count("val") in range(16, 49)


def test_items_are_strictly_normalised_blocks_with_location_and_date(tiny_cube: str) -> None:
    ds = CubeDataset(tiny_cube, ALL, split="all")
    ref = ds.refs[3]
    item = ds[3]
    assert item["name"] == ref.name
    for key in (S2_60, DEM):
        expected = normalize(key, read_window(tiny_cube, ref.key, key, ref.time_index), mode="strict").values
        assert item[key].dtype == torch.float32 and torch.equal(item[key], torch.from_numpy(expected))
    lat, lon = Window(ref.key).centre_latlon()
    assert torch.equal(item[LATLON], torch.from_numpy(encode_latlon(lat, lon)))
    when = TIMES[ref.time_index]
    assert torch.equal(item[DATE], torch.from_numpy(encode_date(when.year, when.month, when.day)))


def test_flips_depend_on_sample_and_epoch_only(tiny_cube: str) -> None:
    plain = CubeDataset(tiny_cube, [S2_60, DEM], split="all")
    flipped = CubeDataset(tiny_cube, [S2_60, DEM], split="all", flip=True, seed=5)
    outcomes = set()
    for epoch in range(6):
        a, b = plain[(0, epoch)], flipped[(0, epoch)]
        did = not torch.equal(a[S2_60], b[S2_60])
        if did:
            assert torch.equal(b[S2_60], a[S2_60].flip(-1)) and torch.equal(b[DEM], a[DEM].flip(-1))
        assert torch.equal(flipped[(0, epoch)][S2_60], b[S2_60])  # same (sample, epoch), same flip
        outcomes.add(did)
    assert outcomes == {True, False}


def test_crops_are_windows_of_the_sample_decided_by_sample_and_epoch(tiny_cube: str) -> None:
    plain = CubeDataset(tiny_cube, [DEM], split="all")
    cropped = CubeDataset(tiny_cube, [DEM], split="all", crop=16, seed=3)
    size = resolve(DEM).pixel_size
    offsets = set()
    for epoch in range(8):
        whole, part = plain[(0, epoch)][DEM], cropped[(0, epoch)][DEM]
        assert part.shape == (whole.shape[0], 16, 16)
        hits = [(y, x) for y in range(size - 15) for x in range(size - 15)
                if torch.equal(whole[:, y:y + 16, x:x + 16], part)]
        assert hits, "a crop must be a window of the whole sample"
        assert torch.equal(cropped[(0, epoch)][DEM], part)  # same (sample, epoch), same crop
        offsets.add(hits[0])
    assert len(offsets) > 1
    assert cropped.fingerprint()["crop"] == 16


@pytest.mark.parametrize("kwargs", [{"crop": 12}, {"crop": 4096}])
def test_bad_crops_are_refused(tiny_cube: str, kwargs: dict[str, int]) -> None:
    with pytest.raises(DatasetError, match="multiple of 8"):
        CubeDataset(tiny_cube, [DEM], split="all", **kwargs)
    with pytest.raises(DatasetError, match="exactly one image modality"):
        CubeDataset(tiny_cube, [S2_60, DEM], split="all", crop=8)


def test_spread_images_are_evenly_spaced_whole_samples(tiny_cube: str) -> None:
    ds = CubeDataset(tiny_cube, [S2_60], split="all")
    n = len(ds)
    two = spread_images(ds, S2_60, 2)
    assert two.shape == (min(2, n), *ds[0][S2_60].shape)
    torch.testing.assert_close(two[0], ds[0][S2_60])
    if n >= 2:
        torch.testing.assert_close(two[1], ds[n // 2][S2_60])
    assert spread_images(ds, S2_60, 10 * n).shape[0] == n  # never more than the dataset, never repeated
    with pytest.raises(ValueError, match="count must be >= 1"):
        spread_images(ds, S2_60, 0)


def test_sampler_covers_each_epoch_once_and_resumes_anywhere() -> None:
    full = ResumableSampler(10, 4, seed=3)
    stream = [pair for b in range(5) for pair in full.batch(b)]
    assert sorted(i for i, e in stream if e == 0) == list(range(10))
    assert sorted(i for i, e in stream if e == 1) == list(range(10))
    resumed = iter(ResumableSampler(10, 4, seed=3, start=2))
    assert next(resumed) == full.batch(2) and next(resumed) == full.batch(3)
    assert ResumableSampler(10, 4, seed=4).batch(0) != full.batch(0)
    assert full.position(3) == {"epoch": 1, "epoch_offset": 2}


def test_sampler_shards_global_batches_over_ranks() -> None:
    single = ResumableSampler(11, 6, seed=0, rank=0, world_size=1)
    ranks = [ResumableSampler(11, 3, seed=0, rank=r, world_size=2) for r in range(2)]
    for b in range(4):
        assert ranks[0].batch(b) + ranks[1].batch(b) == single.batch(b)


def test_dataloader_workers_read_the_same_batches(tiny_cube: str) -> None:
    ds = CubeDataset(tiny_cube, [S2_60, DEM], split="all")
    one = loader(ds, ResumableSampler(len(ds), 3, seed=1), workers=0)
    two = loader(ds, ResumableSampler(len(ds), 3, seed=1), workers=2)
    for _ in range(4):
        a, b = next(one), next(two)
        assert a["name"] == b["name"] and torch.equal(a[DEM], b[DEM])


def test_dataset_refuses_overlap_absent_modalities_and_empty_splits(tiny_cube: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="has no"):
        CubeDataset(tiny_cube, ["S1RTC_vh_vv"])
    with pytest.raises(DatasetError, match="no usable sample"):
        CubeDataset(tiny_cube, [S2_60], split="val", val_fraction=0.0)
    windows = tuple(iter_grid(32632, range(10, 12), range(10, 12), overlap_m=480.0))
    create_cube(CubeSpec(url=str(tmp_path / "overlap.zarr"), modalities=(S2_60,), windows=windows, times=TIMES))
    with pytest.raises(DatasetError, match="--overlap-m 0"):
        CubeDataset(str(tmp_path / "overlap.zarr"), [S2_60])
    create_cube(CubeSpec(url=str(tmp_path / "ens.zarr"), modalities=(S2_60,), windows=windows[:1], times=TIMES,
                         members=2))
    with pytest.raises(DatasetError, match="generated ensemble"):
        CubeDataset(str(tmp_path / "ens.zarr"), [S2_60])


def test_unwritten_pixels_behind_a_complete_record_are_an_error(tmp_path: Path) -> None:
    spec = CubeSpec(url=str(tmp_path / "c.zarr"), modalities=(S2_60,), windows=(Window(WindowKey(32632, 5, 5)),),
                    times=(datetime(2024, 1, 1, tzinfo=UTC),))
    create_cube(spec)
    block = np.full((2, 32, 32), 1000.0, dtype=np.float32)
    block[0, 0, 0] = np.nan
    write_window(spec, WindowKey(32632, 5, 5), 0, {S2_60: block}, {"valid_fraction": {S2_60: 1.0}, "missing": []})
    with pytest.raises(DatasetError, match="unwritten"):
        CubeDataset(spec.url, [S2_60])[0]


@pytest.fixture(scope="module")
def vaes() -> dict[str, KLVAE]:
    torch.manual_seed(0)
    return {k: KLVAE(vae_preset("tiny", k), scale_factor=resolve(k).scale_factor).eval() for k in (S2_60, DEM)}


def test_latent_cache_serves_the_vae_moments_of_every_sample(tiny_cube: str, tmp_path: Path,
                                                             vaes: dict[str, KLVAE]) -> None:
    path = encode_latents(CubeDataset(tiny_cube, ALL, split="all"), vaes, tmp_path / "latents.safetensors",
                          batch_size=5)
    cached = CubeDataset(tiny_cube, ALL, split="train", val_fraction=0.3, latent_cache=path)
    pixels = CubeDataset(tiny_cube, ALL, split="train", val_fraction=0.3)
    assert cached.content == "moments" and cached.refs == pixels.refs
    a, b = cached[2], pixels[2]
    with torch.no_grad():
        for key in (S2_60, DEM):
            expected = vaes[key].moments(b[key][None])[0]
            assert a[key].shape == (16, *resolve(key).latent_shape[1:])
            assert torch.allclose(a[key], expected, atol=1e-5)
    assert torch.equal(a[LATLON], b[LATLON])
    check_cache_vaes(path, vaes)
    other = {S2_60: KLVAE(vae_preset("tiny", S2_60))}
    with pytest.raises(DatasetError, match="other weights"):
        check_cache_vaes(path, other)


def test_latent_cache_of_another_cube_is_refused(tiny_cube: str, tmp_path: Path, vaes: dict[str, KLVAE]) -> None:
    path = encode_latents(CubeDataset(tiny_cube, [S2_60], split="all"), {S2_60: vaes[S2_60]},
                          tmp_path / "l.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    save_file(tensors, str(tmp_path / "foreign.safetensors"), metadata={**meta, "cube_spec_hash": "0" * 64})
    with pytest.raises(DatasetError, match="another cube"):
        CubeDataset(tiny_cube, [S2_60], latent_cache=tmp_path / "foreign.safetensors")
    with pytest.raises(DatasetError, match="flip"):
        CubeDataset(tiny_cube, [S2_60], latent_cache=path, flip=True)
