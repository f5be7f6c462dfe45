"""DPM-Solver++: official order lists and grids, exactness on analytic data, hooks, golden vectors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from copgen_core.refcheck import sampler as sampler_check
from copgen_core.sampler import Method, Spacing, sample_dpmpp, singlestep_orders, time_grid
from copgen_core.schedule import DiscreteVPSchedule, copgen_schedule
from tests.paths import REFERENCE

SAMPLER_DIR = REFERENCE / "sampler"


@pytest.fixture(scope="module")
def schedule() -> DiscreteVPSchedule:
    return copgen_schedule()


@pytest.fixture(scope="module")
def cases() -> dict[str, torch.Tensor]:
    return load_file(str(SAMPLER_DIR / "cases.safetensors"))


@pytest.fixture(scope="module")
def per_steps() -> dict[str, dict]:
    return json.loads((SAMPLER_DIR / "config.json").read_text())["per_steps"]


# ----------------------------------------------------------------------------- plans and grids


def test_singlestep_orders_match_the_official_lists(per_steps: dict[str, dict]) -> None:
    assert {case["steps"] for case in per_steps.values()} == {9, 10, 30, 50}
    for case in per_steps.values():
        assert singlestep_orders(case["steps"], 3) == case["orders"]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_singlestep_orders_sum_to_steps(order: int) -> None:
    for steps in range(1, 101):
        plan = singlestep_orders(steps, order)
        assert sum(plan) == steps and min(plan) >= 1
        # the official list ends in lower orders, so fewer than 4 steps never reach order 3
        assert max(plan) == min(order, steps if steps < 3 else 2 if steps == 3 else order)


def test_singlestep_orders_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        singlestep_orders(10, 4)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        singlestep_orders(0, 3)


def test_time_uniform_grid_matches_golden(cases: dict[str, torch.Tensor]) -> None:
    for steps in (9, 10, 30, 50):
        assert torch.equal(time_grid(steps), cases[f"steps{steps}/time_grid"])


def test_logsnr_grid_is_uniform_in_lambda(schedule: DiscreteVPSchedule) -> None:
    grid = time_grid(20, "logSNR")
    lam = schedule.lambda_(grid)
    assert grid[0].item() == pytest.approx(1.0, abs=1e-6) and grid[-1].item() == pytest.approx(1e-3, rel=1e-4)
    steps = lam[1:] - lam[:-1]
    assert torch.allclose(steps, steps.mean().expand(20), rtol=1e-3)


def test_time_grid_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown spacing"):
        time_grid(10, "karras")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="t_end"):
        time_grid(10, t_start=0.5, t_end=0.7)


@pytest.mark.parametrize("steps", [9, 10, 30, 50])
def test_model_call_times_match_golden(steps: int, cases: dict[str, torch.Tensor]) -> None:
    times: list[float] = []

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x.shape[0],) and bool((t == t[0]).all())
        times.append(t[0].item())
        return torch.zeros_like(x)

    sample_dpmpp(eps_fn, torch.zeros(2, 4), steps=steps)
    want = cases[f"steps{steps}/nfe_t_continuous"]
    assert len(times) == steps == want.shape[0]
    # one float32 ulp at most: the times go through float32 log/exp, CPU-dependent in the last bit
    # (bit-equal on the golden machine); refcheck allows the same
    got = torch.tensor(times)
    assert bool((torch.nextafter(want, want.new_tensor(2.0)) >= got).all())
    assert bool((torch.nextafter(want, want.new_tensor(-1.0)) <= got).all())


# ----------------------------------------------------------------------------- analytic data


def _gaussian_eps(schedule: DiscreteVPSchedule, mean: float, std: float):
    """Exact ε(x, t) for data ~ N(mean, std²) per coordinate."""

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
        x0 = mean + a * std**2 / (a**2 * std**2 + s**2) * (x - a * mean)
        return (x - a * x0) / s

    return eps_fn


def _gaussian_flow(schedule: DiscreteVPSchedule, x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Exact probability-flow map of N(mean, std²) data from t = 1 to t = 1e-3."""
    t = torch.tensor([1.0, 1e-3])
    a, s = schedule.alpha(t).double(), schedule.sigma(t).double()
    scale = torch.sqrt(a[1] ** 2 * std**2 + s[1] ** 2) / torch.sqrt(a[0] ** 2 * std**2 + s[0] ** 2)
    return a[1] * mean + scale * (x.double() - a[0] * mean)


@pytest.mark.parametrize("method", ["singlestep", "multistep"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("spacing", ["time_uniform", "logSNR", "time_quadratic"])
def test_point_mass_data_is_solved_exactly(
    schedule: DiscreteVPSchedule, method: Method, order: int, spacing: Spacing
) -> None:
    """With a constant data prediction every order is exact."""
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    got = sample_dpmpp(
        _gaussian_eps(schedule, 0.7, 0.0), x, steps=7, order=order, method=method, spacing=spacing
    )
    want = _gaussian_flow(schedule, x, 0.7, 0.0)
    assert (got.double() - want).abs().max().item() < 2e-5


@pytest.mark.parametrize("method", ["singlestep", "multistep"])
def test_higher_orders_converge_faster_on_gaussian_data(schedule: DiscreteVPSchedule, method: Method) -> None:
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(2))
    eps_fn = _gaussian_eps(schedule, 0.7, 0.5)
    want = _gaussian_flow(schedule, x, 0.7, 0.5)
    errors = {
        order: (
            sample_dpmpp(eps_fn, x, steps=24, order=order, method=method, spacing="logSNR").double() - want
        )
        .abs()
        .max()
        .item()
        for order in (1, 2, 3)
    }
    assert errors[3] < errors[2] < errors[1]
    assert errors[3] < 0.01


# ----------------------------------------------------------------------------- hooks and errors


def test_callback_sees_every_call_with_the_data_prediction(schedule: DiscreteVPSchedule) -> None:
    seen: list[tuple[int, float, torch.Size]] = []
    x = torch.randn(3, 5)
    eps_fn = _gaussian_eps(schedule, 0.25, 0.0)
    sample_dpmpp(eps_fn, x, steps=10, callback=lambda i, t, x0: seen.append((i, t[0].item(), x0.shape)))
    assert [i for i, _, _ in seen] == list(range(10))
    assert all(shape == x.shape for _, _, shape in seen)
    x0s: list[torch.Tensor] = []
    sample_dpmpp(eps_fn, x, steps=4, order=2, callback=lambda i, t, x0: x0s.append(x0))
    assert all(torch.allclose(x0, torch.full_like(x0, 0.25), atol=1e-5) for x0 in x0s)


@pytest.mark.parametrize("method", ["singlestep", "multistep"])
def test_step_hook_can_impose_known_values(schedule: DiscreteVPSchedule, method: Method) -> None:
    """RePaint-style: a hook that re-noises known entries to time t pins them in the result."""
    known = torch.linspace(-1, 1, 6).expand(2, 6)
    mask = torch.tensor([True, False, True, False, False, True]).expand(2, 6)
    noise = torch.randn(2, 6, generator=torch.Generator().manual_seed(3))
    hook_times: list[float] = []
    model_inputs: list[torch.Tensor] = []

    def hook(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (2,)
        hook_times.append(t[0].item())
        a, s = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
        return torch.where(mask, a * known + s * noise, x)

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        model_inputs.append(x.clone())
        return torch.zeros_like(x)

    out = sample_dpmpp(eps_fn, torch.randn(2, 6), steps=9, method=method, step_hook=hook)
    a, s = schedule.alpha(torch.tensor([1e-3])), schedule.sigma(torch.tensor([1e-3]))
    assert torch.allclose(out[mask], (a * known + s * noise)[mask], atol=1e-6)
    assert hook_times[0] == 1.0 and hook_times[-1] == pytest.approx(1e-3)
    assert len(model_inputs) == 9
    # every state the model saw went through the hook first
    assert len(hook_times) >= len(model_inputs)


def test_eps_fn_of_wrong_shape_is_reported() -> None:
    with pytest.raises(ValueError, match=r"eps_fn returned shape \(2, 3\)"):
        sample_dpmpp(lambda x, t: torch.zeros(2, 3), torch.zeros(2, 4), steps=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "adaptive"}, "unknown method"),
        ({"order": 4}, "order must be"),
        ({"orders": [3, 3]}, "sum to steps=9"),
        ({"orders": [4, 4, 1]}, "1-3 each"),
        ({"method": "multistep", "orders": [3, 3, 3]}, "applies to method='singlestep' only"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sample_dpmpp(lambda x, t: x, torch.zeros(1, 2), steps=9, **kwargs)


def test_sampler_is_batch_invariant(schedule: DiscreteVPSchedule) -> None:
    """A row's result does not depend on the rows around it."""
    eps_fn = _gaussian_eps(schedule, 0.3, 0.8)
    x = torch.randn(13, 7, generator=torch.Generator().manual_seed(4))
    full = sample_dpmpp(eps_fn, x, steps=12)
    alone = torch.cat([sample_dpmpp(eps_fn, x[i : i + 1], steps=12) for i in range(13)])
    assert torch.equal(full, alone)


# ----------------------------------------------------------------------------- golden vectors


def test_refcheck_passes_on_the_reference_set() -> None:
    results = sampler_check.run(REFERENCE)
    names = {r.name for r in results}
    for steps in (9, 10, 30, 50):
        assert {f"steps{steps}/latents", f"steps{steps}/nfe_times"} <= names
    failed = [r.line() for r in results if not r.ok]
    assert not failed, "\n".join(failed)
    assert all(math.isfinite(r.worst) for r in results)


def test_refcheck_catches_a_wrong_order_list() -> None:
    """[3]*(steps/3) has the same NFE and model-call times but misses the golden latents."""
    results = {r.name: r for r in sampler_check.check_steps(REFERENCE, "steps9", orders=[3, 3, 3])}
    assert not results["steps9/latents"].ok
    assert results["steps9/latents"].worst > 10 * sampler_check.LATENT_TOLERANCE
    assert results["steps9/nfe_times"].ok


def test_refcheck_refuses_unsupported_solver_settings() -> None:
    with pytest.raises(ValueError, match="taylor"):
        sampler_check.solver_settings({"solver_type": "taylor"})
    assert (
        sampler_check.solver_settings({"method": "fast", "skip_type": "logSNR", "eps": 1e-3})["spacing"]
        == "logSNR"
    )
