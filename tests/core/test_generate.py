"""generate(): any-to-any roles, deterministic per-sample noise, marginalisation and input errors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from copgen_core.backbone import BackboneConfig, CopgenBackbone
from copgen_core.generate import (
    ConditionEncoding,
    CopgenModel,
    GenerationResult,
    JointDenoiser,
    physical_shape,
)
from copgen_core.modalities import KEYS, MODALITIES, Kind, Modality, resolve
from copgen_core.normalize_classes import LULC_CODES
from copgen_core.presets import vae_preset
from copgen_core.seeding import SampleKey, canonical_key, derive_seed, generator_for, sample_noise
from copgen_core.vae import KLVAE

STEPS = 2


class SpyBackbone(CopgenBackbone):
    """Records the timesteps and latents of every call, per modality key."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__(config)
        self.calls: list[dict[str, tuple[Tensor, Tensor]]] = []

    def forward(self, latents: Sequence[Tensor], timesteps: Sequence[Tensor | float]) -> list[Tensor]:
        self.calls.append(
            {
                k: (x.clone(), torch.as_tensor(t).clone())
                for k, x, t in zip(self.keys, latents, timesteps, strict=True)
            }
        )
        return super().forward(latents, timesteps)


def _config(modalities: tuple[str, ...] = KEYS) -> BackboneConfig:
    torch.manual_seed(0)
    return BackboneConfig(modalities=modalities, embed_dim=32, depth=2, num_heads=2)


def _backbone(modalities: tuple[str, ...] = KEYS) -> CopgenBackbone:
    return CopgenBackbone(_config(modalities)).eval()


def _spy() -> SpyBackbone:
    return SpyBackbone(_config()).eval()


def _latents(result: GenerationResult) -> dict[str, Tensor]:
    assert result.latents is not None, "generate(return_latents=True) must return latents"
    return result.latents


@pytest.fixture(scope="module")
def vaes() -> dict[str, KLVAE]:
    torch.manual_seed(1)
    return {m.key: KLVAE(vae_preset("tiny", m.key), m.scale_factor).eval() for m in MODALITIES if m.is_image}


@pytest.fixture(scope="module")
def model(vaes: dict[str, KLVAE]) -> CopgenModel:
    return CopgenModel(_backbone(), vaes)


def physical(modality: Modality, batch: int, seed: int = 0) -> np.ndarray:
    """Valid random physical values of one modality, (B, ...)."""
    rng = np.random.default_rng(seed)
    shape = (batch, *physical_shape(modality))
    if modality.kind is Kind.S2:
        return rng.integers(1, 10000, shape).astype(np.uint16)
    if modality.kind is Kind.S1:
        return rng.uniform(1e-4, 0.5, shape).astype(np.float32)
    if modality.kind is Kind.DEM:
        return rng.uniform(0, 3000, shape).astype(np.float32)
    if modality.kind is Kind.LULC:
        return rng.choice(np.array(LULC_CODES[1:]), shape)
    if modality.kind is Kind.CLOUD:
        return rng.integers(0, 4, shape)
    if modality.kind is Kind.LATLON:
        return np.stack([rng.uniform(-80, 80, batch), rng.uniform(-180, 180, batch)], axis=1)
    years = rng.integers(2016, 2024, batch)
    return np.stack([years, rng.integers(1, 13, batch), rng.integers(1, 29, batch)], axis=1)


def expected_output_shape(modality: Modality, batch: int, members: int) -> tuple[int, ...]:
    if modality.kind is Kind.LATLON:
        return (batch, members, 2)
    if modality.kind is Kind.DATE:
        return (batch, members, 3)
    return (batch, members, *physical_shape(modality))


# ----------------------------------------------------------------------------- seeding


def test_seeds_depend_on_every_part_of_the_key() -> None:
    base = derive_seed(0, ("32632", 3, 7), 0, "DEM_DEM")
    assert base == derive_seed(0, ("32632", 3, 7), 0, "DEM_DEM")
    variants = [
        derive_seed(1, ("32632", 3, 7), 0, "DEM_DEM"),
        derive_seed(0, ("32632", 3, 8), 0, "DEM_DEM"),
        derive_seed(0, ("32632", 3, "7"), 0, "DEM_DEM"),
        derive_seed(0, ("32632", 3, 7), 1, "DEM_DEM"),
        derive_seed(0, ("32632", 3, 7), 0, "LULC_LULC"),
        derive_seed(0, ("32632", 3, 7), 0, "DEM_DEM", "encode"),
    ]
    assert len({base, *variants}) == 7
    assert all(0 <= s < 2**63 for s in variants)
    # the hash is stable across processes and versions
    assert derive_seed(0, ("32632", 3, 7), 1, "DEM_DEM") == 8129304455794061018


def test_sample_noise_rows_come_from_their_own_generators() -> None:
    keys: list[SampleKey] = ["a", ("b", 2), 5]
    members = [0, 1, 0]
    batch = sample_noise((2, 3), 7, keys, members, "DEM_DEM")
    for i, (k, m) in enumerate(zip(keys, members, strict=True)):
        assert torch.equal(batch[i], torch.randn(2, 3, generator=generator_for(7, k, m, "DEM_DEM")))
    assert torch.equal(sample_noise((2, 3), 7, keys[::-1], members[::-1], "DEM_DEM"), batch.flip(0))


@pytest.mark.parametrize("bad", [1.5, True, None, ("a", 2.0)])
def test_keys_of_other_types_are_refused(bad: object) -> None:
    with pytest.raises(TypeError, match="str, int or tuples"):
        canonical_key(bad)


# ----------------------------------------------------------------------------- determinism


def test_samples_are_bitwise_identical_in_any_batch_and_order(model: CopgenModel) -> None:
    s2, lulc = resolve("s2l2a_10m"), resolve("lulc")
    keys: list[SampleKey] = [("32632", 3, 7), "tile-b", 11, ("32633", 0, 0)]
    conditions = {
        s2.key: physical(s2, 4, 1),
        lulc.key: physical(lulc, 4, 2),
        "latlon": physical(resolve("latlon"), 4),
    }
    targets = ["DEM_DEM", "S1RTC_vh_vv", "mean_timestamps"]
    kwargs: dict[str, Any] = {"members": 2, "steps": STEPS, "seed": 5, "return_latents": True}
    together = model.generate(conditions, targets, keys=keys, batch_size=4, **kwargs)
    one_by_one = model.generate(conditions, targets, keys=keys, batch_size=1, **kwargs)
    perm = [2, 0, 3, 1]
    shuffled = model.generate(
        {k: v[perm] for k, v in conditions.items()},
        targets,
        keys=[keys[i] for i in perm],
        batch_size=3,
        **kwargs,
    )
    for key in together.outputs:
        assert np.array_equal(together.outputs[key], one_by_one.outputs[key]), key
        assert np.array_equal(together.outputs[key][perm], shuffled.outputs[key]), key
        assert torch.equal(_latents(together)[key][perm], _latents(shuffled)[key]), key
    alone = model.generate({k: v[1:2] for k, v in conditions.items()}, targets, keys=[keys[1]], **kwargs)
    for key in together.outputs:
        assert np.array_equal(together.outputs[key][1:2], alone.outputs[key]), key
    # members differ from each other, and another seed gives other samples
    dem = _latents(together)["DEM_DEM"]
    assert not torch.equal(dem[:, 0], dem[:, 1])
    other = model.generate(conditions, targets, keys=keys, **{**kwargs, "seed": 6})
    assert not torch.equal(_latents(other)["DEM_DEM"], dem)


def test_batched_evaluation_agrees_with_per_sample(vaes: dict[str, KLVAE]) -> None:
    net = _backbone()
    fast = CopgenModel(net, vaes, batch_invariant=False)
    exact = CopgenModel(net, vaes, batch_invariant=True)
    conditions = {"dem": physical(resolve("dem"), 3)}
    a = fast.generate(conditions, ["latlon", "s2l1c_60m"], steps=STEPS, return_latents=True, decode=False)
    b = exact.generate(conditions, ["latlon", "s2l1c_60m"], steps=STEPS, return_latents=True, decode=False)
    for key in _latents(a):
        assert torch.allclose(_latents(a)[key], _latents(b)[key], atol=1e-4)
    assert a.outputs == {} and set(_latents(a)) == {"3d_cartesian_lat_lon", "S2L1C_B01_B09_B10"}


# ----------------------------------------------------------------------------- any-to-any


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(roles=st.lists(st.sampled_from("ctm"), min_size=12, max_size=12).filter(lambda r: "t" in r))
def test_any_split_of_the_modalities_generates_exactly_the_targets(
    model: CopgenModel, roles: list[str]
) -> None:
    conditions = {
        m.key: physical(m, 2, i) for i, (m, r) in enumerate(zip(MODALITIES, roles, strict=True)) if r == "c"
    }
    originals = {k: v.copy() for k, v in conditions.items()}
    targets = [m.key for m, r in zip(MODALITIES, roles, strict=True) if r == "t"]
    result = model.generate(conditions, targets, steps=1, order=1, keys=["x", "y"], return_latents=True)
    assert isinstance(result, GenerationResult)
    assert list(result.outputs) == targets and set(_latents(result)) == set(targets)
    for key in targets:
        mod = resolve(key)
        out = result[key]
        assert out.shape == expected_output_shape(mod, 2, 1), key
        assert np.isfinite(out).all(), key
        assert _latents(result)[key].shape == (2, 1, *mod.latent_shape)
    for key, value in conditions.items():
        assert np.array_equal(value, originals[key]), f"condition {key} was modified"
    assert result.settings["marginalised"] == [
        m.key for m, r in zip(MODALITIES, roles, strict=True) if r == "m"
    ]


def test_marginalised_modalities_are_held_at_pure_noise_with_t_1000(vaes: dict[str, KLVAE]) -> None:
    net = _spy()
    model = CopgenModel(net, vaes)
    model.generate(
        {"latlon": physical(resolve("latlon"), 2)}, ["dem", "date"], steps=3, keys=[0, 1], members=1
    )
    assert len(net.calls) == 3 * 2  # per-sample evaluation: 3 calls x 2 samples
    marginal = [k for k in KEYS if k not in ("3d_cartesian_lat_lon", "DEM_DEM", "mean_timestamps")]
    for call in net.calls:
        assert call["3d_cartesian_lat_lon"][1].tolist() == [0.0]
        t_dem = call["DEM_DEM"][1].item()
        assert 0 < t_dem <= 1000 and call["mean_timestamps"][1].item() == t_dem
        for key in marginal:
            assert call[key][1].tolist() == [1000.0], key
    first, last = net.calls[0], net.calls[-2]  # both for sample 0
    for key in marginal:
        assert torch.equal(first[key][0], last[key][0]), f"{key} noise must be held fixed"
        want = sample_noise(resolve(key).latent_shape, 0, [0], [0], key, "marginal")
        assert torch.equal(first[key][0], want)


def test_guidance_mixes_a_conditional_and_an_unconditional_call(vaes: dict[str, KLVAE]) -> None:
    """w != 1: each solver step calls the backbone twice, conditions then their seeded noise at t=1000."""
    net = _spy()
    model = CopgenModel(net, vaes)
    cond = {"latlon": physical(resolve("latlon"), 1)}
    plain = model.generate(cond, ["date"], steps=3, keys=["k"], decode=False, return_latents=True)
    assert len(net.calls) == 3
    net.calls.clear()
    guided = model.generate(cond, ["date"], steps=3, keys=["k"], decode=False, return_latents=True, guidance=2.5)
    assert len(net.calls) == 6 and guided.settings["guidance"] == 2.5
    given, free = net.calls[0], net.calls[1]
    assert given["3d_cartesian_lat_lon"][1].tolist() == [0.0]
    assert free["3d_cartesian_lat_lon"][1].tolist() == [1000.0]
    want = sample_noise(resolve("latlon").latent_shape, 0, ["k"], [0], "3d_cartesian_lat_lon", "guidance")
    assert torch.equal(free["3d_cartesian_lat_lon"][0], want)
    assert torch.equal(free["mean_timestamps"][0], given["mean_timestamps"][0])  # same state, same t
    assert not torch.equal(_latents(plain)["mean_timestamps"], _latents(guided)["mean_timestamps"])
    net.calls.clear()
    again = model.generate(cond, ["date"], steps=3, keys=["k"], decode=False, return_latents=True, guidance=1.0)
    assert len(net.calls) == 3 and torch.equal(_latents(again)["mean_timestamps"], _latents(plain)["mean_timestamps"])


def test_guided_eps_is_the_extrapolation_of_the_two_calls() -> None:
    net = _backbone()
    rows = 2
    cond = {"DEM_DEM": torch.randn(rows, 8, 8, 8)}
    marginal = {m.key: torch.randn(rows, *m.latent_shape) for m in MODALITIES
                if m.key not in ("DEM_DEM", "S1RTC_vh_vv")}
    free = {"DEM_DEM": torch.randn(rows, 8, 8, 8)}
    x, t = torch.randn(rows, 8 * 24 * 24), torch.full((rows,), 0.7)
    with torch.no_grad():
        eps_c = JointDenoiser(net, ["s1"], cond, marginal)(x, t)
        eps_u = JointDenoiser(net, ["s1"], {}, {**marginal, **free})(x, t)
        eps_w = JointDenoiser(net, ["s1"], cond, marginal, guidance=3.0, unconditional=free)(x, t)
    torch.testing.assert_close(eps_w, eps_u + 3.0 * (eps_c - eps_u))
    with pytest.raises(ValueError, match=r"missing \['DEM_DEM'\]"):
        JointDenoiser(net, ["s1"], cond, marginal, guidance=2.0)
    with pytest.raises(ValueError, match="finite weight"):
        JointDenoiser(net, ["s1"], cond, marginal, guidance=float("nan"), unconditional=free)


def test_official_quirk_feeds_fresh_noise_labelled_t_0(vaes: dict[str, KLVAE]) -> None:
    net = _spy()
    model = CopgenModel(net, vaes)
    model.generate({}, ["latlon"], steps=3, keys=["k"], official_quirks=True, decode=False)
    assert len(net.calls) == 3
    for key in ("DEM_DEM", "S2L2A_B01_B09"):
        assert all(call[key][1].tolist() == [0.0] for call in net.calls)
        assert not torch.equal(net.calls[0][key][0], net.calls[1][key][0])


def test_a_model_over_a_subset_of_modalities(vaes: dict[str, KLVAE]) -> None:
    keys = ("3d_cartesian_lat_lon", "DEM_DEM", "S2L2A_B02_B03_B04_B08")
    model = CopgenModel(
        _backbone(keys),
        {"DEM_DEM": vaes["DEM_DEM"], "S2L2A_B02_B03_B04_B08": lambda: vaes["S2L2A_B02_B03_B04_B08"]},
    )
    result = model.generate({"latlon": physical(resolve("latlon"), 1)}, ["dem"], steps=STEPS)
    assert result["dem"].shape == (1, 1, 1, 64, 64)
    assert model.loaded_vaes == ("DEM_DEM",), "only the VAEs a call needs are loaded"
    with pytest.raises(ValueError, match="not a modality of this model"):
        model.generate({"latlon": physical(resolve("latlon"), 1)}, ["lulc"], steps=STEPS)


def test_stochastic_condition_encoding_is_seeded_and_shared_by_members(vaes: dict[str, KLVAE]) -> None:
    net = _spy()
    model = CopgenModel(net, vaes)
    dem = {"dem": physical(resolve("dem"), 1)}
    latents = []
    runs: list[tuple[ConditionEncoding, int]] = [("mean", 0), ("sample", 0), ("sample", 0), ("sample", 1)]
    for encoding, seed in runs:
        net.calls.clear()
        model.generate(
            dem, ["latlon"], members=2, steps=1, order=1, seed=seed, condition_encoding=encoding, decode=False
        )
        assert torch.equal(net.calls[0]["DEM_DEM"][0], net.calls[1]["DEM_DEM"][0]), (
            "members share the condition"
        )
        latents.append(net.calls[0]["DEM_DEM"][0])
    mean, sample_a, sample_b, sample_c = latents
    assert torch.equal(sample_a, sample_b)
    assert not torch.equal(mean, sample_a) and not torch.equal(sample_a, sample_c)


def test_dates_may_be_given_as_date_objects(model: CopgenModel) -> None:
    as_array = model.generate(
        {"date": np.array([[2021, 7, 15]])}, ["latlon"], steps=STEPS, decode=False, return_latents=True
    )
    as_dates = model.generate(
        {"date": [dt.date(2021, 7, 15)]}, ["latlon"], steps=STEPS, decode=False, return_latents=True
    )
    assert torch.equal(_latents(as_array)["3d_cartesian_lat_lon"], _latents(as_dates)["3d_cartesian_lat_lon"])


def test_joint_denoiser_packs_in_canonical_order() -> None:
    net = _backbone()
    rows = 2
    cond = {
        m.key: torch.zeros(rows, *m.latent_shape)
        for m in MODALITIES
        if m.key not in ("DEM_DEM", "S1RTC_vh_vv")
    }
    den = JointDenoiser(net, ["S1RTC_vh_vv", "dem"], cond)
    assert [m.key for m in den.targets] == ["DEM_DEM", "S1RTC_vh_vv"]
    assert den.state_size == 8 * 8 * 8 + 8 * 24 * 24
    lat = {"DEM_DEM": torch.randn(rows, 8, 8, 8), "S1RTC_vh_vv": torch.randn(rows, 8, 24, 24)}
    x = den.pack(lat)
    assert torch.equal(x[:, :512], lat["DEM_DEM"].flatten(1))
    assert all(torch.equal(v, lat[k]) for k, v in den.unpack(x).items())
    with torch.no_grad():
        assert den(x, torch.full((rows,), 0.5)).shape == x.shape
    with pytest.raises(ValueError, match="neither targets, conditions nor marginal"):
        JointDenoiser(net, ["dem"], {})


# ----------------------------------------------------------------------------- input errors


def _s2(batch: int = 1) -> np.ndarray:
    return physical(resolve("s2l2a_10m"), batch)


@pytest.mark.parametrize(
    ("conditions", "targets", "match"),
    [
        ({"s2l2a_10m": _s2()}, ["s3_olci"], "unknown modality 's3_olci'"),
        ({"sentinel": _s2()}, ["dem"], "conditions: unknown modality"),
        ({"s2l2a_10m": _s2()}, [], "targets is empty"),
        ({"s2l2a_10m": _s2()}, ["S2L2A_B02_B03_B04_B08"], "both conditions and targets"),
        ({"dem": np.zeros((1, 1, 32, 32))}, ["lulc"], r"shape \(1, 1, 32, 32\); expected \(B, 1, 64, 64\)"),
        ({"s2l2a_10m": _s2()[:, :3]}, ["dem"], r"expected \(B, 4, 192, 192\) with bands B04, B03, B02, B08"),
        ({"latlon": np.array([10.0, 20.0])}, ["dem"], r"expected \(B, 2\) \[lat, lon\]"),
        ({"dem": np.full((1, 1, 64, 64), np.nan)}, ["lulc"], "4096 NaN/inf"),
        ({"latlon": np.array([[95.0, 0.0]])}, ["dem"], r"latitude .*95\.0\)? is outside"),
        ({"s2l2a_10m": _s2().astype(np.int32) - 20}, ["dem"], "S2L2A_B02_B03_B04_B08, sample 0"),
        ({"lulc": np.full((1, 1, 192, 192), 3)}, ["dem"], r"codes \[3\]"),
        ({"s1": -np.ones((1, 2, 192, 192))}, ["dem"], "negative backscatter"),
        ({"dem": np.full((1, 1, 64, 64), 30000.0)}, ["lulc"], "outside"),
        (
            {"dem": physical(resolve("dem"), 2), "latlon": np.zeros((3, 2))},
            ["lulc"],
            "disagree on the batch size",
        ),
        ({}, ["dem"], "pass keys="),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(
    model: CopgenModel, conditions: dict, targets: list[str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        model.generate(conditions, targets, steps=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keys": [0, 1]}, "2 keys for B = 1"),
        ({"keys": [0.5]}, "str, int or tuples"),
        ({"members": 0}, "members must be >= 1"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"condition_encoding": "mode"}, "condition_encoding"),
        ({"method": "euler"}, "unknown method"),
        ({"guidance": -1.0}, "guidance must be a finite weight"),
    ],
)
def test_bad_settings_are_refused(model: CopgenModel, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        model.generate({"latlon": np.zeros((1, 2))}, ["date"], steps=1, **kwargs)


def test_missing_vae_is_named() -> None:
    model = CopgenModel(_backbone(), {})
    with pytest.raises(ValueError, match="no VAE for DEM_DEM"):
        model.generate({"latlon": np.zeros((1, 2))}, ["dem"], steps=1)
    with pytest.raises(ValueError, match="scalar modality"):
        CopgenModel(_backbone(), {"latlon": lambda: None})  # type: ignore[dict-item, return-value]
