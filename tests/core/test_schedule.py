"""The discrete VP schedule: official tables, continuous-time interpolation and training noise."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from copgen_core.schedule import DiscreteVPSchedule, copgen_schedule
from tests.paths import REFERENCE

SAMPLER_CASES = REFERENCE / "sampler" / "cases.safetensors"


@pytest.fixture(scope="module")
def schedule() -> DiscreteVPSchedule:
    return copgen_schedule()


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(SAMPLER_CASES)).items() if k.startswith("schedule/")}


def test_tables_match_official_schedule(
    schedule: DiscreteVPSchedule, golden: dict[str, torch.Tensor]
) -> None:
    assert torch.equal(schedule.betas_float32, golden["schedule/betas_float32"])
    assert torch.equal(schedule.log_alpha_table, golden["schedule/log_alpha_discrete"])
    assert (schedule.t_table - golden["schedule/t_discrete"]).abs().max().item() <= 1e-7
    assert schedule.t_table.dtype == schedule.log_alpha_table.dtype == torch.float32


def test_alphas_cumprod_match_documented_values(schedule: DiscreteVPSchedule) -> None:
    abar = schedule.alphas_cumprod
    assert abar.shape == (1001,) and abar[0].item() == 1.0
    assert abar[1].item() == pytest.approx(0.99915, abs=1e-5)
    assert abar[500].item() == pytest.approx(0.2777, abs=1e-4)
    assert abar[1000].item() == pytest.approx(0.00466, abs=1e-5)
    # the float32 sampler table is the log of sqrt(abar)
    assert torch.allclose(torch.exp(2 * schedule.log_alpha_table.double()), abar[1:], rtol=1e-5, atol=0)


def test_log_alpha_interpolates_the_tables_and_extrapolates_linearly(schedule: DiscreteVPSchedule) -> None:
    t_tab, la_tab = schedule.t_table, schedule.log_alpha_table
    assert torch.allclose(schedule.log_alpha(t_tab), la_tab, rtol=0, atol=1e-7)
    mid = 0.5 * (t_tab[:-1] + t_tab[1:])
    assert torch.allclose(schedule.log_alpha(mid), 0.5 * (la_tab[:-1] + la_tab[1:]), rtol=2e-6, atol=1e-7)
    # below the first knot: the first segment continued
    slope0 = (la_tab[1] - la_tab[0]) / (t_tab[1] - t_tab[0])
    t_lo = torch.tensor([0.0, 0.0005])
    assert torch.allclose(schedule.log_alpha(t_lo), la_tab[0] + (t_lo - t_tab[0]) * slope0, atol=1e-7)
    # t = 0 extrapolates to almost (not exactly) a clean signal
    assert 0.0 < schedule.log_alpha(torch.tensor(0.0)).item() < 1e-5


def test_alpha_sigma_lambda_are_consistent(schedule: DiscreteVPSchedule) -> None:
    t = torch.linspace(1e-3, 1.0, 997)
    alpha, sigma, lam = schedule.alpha(t), schedule.sigma(t), schedule.lambda_(t)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(t), atol=1e-6)
    assert torch.allclose(lam, torch.log(alpha) - torch.log(sigma), atol=1e-4)
    assert bool((lam[1:] < lam[:-1]).all()), "half log-SNR must decrease with t"


def test_inverse_lambda_inverts_lambda(schedule: DiscreteVPSchedule) -> None:
    t = torch.linspace(1e-3, 1.0, 2001)
    assert (schedule.inverse_lambda(schedule.lambda_(t)) - t).abs().max().item() <= 2e-7


def test_functions_keep_shape_and_dtype(schedule: DiscreteVPSchedule) -> None:
    t = torch.rand(3, 4, dtype=torch.float64)
    for fn in (schedule.log_alpha, schedule.alpha, schedule.sigma, schedule.lambda_):
        out = fn(t)
        assert out.shape == (3, 4) and out.dtype == torch.float64
    assert schedule.model_time(torch.tensor([0.5, 1.0])).tolist() == [500.0, 1000.0]


def test_add_noise_follows_the_training_formula(schedule: DiscreteVPSchedule) -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 8, 3, 3, generator=gen)
    eps = torch.randn(4, 8, 3, 3, generator=gen)
    n = torch.tensor([0, 1, 500, 1000])
    x = schedule.add_noise(z, eps, n)
    abar = schedule.alphas_cumprod[n].float().view(-1, 1, 1, 1)
    assert torch.allclose(x, abar.sqrt() * z + (1 - abar).sqrt() * eps, atol=1e-6)
    assert torch.equal(x[0], z[0]), "step 0 must leave the latent clean"
    assert torch.allclose(schedule.predict_x0(x, eps, n), z, atol=1e-4)


def test_sample_steps_is_seeded_and_in_range(schedule: DiscreteVPSchedule) -> None:
    a = schedule.sample_steps(4096, generator=torch.Generator().manual_seed(3))
    b = schedule.sample_steps(4096, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.int64
    assert a.min().item() >= 1 and a.max().item() <= 1000
    assert a.min().item() <= 5 and a.max().item() >= 995


@pytest.mark.parametrize(
    ("n", "match"),
    [
        (torch.tensor([0.5, 1.0]), "integers"),
        (torch.tensor([-1, 3]), r"0\.\.1000"),
        (torch.tensor([1, 1001]), r"\[1, 1001\]"),
    ],
)
def test_add_noise_rejects_bad_steps(schedule: DiscreteVPSchedule, n: torch.Tensor, match: str) -> None:
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=match):
        schedule.add_noise(z, z, n)


def test_add_noise_rejects_mismatched_shapes(schedule: DiscreteVPSchedule) -> None:
    with pytest.raises(ValueError, match="same shape"):
        schedule.add_noise(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        schedule.add_noise(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("betas", [torch.tensor([0.1]), torch.tensor([0.1, 1.0]), torch.zeros(2, 2)])
def test_schedule_rejects_bad_betas(betas: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="betas"):
        DiscreteVPSchedule(betas)
