"""DPM-Solver++ (data prediction) over a flat state, as COP-GEN samples.

The sampler knows nothing of VAEs or modalities: it integrates the diffusion ODE for any state
``x`` of shape (B, ...) given an ε-prediction function ``eps_fn(x, t) -> ε̂`` where ``t`` is the
(B,) continuous time in (0, 1] (the caller maps it to the network's timestep, e.g. ``t * 1000``).

Two methods:

- ``"singlestep"``: the official COP-GEN path (DPM-Solver's ``method='fast'``). The time grid has
  ``steps + 1`` points; the outer steps have orders from :func:`singlestep_orders` (orders 1-3) and an
  outer step of order k spans k grid intervals, with its intermediate times placed at the grid's
  log-SNR ratios. Order 3 uses the ``"dpm_solver"`` form. NFE = ``steps``.
- ``"multistep"``: DPM-Solver++(1/2/3M), one model call per step reusing earlier predictions, with
  lower orders at the start and (for fewer than 10 steps) at the end. NFE = ``steps``.

Grids are ``"time_uniform"`` (``linspace(t_start, t_end, steps + 1)`` in float32, the official default),
``"logSNR"`` (uniform in half log-SNR) or ``"time_quadratic"``. No final denoising step is taken: the
result is the state at ``t_end`` (1e-3 by default).

All rows share one time grid: every step's coefficients are computed once, from a (1,) time, and
broadcast, so a row's arithmetic does not depend on the batch around it.

Hooks: ``callback(call_index, t, x0_hat)`` sees every model call's data prediction, and
``step_hook(x, t) -> x`` may replace every state the solver forms (see :func:`sample_dpmpp`), which is
where RePaint-style gap filling imposes known latents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from copgen_core.schedule import DiscreteVPSchedule, copgen_schedule

EpsFn = Callable[[Tensor, Tensor], Tensor]
"""``eps_fn(x, t) -> ε̂``: x (B, ...), t (B,) continuous time; returns ε̂ shaped like x."""
Callback = Callable[[int, Tensor, Tensor], None]
"""``callback(call_index, t, x0_hat)``, called after every model call (call_index counts from 0)."""
StepHook = Callable[[Tensor, Tensor], Tensor]
"""``step_hook(x, t) -> x``: may replace a state x (B, ...) at continuous time t (B,)."""

Method = Literal["singlestep", "multistep"]
Spacing = Literal["time_uniform", "logSNR", "time_quadratic"]

METHODS: tuple[str, ...] = ("singlestep", "multistep")
SPACINGS: tuple[str, ...] = ("time_uniform", "logSNR", "time_quadratic")
DEFAULT_T_END = 1e-3


def singlestep_orders(steps: int, order: int = 3) -> list[int]:
    """Orders of the outer steps of the official singlestep ("fast") solver; they sum to ``steps``.

    order 3: K = steps // 3 + 1 and ``[3]*(K-2) + [2, 1]`` if steps % 3 == 0, ``[3]*(K-1) + [1]`` if
    steps % 3 == 1, ``[3]*(K-1) + [2]`` if steps % 3 == 2. order 2: ``[2]*(steps//2)`` plus a final 1
    when steps is odd. order 1: ``[1]*steps``. So 1 and 2 steps at order 3 give [1] and [2].

    Raises
    ------
    ValueError
        If ``order`` is not 1, 2 or 3, or ``steps < 1``.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    if order == 3:
        k = steps // 3 + 1
        if steps % 3 == 0:
            return [3] * (k - 2) + [2, 1]
        if steps % 3 == 1:
            return [3] * (k - 1) + [1]
        return [3] * (k - 1) + [2]
    if order == 2:
        return [2] * (steps // 2) + ([1] if steps % 2 else [])
    return [1] * steps


def time_grid(
    steps: int,
    spacing: Spacing = "time_uniform",
    *,
    t_start: float = 1.0,
    t_end: float = DEFAULT_T_END,
    schedule: DiscreteVPSchedule | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The ``steps + 1`` continuous times the solver visits, from ``t_start`` down to ``t_end``.

    Returns
    -------
    Tensor
        (steps + 1,) float32, decreasing.

    Raises
    ------
    ValueError
        If ``spacing`` is unknown, ``steps < 1`` or not ``0 < t_end < t_start <= 1``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    if not 0.0 < t_end < t_start <= 1.0:
        raise ValueError(f"need 0 < t_end < t_start <= 1, got t_start={t_start!r} t_end={t_end!r}")
    if spacing == "time_uniform":
        return torch.linspace(t_start, t_end, steps + 1, device=device)
    if spacing == "time_quadratic":
        return torch.linspace(t_start**0.5, t_end**0.5, steps + 1, device=device).pow(2)
    if spacing == "logSNR":
        sched = schedule or copgen_schedule()
        ends = torch.tensor([t_start, t_end], dtype=torch.float32, device=device)
        lam = sched.lambda_(ends)
        lams = torch.linspace(float(lam[0]), float(lam[1]), steps + 1, device=device)
        return sched.inverse_lambda(lams)
    raise ValueError(f"unknown spacing {spacing!r}; use one of {list(SPACINGS)}")


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a (1,) coefficient to broadcast over x (B, ...)."""
    return v.reshape((-1,) + (1,) * (x.ndim - 1))


def _rows(t: Tensor, x: Tensor) -> Tensor:
    """The (1,) time as a (B,) tensor, one entry per row of x."""
    return t.repeat(x.shape[0])


class _Solver:
    """Shared state of one sampling run: the model wrapper, the schedule and the hooks."""

    def __init__(
        self,
        eps_fn: EpsFn,
        schedule: DiscreteVPSchedule,
        callback: Callback | None,
        step_hook: StepHook | None,
    ) -> None:
        self.eps_fn = eps_fn
        self.ns = schedule
        self.callback = callback
        self.step_hook = step_hook
        self.calls = 0

    def hook(self, x: Tensor, t: Tensor) -> Tensor:
        return x if self.step_hook is None else self.step_hook(x, _rows(t, x))

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        """Data prediction ``(x - sigma_t ε̂) / alpha_t`` at state x and time t (1,)."""
        t_rows = _rows(t, x)
        eps = self.eps_fn(x, t_rows)
        if eps.shape != x.shape:
            raise ValueError(
                f"eps_fn returned shape {tuple(eps.shape)} for a state of shape {tuple(x.shape)}"
            )
        eps = eps.to(x.dtype)
        alpha_t, sigma_t = self.ns.alpha(t), self.ns.sigma(t)
        x0 = (x - _per_sample(sigma_t, x) * eps) / _per_sample(alpha_t, x)
        if self.callback is not None:
            self.callback(self.calls, t_rows, x0)
        self.calls += 1
        return x0

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(lambda, alpha, sigma) at t."""
        log_alpha = self.ns.log_alpha(t)
        return self.ns.lambda_(t), torch.exp(log_alpha), self.ns.sigma(t)

    # ------------------------------------------------------------------ singlestep updates

    def singlestep(
        self, x: Tensor, s: Tensor, t: Tensor, order: int, r1: Tensor | None, r2: Tensor | None
    ) -> Tensor:
        """One outer step of order 1-3 from time s to t (both (1,)); ``order`` model calls."""
        v = _per_sample
        lambda_s, _, sigma_s = self.coefficients(s)
        lambda_t, alpha_t, sigma_t = self.coefficients(t)
        h = lambda_t - lambda_s
        phi_1 = torch.expm1(-h)
        model_s = self.x0(x, s)
        if order == 1:
            return v(sigma_t / sigma_s, x) * x - v(alpha_t * phi_1, x) * model_s
        assert r1 is not None
        s1 = self.ns.inverse_lambda(lambda_s + r1 * h)
        _, alpha_s1, sigma_s1 = self.coefficients(s1)
        phi_11 = torch.expm1(-r1 * h)
        u1 = self.hook(v(sigma_s1 / sigma_s, x) * x - v(alpha_s1 * phi_11, x) * model_s, s1)
        model_s1 = self.x0(u1, s1)
        if order == 2:
            return (
                v(sigma_t / sigma_s, x) * x
                - v(alpha_t * phi_1, x) * model_s
                - v((0.5 / r1) * (alpha_t * phi_1), x) * (model_s1 - model_s)
            )
        assert r2 is not None
        s2 = self.ns.inverse_lambda(lambda_s + r2 * h)
        _, alpha_s2, sigma_s2 = self.coefficients(s2)
        phi_12 = torch.expm1(-r2 * h)
        phi_22 = torch.expm1(-r2 * h) / (r2 * h) + 1.0
        phi_2 = phi_1 / h + 1.0
        u2 = (
            v(sigma_s2 / sigma_s, x) * x
            - v(alpha_s2 * phi_12, x) * model_s
            + v((r2 / r1) * (alpha_s2 * phi_22), x) * (model_s1 - model_s)
        )
        model_s2 = self.x0(self.hook(u2, s2), s2)
        return (
            v(sigma_t / sigma_s, x) * x
            - v(alpha_t * phi_1, x) * model_s
            + v((1.0 / r2) * (alpha_t * phi_2), x) * (model_s2 - model_s)
        )

    def run_singlestep(self, x: Tensor, grid: Tensor, orders: Sequence[int]) -> Tensor:
        lambdas = self.ns.lambda_(grid)
        i = 0
        x = self.hook(x, grid[:1])
        for order in orders:
            s, t = grid[i : i + 1], grid[i + order : i + order + 1]
            h = lambdas[i + order] - lambdas[i]
            r1 = (lambdas[i + 1] - lambdas[i]) / h if order >= 2 else None
            r2 = (lambdas[i + 2] - lambdas[i]) / h if order >= 3 else None
            x = self.hook(self.singlestep(x, s, t, order, r1, r2), t)
            i += order
        return x

    # ------------------------------------------------------------------ multistep updates

    def multistep(
        self, x: Tensor, models: list[Tensor], times: list[Tensor], t: Tensor, order: int
    ) -> Tensor:
        """One DPM-Solver++(order)M step to t from the last ``order`` predictions (order 1-3)."""
        v = _per_sample
        lambda_0, _, sigma_0 = self.coefficients(times[-1])
        lambda_t, alpha_t, sigma_t = self.coefficients(t)
        h = lambda_t - lambda_0
        phi_1 = torch.expm1(-h)
        m0 = models[-1]
        base = v(sigma_t / sigma_0, x) * x - v(alpha_t * phi_1, x) * m0
        if order == 1:
            return base
        lambda_1 = self.ns.lambda_(times[-2])
        r0 = (lambda_0 - lambda_1) / h
        d1_0 = v(1.0 / r0, x) * (m0 - models[-2])
        if order == 2:
            return base - v(0.5 * (alpha_t * phi_1), x) * d1_0
        lambda_2 = self.ns.lambda_(times[-3])
        r1 = (lambda_1 - lambda_2) / h
        d1_1 = v(1.0 / r1, x) * (models[-2] - models[-3])
        d1 = d1_0 + v(r0 / (r0 + r1), x) * (d1_0 - d1_1)
        d2 = v(1.0 / (r0 + r1), x) * (d1_0 - d1_1)
        phi_2 = phi_1 / h + 1.0
        phi_3 = phi_2 / h - 0.5
        return base + v(alpha_t * phi_2, x) * d1 - v(alpha_t * phi_3, x) * d2

    def run_multistep(self, x: Tensor, grid: Tensor, order: int) -> Tensor:
        steps = grid.shape[0] - 1
        t0 = grid[:1]
        x = self.hook(x, t0)
        models, times = [self.x0(x, t0)], [t0]
        for step in range(1, steps + 1):
            step_order = min(order, step)
            if steps < 10:
                step_order = min(step_order, steps + 1 - step)
            t = grid[step : step + 1]
            x = self.hook(self.multistep(x, models, times, t, step_order), t)
            if step < steps:
                models = (models + [self.x0(x, t)])[-3:]
                times = (times + [t])[-3:]
        return x


def sample_dpmpp(
    eps_fn: EpsFn,
    x: Tensor,
    *,
    steps: int = 50,
    order: int = 3,
    method: Method = "singlestep",
    spacing: Spacing = "time_uniform",
    t_start: float = 1.0,
    t_end: float = DEFAULT_T_END,
    schedule: DiscreteVPSchedule | None = None,
    orders: Sequence[int] | None = None,
    callback: Callback | None = None,
    step_hook: StepHook | None = None,
) -> Tensor:
    """Sample with DPM-Solver++ (data prediction) from ``x`` at ``t_start`` down to ``t_end``.

    With the defaults this is the official COP-GEN sampler (singlestep "fast", order 3, time-uniform,
    eps 1e-3, T 1, no final denoise): 50 model calls.

    Parameters
    ----------
    eps_fn:
        ``eps_fn(x, t) -> ε̂`` with x shaped like the state and t (B,) float32 continuous time in
        (0, 1]. Its output is cast to ``x.dtype`` (so it may run under autocast).
    x:
        (B, ...) initial state at ``t_start``, normally standard normal noise; float32 recommended.
    steps:
        Number of grid intervals; also the number of model calls (NFE).
    order:
        Solver order, 1-3.
    method:
        ``"singlestep"`` (official) or ``"multistep"``.
    spacing:
        ``"time_uniform"`` (official), ``"logSNR"`` or ``"time_quadratic"``.
    t_start, t_end:
        Continuous start and end times, ``0 < t_end < t_start <= 1``.
    schedule:
        Noise schedule; the COP-GEN scaled-linear schedule when None.
    orders:
        Singlestep only: explicit outer-step orders (each 1-3, summing to ``steps``) instead of
        :func:`singlestep_orders`.
    callback:
        ``callback(call_index, t, x0_hat)`` after each model call, with the data prediction (B, ...).
    step_hook:
        ``step_hook(x, t) -> x`` applied to every state the solver forms at time t: the initial state,
        each intermediate singlestep stage before the model sees it, and each step's result (including
        the returned one). Use it to impose known latents (RePaint-style); it must keep the shape.

    Returns
    -------
    Tensor
        (B, ...) the state at ``t_end``, same dtype as ``x``.

    Raises
    ------
    ValueError
        On an unknown method or spacing, a bad order or order list, or an ``eps_fn`` output of the
        wrong shape.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {list(METHODS)}")
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    sched = schedule or copgen_schedule()
    grid = time_grid(steps, spacing, t_start=t_start, t_end=t_end, schedule=sched, device=x.device)
    solver = _Solver(eps_fn, sched, callback, step_hook)
    if method == "multistep":
        if orders is not None:
            raise ValueError("orders= applies to method='singlestep' only; use order= for multistep")
        return solver.run_multistep(x, grid, order)
    plan = list(orders) if orders is not None else singlestep_orders(steps, order)
    if any(o not in (1, 2, 3) for o in plan) or sum(plan) != steps:
        raise ValueError(f"orders must be 1-3 each and sum to steps={steps}, got {plan}")
    return solver.run_singlestep(x, grid, plan)
