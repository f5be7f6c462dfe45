"""Training losses: the KL-VAE loss and the multimodal ε-prediction loss.

VAE (official ``LPIPSWithDiscriminator`` without its LPIPS and GAN terms): per pixel
``rec = l1 |x - x̂| + l2 (x - x̂)²``; with a scalar log-variance ``s`` the NLL is ``rec / exp(s) + s``;
NLL and KL are summed over each sample's elements and averaged over the batch, and
``loss = nll + kl_weight * kl`` with ``kl_weight = 1e-6``. The per-sample sums keep the official
balance between the two terms. The official optimiser never updates ``s`` (it stays at 0, so the NLL
is the pixel term); ``learned_logvar=True`` trains it.

Backbone: ``Σ_m mean_{C,H,W} (ε̂_m - ε_m)²`` per sample, averaged over the batch; each modality
weighs the same whatever its token count. A per-(sample, modality) weight of 0 leaves a modality
out of the loss (a dropped or clean-conditioned one; see :mod:`~copgen_core.training.backbone_trainer`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from copgen_core.vae import LOGVAR_CLAMP


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per sample, summed over (C, H, W).

    ``logvar`` is clamped to [-30, 20] first, as the posterior is everywhere else.

    Returns
    -------
    Tensor
        (B,) float32.
    """
    logvar = torch.clamp(logvar.float(), *LOGVAR_CLAMP)
    mean = mean.float()
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)


class VAELoss(nn.Module):
    """Pixel L1+L2, learned-logvar NLL and KL, as the official VAE recipe (no LPIPS, no GAN).

    Parameters
    ----------
    kl_weight:
        Weight of the KL term (1e-6 in every official VAE).
    l1_weight, l2_weight:
        Weights of ``|x - x̂|`` and ``(x - x̂)²`` in the pixel term (1 and 1 officially).
    learned_logvar:
        Learn the scalar log-variance ``s`` of the NLL. Without it (what the official optimiser
        effectively does) the NLL is the pixel term.
    logvar_init:
        Initial ``s``.

    Raises
    ------
    ValueError
        On negative weights, or both pixel weights zero.
    """

    def __init__(self, *, kl_weight: float = 1e-6, l1_weight: float = 1.0, l2_weight: float = 1.0,
                 learned_logvar: bool = False, logvar_init: float = 0.0) -> None:
        super().__init__()
        if min(kl_weight, l1_weight, l2_weight) < 0 or l1_weight + l2_weight == 0:
            raise ValueError(
                f"VAE loss weights must be >= 0 with a non-zero pixel term, got kl={kl_weight}, l1={l1_weight}, "
                f"l2={l2_weight}"
            )
        self.kl_weight = float(kl_weight)
        self.l1_weight = float(l1_weight)
        self.l2_weight = float(l2_weight)
        self.logvar = nn.Parameter(torch.tensor(float(logvar_init))) if learned_logvar else None

    def forward(self, x: Tensor, recon: Tensor, moments: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The loss of one batch.

        Parameters
        ----------
        x, recon:
            (B, C, H, W) input and reconstruction in the normalised space.
        moments:
            (B, 2 * embed_dim, h, w) posterior moments (mean, then logvar) the reconstruction came from.

        Returns
        -------
        loss, metrics
            Scalar float32 loss; metrics ``nll``, ``kl``, ``l1``, ``mse`` (per-element means) and
            ``logvar`` as floats.

        Raises
        ------
        ValueError
            If ``x`` and ``recon`` differ in shape.
        """
        if x.shape != recon.shape:
            raise ValueError(f"input {tuple(x.shape)} and reconstruction {tuple(recon.shape)} differ in shape")
        diff = x.float() - recon.float()
        l1, l2 = diff.abs(), diff.square()
        rec = self.l1_weight * l1 + self.l2_weight * l2
        nll = rec if self.logvar is None else rec / torch.exp(self.logvar) + self.logvar
        batch = x.shape[0]
        nll_loss = nll.sum() / batch
        mean, logvar = torch.chunk(moments, 2, dim=1)
        kl_loss = kl_divergence(mean, logvar).sum() / batch
        loss = nll_loss + self.kl_weight * kl_loss
        metrics = {
            "nll": float(nll_loss.detach()), "kl": float(kl_loss.detach()), "l1": float(l1.detach().mean()),
            "mse": float(l2.detach().mean()), "logvar": float(self.logvar.detach()) if self.logvar is not None else 0.0,
        }
        return loss, metrics


def diffusion_loss(
    eps_hat: Sequence[Tensor], eps: Sequence[Tensor], weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The COP-GEN ε-prediction loss over modalities.

    Parameters
    ----------
    eps_hat, eps:
        Per modality, (B, C, H, W) prediction and true noise, same order and shapes.
    weights:
        (B, M) per-(sample, modality) weight, or None for all ones. The batch mean always divides by
        B, so zero weights lower the loss instead of re-weighting the others.

    Returns
    -------
    loss, per_modality
        Scalar float32 ``mean_b Σ_m w_bm mse_bm``, and (M,) float32 ``mean_b mse_bm`` (unweighted,
        detached) for logging.

    Raises
    ------
    ValueError
        On mismatched lengths or shapes.
    """
    if len(eps_hat) != len(eps) or not eps:
        raise ValueError(f"need one prediction per noise tensor, got {len(eps_hat)} and {len(eps)}")
    per_sample = []
    for i, (pred, true) in enumerate(zip(eps_hat, eps, strict=True)):
        if pred.shape != true.shape:
            raise ValueError(f"modality {i}: prediction {tuple(pred.shape)} and noise {tuple(true.shape)} differ")
        per_sample.append((pred.float() - true.float()).square().flatten(1).mean(dim=1))
    mse = torch.stack(per_sample, dim=1)  # (B, M)
    if weights is not None:
        if weights.shape != mse.shape:
            raise ValueError(f"weights have shape {tuple(weights.shape)}, expected (B, M) = {tuple(mse.shape)}")
        weighted = mse * weights.to(mse)
    else:
        weighted = mse
    return weighted.sum(dim=1).mean(), mse.detach().mean(dim=0)
