"""The discrete variance-preserving noise schedule COP-GEN was trained with.

COP-GEN uses the "stable-diffusion" scaled-linear schedule: ``N = 1000`` betas
``linspace(sqrt(0.00085), sqrt(0.012), N) ** 2`` (computed in float64). Training noises a clean latent
``z`` to step ``n`` in ``1..N`` as ``x_n = sqrt(abar_n) z + sqrt(1 - abar_n) eps`` and the backbone sees
the timestep ``n`` as a float in ``[0, N]``.

Sampling works in continuous time ``t`` in ``(0, 1]`` (``t = n / N``). The tables ``t_n = n / N`` and
``log alpha_n = 0.5 * cumsum(log(1 - beta_n))`` are float32, and ``log alpha(t)`` is the piecewise-linear
interpolation through ``(t_n, log alpha_n)``, extended linearly beyond the ends. From it follow
``alpha(t) = exp(log alpha(t))``, ``sigma(t) = sqrt(1 - alpha(t)^2)`` and the half log-SNR
``lambda(t) = log alpha(t) - log sigma(t)``, which :meth:`DiscreteVPSchedule.inverse_lambda` inverts.
These are the quantities DPM-Solver++ steps with (see :mod:`copgen_core.sampler`).
"""

from __future__ import annotations

import torch
from torch import Tensor

BETA_START = 0.00085
BETA_END = 0.012
NUM_TRAIN_STEPS = 1000


def _interpolate(x: Tensor, xp: Tensor, yp: Tensor) -> Tensor:
    """Piecewise-linear ``y(x)`` through ``(xp, yp)`` (xp increasing), extended linearly beyond the ends.

    A point exactly on a knot ``xp[j]`` (j > 0) uses the segment to its left, as the official
    sort-based interpolation does; the value is the knot's up to rounding.
    """
    k = xp.shape[0]
    idx = (torch.searchsorted(xp, x.contiguous(), right=False) - 1).clamp(0, k - 2)
    x0, x1 = xp[idx], xp[idx + 1]
    y0, y1 = yp[idx], yp[idx + 1]
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


def _official_betas_float32() -> Tensor:
    return (torch.linspace(BETA_START**0.5, BETA_END**0.5, NUM_TRAIN_STEPS, dtype=torch.float64) ** 2).float()


class DiscreteVPSchedule:
    """A discrete VP schedule, usable in discrete steps (training) and continuous time (sampling).

    Parameters
    ----------
    betas:
        (N,) float64 tensor of per-step betas in (0, 1).

    Attributes
    ----------
    betas_float32:
        (N,) float32 betas, as the sampler's tables are built from.
    t_table:
        (N,) float32, ``t_n = n / N`` for ``n = 1..N``.
    log_alpha_table:
        (N,) float32, ``0.5 * cumsum(log(1 - beta_n))`` (log of sqrt(abar_n)).
    alphas_cumprod:
        (N + 1,) float64, ``abar_n`` with ``abar_0 = 1``; index ``n`` is training step ``n``.

    Raises
    ------
    ValueError
        If ``betas`` is not 1-D with at least 2 entries all in (0, 1).
    """

    T: float = 1.0
    """Largest continuous time; the sampler starts there."""

    def __init__(self, betas: Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.shape[0] < 2:
            raise ValueError(f"betas must be a 1-D tensor of length >= 2, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(
                f"betas must lie in (0, 1); got min {betas.min().item()} max {betas.max().item()}"
            )
        self.num_steps = int(betas.shape[0])
        self.betas = betas
        self.betas_float32 = betas.float()
        self.log_alpha_table = 0.5 * torch.log(1.0 - self.betas_float32).cumsum(dim=0)
        if self.num_steps == NUM_TRAIN_STEPS and torch.equal(self.betas_float32, _official_betas_float32()):
            # torch's float32 log is CPU-dependent in the last bit (AVX-512 vs AVX2): use the official
            # implementation's table (copgen_core.schedule_table) so sampling is bit-exact everywhere
            from copgen_core.schedule_table import official_log_alpha

            official = official_log_alpha()
            if float((official - self.log_alpha_table).abs().max()) > 1e-6:
                raise AssertionError("the computed log-alpha table is far from the official one; "
                                     "copgen_core/schedule_table.py or the betas are wrong")
            self.log_alpha_table = official
        # linspace(1/N, 1, N) reproduces the official float32 table bit for bit with our torch; the
        # correctly rounded n/N differs from it by one ulp at 386 of 1000 points.
        self.t_table = torch.linspace(1.0 / self.num_steps, 1.0, self.num_steps, dtype=torch.float32)
        self.alphas_cumprod = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1.0 - betas, 0)])
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    @classmethod
    def scaled_linear(
        cls, beta_start: float = BETA_START, beta_end: float = BETA_END, num_steps: int = NUM_TRAIN_STEPS
    ) -> DiscreteVPSchedule:
        """The COP-GEN / Stable Diffusion schedule: ``linspace(sqrt(b0), sqrt(b1), N, float64) ** 2``."""
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
        return cls(betas)

    def __repr__(self) -> str:
        return (
            f"DiscreteVPSchedule(N={self.num_steps}, beta=[{self.betas[0].item():.6g}, "
            f"{self.betas[-1].item():.6g}])"
        )

    # ---------------------------------------------------------------- continuous time (sampling)

    def _tables(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        key = (like.device, like.dtype)
        tables = self._cache.get(key)
        if tables is None:
            t = self.t_table.to(device=like.device, dtype=like.dtype)
            la = self.log_alpha_table.to(device=like.device, dtype=like.dtype)
            tables = (t, la, la.flip(0).contiguous(), t.flip(0).contiguous())
            self._cache[key] = tables
        return tables

    @staticmethod
    def _as_time(t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t)
        if not t.is_floating_point():
            t = t.to(torch.float32)
        return t

    def log_alpha(self, t: Tensor | float) -> Tensor:
        """``log alpha(t)`` (log of sqrt(abar)) by linear interpolation of the float32 tables.

        Parameters
        ----------
        t:
            Continuous time, any shape, floating (float32 unless given otherwise); ``t = n / N``.

        Returns
        -------
        Tensor
            Same shape, dtype and device as ``t``.
        """
        t = self._as_time(t)
        t_tab, la_tab, _, _ = self._tables(t)
        return _interpolate(t.reshape(-1), t_tab, la_tab).reshape(t.shape)

    def alpha(self, t: Tensor | float) -> Tensor:
        """``alpha(t) = exp(log alpha(t))``, the signal coefficient (sqrt(abar))."""
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor | float) -> Tensor:
        """``sigma(t) = sqrt(1 - alpha(t)^2)``, the noise coefficient."""
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lambda_(self, t: Tensor | float) -> Tensor:
        """Half log-SNR ``lambda(t) = log alpha(t) - log sigma(t)``."""
        log_alpha = self.log_alpha(t)
        log_sigma = 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))
        return log_alpha - log_sigma

    def inverse_lambda(self, lam: Tensor | float) -> Tensor:
        """Continuous time with half log-SNR ``lam``: the inverse of :meth:`lambda_`.

        ``log alpha = -0.5 * logaddexp(0, -2 lam)``, then ``t`` is interpolated from the log-alpha table.
        """
        lam = self._as_time(lam)
        _, _, la_flipped, t_flipped = self._tables(lam)
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)
        return _interpolate(log_alpha.reshape(-1), la_flipped, t_flipped).reshape(lam.shape)

    def model_time(self, t: Tensor) -> Tensor:
        """Timestep fed to the backbone for continuous time ``t``: ``t * N`` (in ``[0, N]``)."""
        return t * self.num_steps

    # ---------------------------------------------------------------- discrete steps (training)

    def sample_steps(
        self, batch_size: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> Tensor:
        """Draw training steps ``n ~ U{1..N}``.

        Returns
        -------
        Tensor
            (batch_size,) int64 on ``device``. The draw happens on the generator's device.
        """
        gen_device = generator.device if generator is not None else torch.device("cpu")
        n = torch.randint(1, self.num_steps + 1, (batch_size,), generator=generator, device=gen_device)
        return n.to(device)

    def _check_steps(self, n: Tensor) -> Tensor:
        n = torch.as_tensor(n)
        if n.is_floating_point() or n.is_complex():
            raise ValueError(f"training steps must be integers in 0..{self.num_steps}, got dtype {n.dtype}")
        if n.numel() and (int(n.min()) < 0 or int(n.max()) > self.num_steps):
            raise ValueError(
                f"training steps must lie in 0..{self.num_steps}, got range [{int(n.min())}, {int(n.max())}]"
            )
        return n

    def noise_coefficients(self, n: Tensor) -> tuple[Tensor, Tensor]:
        """``(sqrt(abar_n), sqrt(1 - abar_n))`` for integer steps ``n`` in ``0..N``, in float64.

        Raises
        ------
        ValueError
            If ``n`` is not integer or out of ``0..N``.
        """
        n = self._check_steps(n)
        abar = self.alphas_cumprod.to(n.device)[n]
        return abar.sqrt(), (1.0 - abar).sqrt()

    def add_noise(self, z: Tensor, eps: Tensor, n: Tensor) -> Tensor:
        """Noise clean latents to training step ``n``: ``x_n = sqrt(abar_n) z + sqrt(1 - abar_n) eps``.

        Parameters
        ----------
        z, eps:
            (B, ...) clean latent and standard normal noise of the same shape.
        n:
            (B,) integer steps in ``0..N`` (0 leaves ``z`` unchanged).

        Returns
        -------
        Tensor
            (B, ...) in ``z.dtype``; coefficients are computed in float64 and cast.

        Raises
        ------
        ValueError
            If shapes disagree or ``n`` is not integer in ``0..N``.
        """
        if z.shape != eps.shape:
            raise ValueError(
                f"z and eps must have the same shape, got {tuple(z.shape)} and {tuple(eps.shape)}"
            )
        n = torch.as_tensor(n, device=z.device)
        if n.shape != (z.shape[0],):
            raise ValueError(f"n must have shape (B,) = ({z.shape[0]},), got {tuple(n.shape)}")
        a, s = self.noise_coefficients(n)
        view = (-1,) + (1,) * (z.ndim - 1)
        return a.to(z.dtype).view(view) * z + s.to(z.dtype).view(view) * eps

    def predict_x0(self, x_n: Tensor, eps_hat: Tensor, n: Tensor) -> Tensor:
        """Clean-latent estimate from ε̂ at integer step ``n``: ``(x_n - sqrt(1 - abar) ε̂) / sqrt(abar)``."""
        n = torch.as_tensor(n, device=x_n.device)
        a, s = self.noise_coefficients(n)
        view = (-1,) + (1,) * (x_n.ndim - 1)
        return (x_n - s.to(x_n.dtype).view(view) * eps_hat) / a.to(x_n.dtype).view(view)


def copgen_schedule() -> DiscreteVPSchedule:
    """The schedule every official COP-GEN checkpoint was trained with (scaled-linear, N=1000)."""
    return DiscreteVPSchedule.scaled_linear()
