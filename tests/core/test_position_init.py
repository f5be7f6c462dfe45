"""The ground-position initialisation of the backbone's positional embedding (training from scratch)."""

from __future__ import annotations

import copy

import torch

from copgen_core.backbone import CopgenBackbone
from copgen_core.presets import backbone_preset
from copgen_core.training.init import align_positions_, mimetic_attention_, position_code


def _rows(model: CopgenBackbone, key: str) -> torch.Tensor:
    offset = len(model.modalities)
    for m in model.modalities:
        count = 3 if m.is_scalar else (m.latent_shape[1] // m.patch_size) ** 2
        if m.key == key:
            return model.pos_embed[0, offset:offset + count]
        offset += count
    raise KeyError(key)


def test_code_is_shared_by_ground_position_across_resolutions() -> None:
    fine, coarse = position_code(12, 64, 6.0), position_code(6, 64, 6.0)
    assert fine.shape == (144, 64) and coarse.shape == (36, 64)
    assert torch.allclose(fine.pow(2).mean(1), torch.ones(144), atol=0.3)
    # coarse token (i, j) covers fine tokens (2i..2i+1, 2j..2j+1): its code is closer to theirs than to others'
    sim = coarse @ fine.T
    fine_ij = torch.arange(144).reshape(12, 12)
    for i, j in [(0, 0), (2, 3), (5, 5)]:
        best = int(sim[i * 6 + j].argmax())
        assert best in fine_ij[2 * i:2 * i + 2, 2 * j:2 * j + 2].flatten().tolist()


def test_align_positions_adds_the_code_to_image_tokens_only() -> None:
    torch.manual_seed(0)
    model = CopgenBackbone(backbone_preset("tiny"))
    before = copy.deepcopy(model)
    align_positions_(model, 0.5)
    assert torch.equal(model.pos_embed[0, :12], before.pos_embed[0, :12])  # time tokens untouched
    for key in ("3d_cartesian_lat_lon", "mean_timestamps"):
        assert torch.equal(_rows(model, key), _rows(before, key))
    assert not torch.equal(_rows(model, "DEM_DEM"), _rows(before, "DEM_DEM"))
    lulc, s2 = _rows(model, "LULC_LULC"), _rows(model, "S2L2A_B02_B03_B04_B08")
    # the same ground position gets nearly the same row in two modalities; other positions do not
    cos = torch.nn.functional.cosine_similarity(lulc.unsqueeze(1), s2.unsqueeze(0), dim=-1)
    assert bool((cos.argmax(1) == torch.arange(lulc.shape[0])).all())
    assert set(model.state_dict()) == set(CopgenBackbone(backbone_preset("tiny")).state_dict())


def test_mimetic_attention_makes_each_head_a_similarity_search() -> None:
    torch.manual_seed(0)
    model = CopgenBackbone(backbone_preset("tiny"))
    v_before = model.in_blocks[0].attn.qkv.weight[256:].clone()
    mimetic_attention_(model, 3.0)
    d, h = model.config.embed_dim, model.config.num_heads
    dh = d // h
    for block in [*model.in_blocks, model.mid_block, *model.out_blocks]:
        w = block.attn.qkv.weight
        for head in range(h):
            q, k = w[head * dh:(head + 1) * dh], w[d + head * dh:d + (head + 1) * dh]
            assert torch.equal(q, k)
            assert torch.allclose(q @ q.T, 3.0 * torch.eye(dh), atol=1e-5)  # sqrt(3) x orthonormal rows
    assert torch.equal(model.in_blocks[0].attn.qkv.weight[256:], v_before)  # values untouched
    # a token's logits peak on itself: attention starts as a similarity search
    x = torch.randn(10, d)
    w = model.in_blocks[0].attn.qkv.weight
    logits = (x @ w[:dh].T) @ (x @ w[d:d + dh].T).T
    assert bool((logits.argmax(1) == torch.arange(10)).all())
