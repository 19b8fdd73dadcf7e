"""The closed-form GeminiFusion equals the per-sample ``nn.MultiheadAttention`` form."""

import pytest
import torch

from geminifusion.fusion import GeminiFusion
from geminifusion.layers import ModalityLayerNorm
from plain_fusion import plain_fusion


def random_fusion(dim: int, heads: int, seed: int) -> GeminiFusion:
    torch.manual_seed(seed)
    fusion = GeminiFusion(dim, heads).double()
    with torch.no_grad():
        for p in fusion.parameters():  # far from init, so every term matters
            p.normal_(0, 0.5)
        fusion.judger_fc2.weight.mul_(3)
    return fusion


@pytest.mark.parametrize(
    "batch,tokens,dim,heads", [(1, 7, 16, 8), (3, 13, 32, 8), (2, 5, 24, 4), (2, 9, 64, 1)]
)
def test_fast_equals_plain_in_float64(batch, tokens, dim, heads):
    fusion = random_fusion(dim, heads, seed=tokens)
    x = torch.randn(2, batch, tokens, dim, dtype=torch.float64)
    with torch.no_grad():
        fast = fusion(x)
        plain = plain_fusion(fusion, x)
    assert fast.shape == x.shape
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-10)
    # Both directions really fuse: each output depends on the other stream.
    assert (fast - x).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_directions_are_not_interchangeable():
    fusion = random_fusion(16, 8, seed=0)
    x = torch.randn(2, 2, 5, 16, dtype=torch.float64)
    with torch.no_grad():
        swapped = fusion(x.flip(0)).flip(0)
        assert (swapped - fusion(x)).abs().max() > 1e-3


def test_gradients_reach_every_parameter():
    fusion = random_fusion(16, 8, seed=1)
    x = torch.randn(2, 2, 6, 16, dtype=torch.float64, requires_grad=True)
    fusion(x).square().sum().backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_rejects_wrong_shapes():
    fusion = GeminiFusion(16, 8)
    with pytest.raises(ValueError, match="expects"):
        fusion(torch.randn(3, 1, 4, 16))
    with pytest.raises(ValueError, match="expects"):
        fusion(torch.randn(2, 1, 4, 8))
    with pytest.raises(ValueError, match="divisible"):
        GeminiFusion(12, 8)


def test_modality_layernorm_equals_separate_norms():
    torch.manual_seed(0)
    norm = ModalityLayerNorm(3, 10).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    x = torch.randn(3, 2, 7, 10, dtype=torch.float64)
    out = norm(x)
    for m in range(3):
        plain = torch.nn.functional.layer_norm(x[m], (10,), norm.weight[m], norm.bias[m], 1e-6)
        torch.testing.assert_close(out[m], plain, rtol=0, atol=1e-12)


def test_runs_under_autocast_close_to_float32():
    fusion = GeminiFusion(32, 8)
    x = torch.randn(2, 2, 9, 32)
    with torch.no_grad():
        full = fusion(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fusion(x)
    assert low.shape == full.shape
    torch.testing.assert_close(low.float(), full, rtol=0.05, atol=0.05)
