"""The VAE's optional linear block shortcut and its block-PCA start (copgen_core.vae)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from copgen_core.checkpoints import load_vae, save_vae
from copgen_core.presets import vae_preset
from copgen_core.vae import (
    KLVAE,
    VAEConfig,
    cell_edge_ratio,
    init_block_pca,
    noise_edge_ratio,
    refit_synthesis,
)

KEY = "S2L2A_B02_B03_B04_B08"


def _images(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth correlated 4-band fields plus fine texture: structure that a rank-8 block code only partly holds."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.randn(n, 1, size // 8, size // 8, generator=g), size=size, mode="bilinear",
                           align_corners=False)
    fine = 0.3 * torch.randn(n, 1, size, size, generator=g)
    gains = torch.tensor([0.5, 0.6, 0.7, 1.2]).view(1, 4, 1, 1)
    return (gains * (coarse + fine) + 0.05 * torch.randn(n, 4, size, size, generator=g)).float()


def _shortcut_vae(seed: int = 0) -> KLVAE:
    torch.manual_seed(seed)
    return KLVAE(VAEConfig(**{**vae_preset("tiny", KEY).to_dict(), "shortcut": True}))


def test_official_architecture_has_no_shortcut_parameters() -> None:
    vae = KLVAE(vae_preset("tiny", KEY))
    assert vae.shortcut_in is None and vae.shortcut_out is None
    assert not any(k.startswith("shortcut") for k in vae.state_dict())


def test_data_free_start_is_block_averaging_on_the_first_channels() -> None:
    vae = _shortcut_vae()
    x = _images()
    mean = torch.chunk(vae.moments(x), 2, dim=1)[0]
    encoder_part = torch.chunk(vae.quant_conv(vae.encoder(x)), 2, dim=1)[0]
    # the shortcut adds exactly the 8x8 block means of the four bands to latent channels 0-3, nothing to 4-7
    torch.testing.assert_close(mean[:, :4] - encoder_part[:, :4], F.avg_pool2d(x, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(mean[:, 4:], encoder_part[:, 4:])


def _edge_ratio(y: torch.Tensor) -> float:
    """Mean |difference| between horizontal neighbours across the 8 px cell edges over all neighbours."""
    dx = (y[..., :, 1:] - y[..., :, :-1]).abs()
    return float(dx[..., 7::8].mean() / dx.mean())


def test_shortcut_start_beats_the_block_pca_code() -> None:
    x = _images(8, size=64)
    vae = _shortcut_vae()
    lam = init_block_pca(vae, x, smooth=0.0)
    assert lam.shape == (8,) and bool((lam[:-1] >= lam[1:]).all())
    with torch.no_grad():
        mean, logvar = torch.chunk(vae.moments(x), 2, dim=1)
        recon = vae.decode_unscaled(mean)
    # whitened block-PCA analysis: every latent channel has unit variance over the blocks it was fitted on
    np.testing.assert_allclose(mean.double().transpose(0, 1).reshape(8, -1).var(dim=1).numpy(), 1.0, atol=1e-3)
    assert torch.allclose(logvar, torch.full_like(logvar, -10.0))
    # the reference: rank-8 PCA of the 256-value blocks with a block synthesis, computed with numpy
    blocks = F.unfold(x.double(), 8, stride=8).transpose(1, 2).reshape(-1, 256).numpy()
    mu = blocks.mean(0)
    _, _, vt = np.linalg.svd(blocks - mu, full_matrices=False)
    inner = F.unfold(x[..., 8:-8, 8:-8].double(), 8, stride=8).transpose(1, 2).reshape(-1, 256).numpy()
    ref_mse = float((((inner - mu) @ vt[:8].T @ vt[:8] + mu - inner) ** 2).mean())
    # the lapped least-squares synthesis contains the block one (fitted on the interior cells)
    mse = float(((recon - x)[..., 8:-8, 8:-8].double() ** 2).mean())
    assert mse <= 1.02 * ref_mse, (mse, ref_mse)
    naive = float(((F.interpolate(F.avg_pool2d(x, 8), scale_factor=8) - x)[..., 8:-8, 8:-8] ** 2).mean())
    assert mse < 0.8 * naive


def test_smoothness_keeps_decoded_noise_latents_free_of_cell_edges() -> None:
    x = _images(8, size=64)
    noise = torch.randn(4, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    ratios = {}
    for smooth in (0.0, 0.05, 0.5):
        vae = _shortcut_vae()
        init_block_pca(vae, x, smooth=smooth)
        with torch.no_grad():
            ratios[smooth] = _edge_ratio(vae.decode_unscaled(noise))
    # cell edges of latents that encode no image are rough without the penalty and get smoother with it
    assert ratios[0.0] > ratios[0.05] > ratios[0.5]
    assert ratios[0.5] < 1.3


def test_block_pca_needs_a_shortcut_vae() -> None:
    with pytest.raises(ValueError, match="shortcut=True"):
        init_block_pca(KLVAE(vae_preset("tiny", KEY)), _images())


def test_shortcut_vae_saves_and_loads_with_its_config(tmp_path: Path) -> None:
    vae = _shortcut_vae()
    init_block_pca(vae, _images())
    vae.scale_factor = 0.9
    save_vae(vae, tmp_path / "v", KEY)
    back = load_vae(tmp_path / "v", KEY)
    assert back.config.shortcut and back.shortcut_in is not None
    x = _images(2, seed=1)
    torch.testing.assert_close(back(x), vae(x))


def test_refit_restores_a_drifted_synthesis_and_leaves_the_encoder_alone() -> None:
    x = _images(8, size=64)
    noise = torch.randn(4, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    vae = _shortcut_vae()
    init_block_pca(vae, x, smooth=0.05)
    with torch.no_grad():
        start_edges = _edge_ratio(vae.decode_unscaled(noise))
        moments = vae.moments(x)
    refit_synthesis(vae, x, smooth=0.0)  # what training does: fit the data, whatever the cell edges look like
    with torch.no_grad():
        drifted_edges = _edge_ratio(vae.decode_unscaled(noise))
    refit_synthesis(vae, x, smooth=0.05)
    with torch.no_grad():
        assert torch.equal(vae.moments(x), moments)  # the latent space (what a backbone learned) is unchanged
        assert drifted_edges > 1.2 * start_edges
        assert _edge_ratio(vae.decode_unscaled(noise)) == pytest.approx(start_edges, rel=0.05)


def test_refit_needs_a_shortcut_vae() -> None:
    with pytest.raises(ValueError, match="shortcut=True"):
        refit_synthesis(KLVAE(vae_preset("tiny", KEY)), _images(size=32))


def test_cell_edge_ratio_sees_a_block_grid_and_not_a_smooth_ramp() -> None:
    ramp = torch.arange(32.0).view(1, 1, 32).expand(1, 32, 32)
    assert cell_edge_ratio(ramp, 8) == pytest.approx(1.0)
    blocky = F.interpolate(torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0)), scale_factor=8)
    assert cell_edge_ratio(blocky + 0.01 * ramp, 8) > 50  # steps only at the cell edges


def test_edge_weight_removes_the_cell_grid_at_less_cost_than_uniform_smoothness() -> None:
    x = _images(8, size=64)
    vae = _shortcut_vae()
    init_block_pca(vae, x, smooth=0.0)
    plain = refit_synthesis(vae, x, smooth=0.002)
    assert plain.edge_weight == 1.0 and plain.noise_edge_ratio > 1.2  # the data alone leaves a visible grid
    weighted = refit_synthesis(vae, x, smooth=0.002, edge_weight=8.0)
    with torch.no_grad():
        mse_weighted = float(((vae(x) - x)[..., 8:-8, 8:-8] ** 2).mean())
    assert weighted.noise_edge_ratio < plain.noise_edge_ratio - 0.1
    assert weighted.noise_edge_ratio == pytest.approx(noise_edge_ratio(vae))
    # a uniform smoothness that reaches the same noise edge ratio costs more reconstruction
    for smooth in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0):
        uniform = refit_synthesis(vae, x, smooth=smooth)
        if uniform.noise_edge_ratio <= weighted.noise_edge_ratio:
            break
    else:
        pytest.fail("no uniform smoothness reached the weighted fit's edge ratio")
    with torch.no_grad():
        mse_uniform = float(((vae(x) - x)[..., 8:-8, 8:-8] ** 2).mean())
    assert mse_weighted < mse_uniform


def test_auto_edge_weight_hits_the_target_ratio() -> None:
    x = _images(8, size=64)
    vae = _shortcut_vae()
    init_block_pca(vae, x, smooth=0.0)
    fit = refit_synthesis(vae, x, smooth=0.002, edge_weight=None, target=1.0)
    assert 1.0 < fit.edge_weight < 256.0
    assert fit.noise_edge_ratio == pytest.approx(1.0, abs=0.01)
    assert noise_edge_ratio(vae) == pytest.approx(fit.noise_edge_ratio)
    # an easy target needs no extra weight
    easy = refit_synthesis(vae, x, smooth=0.002, edge_weight=None, target=10.0)
    assert easy.edge_weight == 1.0


def test_refit_refuses_bad_edge_settings() -> None:
    vae = _shortcut_vae()
    x = _images(2, size=32)
    with pytest.raises(ValueError, match="edge_weight must be >= 1"):
        refit_synthesis(vae, x, edge_weight=0.5)
    with pytest.raises(ValueError, match="smooth > 0"):
        refit_synthesis(vae, x, smooth=0.0, edge_weight=None)
