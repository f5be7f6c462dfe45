"""Gap filling: fills, latent masks, re-noising, the known-latent hook and inpaint() on a random tiny model.

The model is ``random_model("tiny")`` over four modalities (26 tokens) so that a run takes about a
second on a CPU: lat/lon (condition), DEM (band-infilling target), S2 L2A 60 m (the partial modality,
32 px -> 4 x 4 latent) and the date (marginalised).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from copgen_core.bundle import random_model
from copgen_core.generate import CopgenModel, JointDenoiser
from copgen_core.inpaint import (
    InpaintResult,
    KnownLatentHook,
    composite,
    fill_missing,
    inpaint,
    latent_weights,
    renoise,
)
from copgen_core.schedule import copgen_schedule
from copgen_core.seeding import SampleKey, sample_noise

MODALITIES = ("3d_cartesian_lat_lon", "DEM_DEM", "S2L2A_B01_B09", "mean_timestamps")
S2 = "S2L2A_B01_B09"
DEM = "DEM_DEM"
LATLON = "3d_cartesian_lat_lon"
STEPS = 4


@pytest.fixture(scope="module")
def model() -> CopgenModel:
    backbone, vaes = random_model("tiny", seed=0, modalities=MODALITIES)
    return CopgenModel(backbone, dict(vaes))


def _observation(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S2 60 m DN (B, 2, 32, 32) with NaN in the gaps, the gap mask, and lat/lon (B, 2)."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(400, 3000, size=(batch, 2, 32, 32)).astype(np.float32)
    missing = np.zeros((batch, 32, 32), dtype=bool)
    missing[:, :, :14] = True  # the west 14 columns: latent columns 0-1 unknown, 2-3 known
    missing[:, 20:23, 20:23] = True  # a small hole: latent cell (2, 2) unknown
    values[np.broadcast_to(missing[:, None], values.shape)] = np.nan
    latlon = np.stack([rng.uniform(-60, 60, batch), rng.uniform(-180, 180, batch)], axis=1)
    return values, missing, latlon


def _run(model: CopgenModel, batch: int = 2, **kwargs: object) -> InpaintResult:
    values, missing, latlon = _observation(batch)
    options: dict[str, object] = {"members": 1, "steps": STEPS, "seed": 5, "return_latents": True, "decode": False}
    options.update(kwargs)
    return inpaint(model, {LATLON: latlon}, {S2: values}, {S2: missing}, [DEM], **options)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- building blocks


def test_latent_weights_match_block_loops() -> None:
    missing = torch.from_numpy(np.random.default_rng(0).random((2, 16, 24)) < 0.03)
    strict, soft = latent_weights(missing, 8, "all"), latent_weights(missing, 8, "fraction")
    assert strict.shape == soft.shape == (2, 1, 2, 3)
    for n in range(2):
        for i in range(2):
            for j in range(3):
                block = missing[n, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8]
                assert strict[n, 0, i, j] == float(not block.any())
                assert soft[n, 0, i, j] == pytest.approx(1.0 - block.float().mean().item())
    with pytest.raises(ValueError, match="multiples of 8"):
        latent_weights(torch.zeros(1, 12, 16, dtype=torch.bool))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**16), st.floats(0.05, 0.95), st.sampled_from(["smooth", "mean"]))
def test_fill_keeps_known_pixels_and_fills_within_their_range(seed: int, gap: float, method: str) -> None:
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(2, 3, 20, 12)).astype(np.float32))
    known = torch.from_numpy(rng.random((2, 20, 12)) > gap)
    known[:, 0, 0] = True  # at least one known pixel per sample
    out = fill_missing(torch.where(known[:, None], x, torch.nan), known, method)  # type: ignore[arg-type]
    k = known[:, None].expand_as(x)
    assert torch.equal(out[k], x[k])
    assert torch.isfinite(out).all()
    for n in range(2):
        for c in range(3):
            vals = x[n, c][known[n]]
            filled = out[n, c][~known[n]]
            assert (filled >= vals.min() - 1e-5).all() and (filled <= vals.max() + 1e-5).all()
            if method == "mean":
                assert torch.allclose(filled, vals.mean().expand_as(filled), atol=1e-5)


def test_smooth_fill_continues_a_constant_and_blanks_an_empty_sample() -> None:
    x = torch.full((2, 1, 16, 16), 3.25)
    known = torch.zeros(2, 16, 16, dtype=torch.bool)
    known[0, :, :4] = True
    out = fill_missing(x, known, "smooth")
    assert torch.equal(out[0], x[0])  # a constant is continued exactly
    assert torch.equal(out[1], torch.zeros(1, 16, 16))  # nothing known: zeros


def test_renoise_has_the_forward_marginal() -> None:
    sched = copgen_schedule()
    t_b, t_a = 0.3, 0.6
    a_b, s_b = float(sched.alpha(t_b)), float(sched.sigma(t_b))
    a_a, s_a = float(sched.alpha(t_a)), float(sched.sigma(t_a))
    gen = torch.Generator().manual_seed(0)
    z = 1.5
    x_b = a_b * z + s_b * torch.randn(200_000, generator=gen)
    x_a = renoise(x_b, t_b, t_a, torch.randn(200_000, generator=gen), sched)
    assert x_a.mean().item() == pytest.approx(a_a * z, abs=0.01)
    assert x_a.std().item() == pytest.approx(s_a, abs=0.01)
    with pytest.raises(ValueError, match="noisier time"):
        renoise(x_b, t_a, t_b, x_b, sched)


def test_hook_imposes_where_the_weight_is_one_and_blends_otherwise(model: CopgenModel) -> None:
    denoiser = JointDenoiser(model.backbone, [S2, DEM], {}, {LATLON: torch.zeros(2, 1, 1, 3),
                                                         "mean_timestamps": torch.zeros(2, 1, 1, 3)})
    gen = torch.Generator().manual_seed(1)
    z0, eps = torch.randn(2, 8, 4, 4, generator=gen), torch.randn(2, 8, 4, 4, generator=gen)
    w = torch.zeros(2, 1, 4, 4)
    w[:, :, :, 2:] = 1.0
    w[:, :, 0, 0] = 0.25
    hook = KnownLatentHook(denoiser, {S2: z0}, {S2: w}, {S2: eps}, model.schedule)
    x = torch.randn(2, denoiser.state_size, generator=gen)
    t = torch.tensor([0.4, 0.4])
    out = denoiser.unpack(hook(x, t))
    before = denoiser.unpack(x)
    alpha, sigma = model.schedule.alpha(t[0]), model.schedule.sigma(t[0])
    imposed = alpha * z0 + sigma * eps
    assert torch.equal(out[S2][..., 2:], imposed[..., 2:])
    assert torch.equal(out[S2][..., 1:, :2], before[S2][..., 1:, :2])
    assert torch.allclose(out[S2][..., 0, 0], 0.25 * imposed[..., 0, 0] + 0.75 * before[S2][..., 0, 0])
    assert torch.equal(out[DEM], before[DEM])  # other targets are never touched


def test_composite_keeps_integer_and_float_observations_exactly() -> None:
    observed = np.array([[[[1, 65535], [7, 9]]]], dtype=np.uint16)  # (1, 1, 2, 2)
    generated = np.full((1, 3, 1, 2, 2), 0.5, dtype=np.float32)
    missing = np.array([[[False, False], [True, False]]])
    comp = composite(observed, generated, missing)
    assert comp.values.dtype == np.float32 and comp.values.shape == (1, 3, 1, 2, 2)
    assert comp.values[0, :, 0].tolist() == [[[1, 65535], [0.5, 9]]] * 3
    assert (comp.filled == missing).all()
    with pytest.raises(ValueError, match="bool"):
        composite(observed, generated, missing.astype(int))


# ----------------------------------------------------------------------------- inpaint()


def test_known_latents_are_imposed_and_the_gaps_generated(model: CopgenModel) -> None:
    res = _run(model)
    unconstrained = _run(model, method="none")
    assert res.latents is not None and unconstrained.latents is not None
    z0 = res.known_latents[S2][:, None]  # (B, 1, 8, 4, 4)
    w = res.latent_weights[S2]
    expected_w = torch.ones(2, 4, 4)
    expected_w[:, :, :2] = 0.0
    expected_w[:, 2, 2] = 0.0
    assert torch.equal(w, expected_w)
    known = (w > 0)[:, None, None].expand_as(res.latents[S2])
    err = (res.latents[S2] - z0).abs()
    free_err = (unconstrained.latents[S2] - z0).abs()
    # the final state is at t = 1e-3: known cells sit at the observation plus sigma ~ 0.03 noise
    assert err[known].max() < 0.2
    assert err[known].mean() < 0.05 * free_err[known].mean()
    assert err[~known].mean() > 10 * err[known].mean()
    # exactly: alpha(t_end) z0 + sigma(t_end) eps, eps = the modality's initial noise
    eps = sample_noise((8, 4, 4), 5, [0, 1], [0, 0], S2, "noise").reshape(2, 1, 8, 4, 4)
    t_end = torch.tensor(1e-3)
    imposed = model.schedule.alpha(t_end) * z0 + model.schedule.sigma(t_end) * eps
    assert torch.allclose(res.latents[S2][known], imposed.expand_as(err)[known], atol=1e-5)
    # the gaps are generated under the known cells' influence: they differ from the unconstrained run
    assert not torch.allclose(res.latents[S2][~known], unconstrained.latents[S2][~known], atol=1e-3)
    assert res.settings["known_fraction"][S2] == pytest.approx(1 - (32 * 14 + 9) / 32**2)


def test_results_do_not_depend_on_the_batch(model: CopgenModel) -> None:
    values, missing, latlon = _observation(3)
    keys: list[SampleKey] = ["tile-a", ("32632", 4, 7), 11]
    opts: dict[str, object] = {"members": 2, "steps": STEPS, "seed": 9, "decode": False, "return_latents": True,
                               "resample": 2, "jump_steps": 2}
    whole = inpaint(model, {LATLON: latlon}, {S2: values}, {S2: missing}, [DEM], keys=keys, batch_size=3,
                    **opts)  # type: ignore[arg-type]
    assert whole.latents is not None
    for i in (2, 0):
        alone = inpaint(model, {LATLON: latlon[i : i + 1]}, {S2: values[i : i + 1]}, {S2: missing[i : i + 1]},
                        [DEM], keys=[keys[i]], **opts)  # type: ignore[arg-type]
        assert alone.latents is not None
        for key in (S2, DEM):
            assert torch.equal(alone.latents[key][0], whole.latents[key][i]), (key, i)
    assert not torch.equal(whole.latents[S2][0, 0], whole.latents[S2][0, 1])  # members differ


def test_resampling_keeps_the_known_cells_and_changes_the_gaps(model: CopgenModel) -> None:
    plain, again = _run(model, batch=1), _run(model, batch=1, resample=3, jump_steps=2)
    assert plain.latents is not None and again.latents is not None
    known = (plain.latent_weights[S2] > 0)[:, None, None].expand_as(plain.latents[S2])
    assert torch.allclose(again.latents[S2][known], plain.latents[S2][known], atol=1e-5)
    assert not torch.allclose(again.latents[S2][~known], plain.latents[S2][~known], atol=1e-3)
    assert again.settings["resample"] == 3


def test_composite_keeps_observed_pixels_and_marks_exactly_the_filled_ones(model: CopgenModel) -> None:
    res = _run(model, batch=1, members=2, decode=True, return_latents=False)
    values, missing, _ = _observation(1)
    comp = res.composite(S2)
    assert comp.values.shape == (1, 2, 2, 32, 32) and comp.values.dtype == np.float32
    assert (comp.filled == missing).all()
    observed_bits = np.broadcast_to(values[:, None], comp.values.shape).view(np.uint32)
    gap = np.broadcast_to(missing[:, None, None], comp.values.shape)
    assert (comp.values.view(np.uint32)[~gap] == observed_bits[~gap]).all()
    assert (comp.values[gap] == res.outputs[S2][gap]).all()
    assert np.isfinite(comp.values).all()
    assert res[DEM].shape == (1, 2, 1, 64, 64)  # the band-infilling target is decoded too
    with pytest.raises(ValueError, match="not a partial modality"):
        res.composite(DEM)


def test_fully_missing_observation_equals_generating_the_modality(model: CopgenModel) -> None:
    values, missing, latlon = _observation(2)
    missing[:] = True
    res = inpaint(model, {LATLON: latlon}, {S2: values}, {S2: missing}, [DEM], members=2, steps=STEPS, seed=3,
                  decode=False, return_latents=True)
    gen = model.generate({LATLON: latlon}, [S2, DEM], members=2, steps=STEPS, seed=3, decode=False,
                         return_latents=True)
    assert res.latents is not None and gen.latents is not None
    for key in (S2, DEM):
        assert torch.equal(res.latents[key], gen.latents[key])
    assert not res.latent_weights[S2].any()


def test_inpaint_refuses_bad_roles_masks_and_settings(model: CopgenModel) -> None:
    values, missing, latlon = _observation(1)
    cond = {LATLON: latlon}
    with pytest.raises(ValueError, match="cannot be partial"):
        inpaint(model, {}, {"mean_timestamps": np.zeros((1, 3))}, {"mean_timestamps": missing}, keys=[0])
    with pytest.raises(ValueError, match="exactly the partial keys"):
        inpaint(model, cond, {S2: values}, {}, steps=1)
    with pytest.raises(ValueError, match=r"must be bool \(B, H, W\)"):
        inpaint(model, cond, {S2: values}, {S2: missing[:, :16]}, steps=1)
    unmarked = values.copy()
    unmarked[0, :, 0, 20] = np.nan  # a gap the mask does not mark
    with pytest.raises(ValueError, match="1 pixels marked known hold NaN"):
        inpaint(model, cond, {S2: unmarked}, {S2: missing}, steps=1)
    with pytest.raises(ValueError, match="both partial and targets"):
        inpaint(model, cond, {S2: values}, {S2: missing}, [S2], steps=1)
    with pytest.raises(ValueError, match="nothing to generate"):
        inpaint(model, cond, {}, {}, steps=1)
    with pytest.raises(ValueError, match="needs method='repaint'"):
        inpaint(model, cond, {S2: values}, {S2: missing}, method="none", resample=2)
    with pytest.raises(ValueError, match="disagree on the batch size"):
        inpaint(model, {LATLON: np.zeros((2, 2))}, {S2: values}, {S2: missing}, steps=1)


# ----------------------------------------------------------------------------- temporal prior (SDEdit start)


def _prior(batch: int, seed: float) -> np.ndarray:
    """A textured guess (a random VAE's GroupNorms ignore constant offsets), NaN in one corner."""
    prior = np.random.default_rng(int(seed)).uniform(400, 3000, size=(batch, 2, 32, 32)).astype(np.float32)
    prior[:, :, :4, :4] = np.nan  # no guess there: pull-push from the rest
    return prior


def test_a_prior_steers_the_gaps_and_is_ignored_at_prior_start_1(model: CopgenModel) -> None:
    plain = _run(model)
    ignored = _run(model, prior={S2: _prior(2, 900.0)}, prior_start=1.0)
    assert plain.latents is not None and ignored.latents is not None
    assert torch.equal(plain.latents[S2], ignored.latents[S2])  # the default start ignores the prior
    dark = _run(model, prior={S2: _prior(2, 100.0)}, prior_start=0.01)
    bright = _run(model, prior={S2: _prior(2, 9000.0)}, prior_start=0.01)
    dark_other_seed = _run(model, prior={S2: _prior(2, 100.0)}, prior_start=0.01, seed=6)
    plain_other_seed = _run(model, seed=6)
    assert dark.latents is not None and bright.latents is not None
    assert dark_other_seed.latents is not None and plain_other_seed.latents is not None
    known = (plain.latent_weights[S2] > 0)[:, None, None].expand_as(plain.latents[S2])
    # known cells are imposed whatever the prior
    assert torch.allclose(dark.latents[S2][known], plain.latents[S2][known], atol=1e-4)
    # the gaps follow the prior: with a late start another seed barely changes them, while from pure
    # noise it changes them completely; and another prior moves them
    seed_effect_prior = (dark.latents[S2][~known] - dark_other_seed.latents[S2][~known]).abs().mean()
    seed_effect_plain = (plain.latents[S2][~known] - plain_other_seed.latents[S2][~known]).abs().mean()
    prior_effect = (dark.latents[S2][~known] - bright.latents[S2][~known]).abs().mean()
    assert seed_effect_prior < 0.2 * seed_effect_plain
    assert prior_effect > 0.0
    # and they sit at the encoding of observation + prior (a random VAE's latents vary little, so
    # compare distances): closer to their own prior's encoding than to the other one's
    from copgen_core.inpaint import _prepare_partial

    values, missing, _ = _observation(2)
    mod = model.backbone.modalities[2]

    def encoded(seed: int) -> torch.Tensor:
        pixels = _prepare_partial(mod, values, missing, "smooth", "strict", [], _prior(2, seed))
        return model._encode(mod, pixels, [0, 1], 5, "mean", None)[:, None]

    z_dark, z_bright = encoded(100), encoded(9000)
    gaps = ~known
    assert (dark.latents[S2] - z_dark)[gaps].abs().mean() < 0.8 * (dark.latents[S2] - z_bright)[gaps].abs().mean()
    assert (bright.latents[S2] - z_bright)[gaps].abs().mean() < 0.8 * (bright.latents[S2] - z_dark)[gaps].abs().mean()
    assert dark.settings["prior_start"] == 0.01 and dark.settings["prior"] == [S2]


def test_prior_refusals(model: CopgenModel) -> None:
    with pytest.raises(ValueError, match="prior_start"):
        _run(model, prior={S2: _prior(2, 900.0)}, prior_start=0.0)
    with pytest.raises(ValueError, match="shape"):
        _run(model, prior={S2: _prior(3, 900.0)}, prior_start=0.5)
    with pytest.raises(ValueError, match="not generated"):
        _run(model, prior={LATLON: np.zeros((2, 1, 1, 3))}, prior_start=0.5)
    with pytest.raises(ValueError, match="resampling"):
        _run(model, prior={S2: _prior(2, 900.0)}, prior_start=0.5, resample=2)


def test_temporal_prior_takes_the_nearest_clear_acquisition_per_pixel() -> None:
    from types import SimpleNamespace
    from typing import Any

    from transforms.gapfill import WindowRoles, temporal_prior

    def other(value: float, missing: np.ndarray) -> tuple[Any, WindowRoles]:
        tile = SimpleNamespace(arrays={S2: np.full((2, 32, 32), value, dtype=np.float32)})  # only .arrays is read
        return tile, WindowRoles((), (), (S2,), (), {S2: missing})

    near_missing = np.zeros((32, 32), dtype=bool)
    near_missing[:10] = True  # the near date is cloudy in the first 10 rows
    far_missing = np.zeros((32, 32), dtype=bool)
    far_missing[:5] = True  # the far date too in the first 5
    near, far = other(100.0, near_missing), other(200.0, far_missing)
    prior = temporal_prior([(30.0, *far), (5.0, *near)], keys=[S2])
    assert set(prior) == {S2} and prior[S2].shape == (2, 32, 32)
    assert (prior[S2][:, 10:] == 100.0).all()  # nearest date where clear
    assert (prior[S2][:, 5:10] == 200.0).all()  # next nearest where the nearest is cloudy
    assert np.isnan(prior[S2][:, :5]).all()  # never clear: no guess
    assert temporal_prior([], keys=[S2]) == {}
