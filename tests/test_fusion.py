"""The closed-form GeminiFusion equals the per-sample ``nn.MultiheadAttention`` form."""

import pytest
import torch

from geminifusion.fusion import GeminiFusion
from geminifusion.layers import ModalityLayerNorm
from geminifusion.testing import plain_fusion


def random_fusion(dim: int, heads: int, seed: int) -> GeminiFusion:
    torch.manual_seed(seed)
    fusion = GeminiFusion(dim, heads).double()
    with torch.no_grad():
        for p in fusion.parameters():  # far from init, so every term matters
            p.normal_(0, 0.5)
        fusion.judger_fc2.weight.mul_(3)
    return fusion


@pytest.mark.parametrize(
    "batch,tokens,dim,heads",
    [(1, 7, 16, 8), (3, 13, 32, 8), (2, 5, 24, 4), (2, 9, 64, 1), (2, 11, 96, 8)],
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


def test_cached_weights_follow_in_place_changes_and_reloads():
    fusion = random_fusion(16, 8, seed=2)
    other = random_fusion(16, 8, seed=3)
    x = torch.randn(2, 2, 5, 16, dtype=torch.float64)
    with torch.inference_mode():
        fusion(x)  # fills the cache
    with torch.no_grad():
        fusion.in_proj_weight[1, -16:].mul_(2)  # value weights of direction 1, in place
        torch.testing.assert_close(fusion(x), plain_fusion(fusion, x), rtol=0, atol=1e-10)
        fusion.load_state_dict(other.state_dict())
        torch.testing.assert_close(fusion(x), other(x), rtol=0, atol=0)


def test_module_built_under_inference_mode_is_never_stale():
    with torch.inference_mode():  # parameters without version counters
        fusion = random_fusion(16, 8, seed=5)
        x = torch.randn(2, 1, 6, 16, dtype=torch.float64)
        fusion(x)
        fusion.v_noise.mul_(3)
        torch.testing.assert_close(fusion(x), plain_fusion(fusion, x), rtol=0, atol=1e-10)


def test_training_after_inference_gets_gradients():
    fusion = random_fusion(16, 8, seed=4)
    x = torch.randn(2, 1, 6, 16, dtype=torch.float64)
    with torch.inference_mode():
        cached = fusion(x)
    out = fusion(x)  # grad mode: the folded weights are rebuilt inside autograd
    torch.testing.assert_close(out.detach(), cached, rtol=0, atol=0)
    out.sum().backward()
    assert fusion.in_proj_weight.grad.abs().sum() > 0
    assert fusion.judger_fc1.weight.grad.abs().sum() > 0


def test_autocast_does_not_leave_low_precision_weights_behind():
    fusion = GeminiFusion(32, 8)
    x = torch.randn(2, 2, 9, 32)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fusion(x)  # fills the cache under autocast
        after = fusion(x)
        fusion._folded = None
        fresh = fusion(x)
    assert after.dtype == torch.float32
    torch.testing.assert_close(after, fresh, rtol=0, atol=0)
