"""Swin backbones: reference parity (swin_mini_sun), official key layouts, odd sizes, twins."""

from __future__ import annotations

import pytest
import torch

import geminifusion as gf
from geminifusion.backbones.swin import SWIN_VARIANTS, SwinTransformer, WindowAttention
from geminifusion.checkpoints import from_reference_state_dict, read_checkpoint, unwrap_state_dict
from geminifusion.testing import plain_window_attention, swap_in_plain_fusion
from model_helpers import randomise

MINI_SUN = gf.SwinConfig(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7)
# Narrow, but with a shifted block in every stage.
TINY = gf.SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7)
TINY12 = gf.SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=12)


# --------------------------------------------------------------------------- plain twin


@pytest.mark.parametrize(
    ("window", "shift", "size"),
    [(7, 0, (25, 33)), (7, 3, (25, 33)), (7, 3, (4, 5)), (12, 6, (30, 41)), (12, 6, (12, 24))],
)
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_window_attention_matches_plain_reference_form(window, shift, size, use_sdpa, monkeypatch):
    monkeypatch.setattr(WindowAttention, "use_sdpa", use_sdpa)
    torch.manual_seed(0)
    attn = randomise(WindowAttention(16, 2, window, shift)).double()
    with torch.no_grad():
        attn.relative_position_bias_table.mul_(5)  # a bias large enough to matter
    x = torch.randn(3, *size, 16, dtype=torch.float64)
    torch.testing.assert_close(attn(x), plain_window_attention(attn, x), rtol=0, atol=1e-12)


def test_window_layout_round_trip():
    attn = WindowAttention(8, 1, 12, 6)
    x = torch.arange(2 * 30 * 41, dtype=torch.float64).view(2, 30, 41, 1)
    layout = attn.layout(x)
    assert layout.gather.numel() == 2 * 36 * 48
    assert [count for count, _ in layout.groups] == [2 * 6, 2 * 2, 2 * 3, 2 * 1]
    flat = x.flatten()
    assert torch.equal(flat[layout.gather][layout.scatter], flat)
    padded = torch.ones(layout.gather.numel(), dtype=torch.bool)
    padded[layout.padding] = False
    assert padded.sum() == x.numel()
    assert layout.groups[0][1] is None and all(m.shape == (144, 144) for _, m in layout.groups[1:])


# ------------------------------- reference checkpoints (parity itself: tests/test_parity.py)


@pytest.fixture(scope="module")
def mini_sun():
    return gf.build_segmentor(MINI_SUN, num_classes=37).eval()


def test_position_index_is_checked_not_loaded(mini_sun, reference_dir):
    model = mini_sun
    theirs = unwrap_state_dict(read_checkpoint(reference_dir / "swin_mini_sun.pth"))
    key = "encoder.body.layers.2.blocks.1.attn.module.relative_position_index"
    theirs[key] = theirs[key].flip(0)
    with pytest.raises(ValueError, match="window geometry"):
        from_reference_state_dict(model, theirs)
    del theirs[key]
    with pytest.raises(ValueError, match="missing keys: " + key):
        from_reference_state_dict(model, theirs)


def test_window12_checkpoint_does_not_fit_window7(reference_dir):
    theirs = unwrap_state_dict(read_checkpoint(reference_dir / "swin_mini_sun.pth"))
    model = gf.build_segmentor(
        gf.SwinConfig(32, (2, 2, 2, 2), (1, 2, 4, 8), window_size=12), num_classes=37
    )
    with pytest.raises(ValueError, match="relative_position_bias_table"):
        from_reference_state_dict(model, theirs)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize(
    ("config", "batch", "size"),
    [
        (TINY, 2, (33, 45)),  # no side a multiple of 4, 7 or 32
        (TINY, 1, (50, 70)),
        (TINY, 1, (32, 32)),
        (TINY12, 2, (61, 97)),
        (TINY12, 1, (99, 38)),
    ],
)
def test_odd_sizes_forward_and_backward(config, batch, size):
    model = gf.build_segmentor(config, num_classes=5)
    x = [torch.randn(batch, 3, *size), torch.rand(batch, 3, *size)]
    outputs = model(x)
    expected = (batch, 5, -(-size[0] // 4), -(-size[1] // 4))
    assert [tuple(o.shape) for o in outputs] == [expected] * 3
    (outputs[0].sum() + outputs[1].sum()).backward()
    for stage in model.backbone.layers:
        for block in stage.blocks:
            assert block.fusion.in_proj_weight.grad.abs().sum() > 0
            assert block.attn.relative_position_bias_table.grad.abs().sum() > 0
    assert model.backbone.patch_embed.norm.weight.grad[1].abs().sum() > 0
    assert model.alpha.grad is None


def test_window12_shift6_model_equals_plain_forms_in_float64(monkeypatch):
    # Milder than the default: at 0.3 the logits reach hundreds and fp64 rounding shows.
    model = randomise(gf.build_segmentor(TINY12, num_classes=4), scale=0.1).double().eval()
    blocks = [b for stage in model.backbone.layers for b in stage.blocks]
    assert [b.attn.shift_size for b in blocks[:2]] == [0, 6]
    gen = torch.Generator().manual_seed(0)
    x = [torch.randn(1, 3, 70, 50, generator=gen, dtype=torch.float64) for _ in range(2)]
    with torch.no_grad():
        fast = model(x) + model.forward_features(x)
        monkeypatch.setattr(WindowAttention, "use_sdpa", False)
        swap_in_plain_fusion(model)
        plain = model(x) + model.forward_features(x)
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_norms_per_modality_only_where_the_reference_has_them():
    model = gf.build_segmentor(TINY, num_classes=3)
    backbone = model.backbone
    per_modality = {n for n, p in backbone.named_parameters() if p.dim() >= 1 and p.shape[0] == 2}
    norms = {n.rsplit(".", 1)[0] for n in per_modality if "norm" in n}
    assert norms == {"patch_embed.norm", "norm0", "norm1", "norm2", "norm3"}
    assert all(backbone.get_submodule(n).eps == 1e-6 for n in norms)
    block = backbone.layers[0].blocks[0]
    assert block.norm1.eps == block.norm2.eps == backbone.layers[0].downsample.norm.eps == 1e-5
    assert all(b.fusion.num_heads == 8 for s in backbone.layers for b in s.blocks)


def test_single_modality_is_plain_swin():
    model = gf.build_segmentor(TINY, num_classes=7, modalities=("rgb",))
    assert not any("fusion" in k for k in model.state_dict())
    outputs = model([torch.randn(1, 3, 64, 80)])
    assert len(outputs) == 1 and outputs[0].shape == (1, 7, 16, 20)


def test_named_variants_and_config_checks():
    assert gf.VARIANTS["swin_large_window12"].window_size == 12
    assert SWIN_VARIANTS["swin_tiny"].embed_dims == (96, 192, 384, 768)
    with pytest.raises(ValueError, match="4 values"):
        gf.SwinConfig(depths=(2, 2, 6))
    with pytest.raises(ValueError, match="not divisible by 5 heads"):
        gf.SwinConfig(embed_dim=96, num_heads=(5, 6, 12, 24))
    # Zero heads: a named error, not a ZeroDivisionError from the divisibility check.
    with pytest.raises(ValueError, match=r"SwinConfig.num_heads must be positive"):
        gf.SwinConfig(num_heads=(0, 6, 12, 24))
    with pytest.raises(ValueError, match=r"SwinConfig.fusion_heads must be positive"):
        gf.SwinConfig(fusion_heads=0)
    with pytest.raises(ValueError, match=r"MiTConfig.num_heads must be positive"):
        gf.MiTConfig(num_heads=(0, 2, 5, 8))
    with pytest.raises(ValueError, match="1 or 2 streams"):
        SwinTransformer(TINY, num_modalities=3)


def test_reference_names():
    with torch.device("meta"):
        backbone = SwinTransformer(TINY)
    name = backbone.reference_name
    assert name("patch_embed.proj.weight") == "patch_embed.proj.module.weight"
    assert name("layers.0.blocks.1.attn.qkv.bias") == "layers.0.blocks.1.attn.module.qkv.bias"
    assert name("layers.1.blocks.0.norm2.weight") == "layers.1.blocks.0.norm2.module.weight"
    assert name("layers.3.blocks.1.mlp.fc2.bias") == "layers.3.blocks.1.mlp.fc2.module.bias"
    assert name("layers.2.downsample.norm.bias") == "layers.2.downsample.module.norm.bias"


def test_training_after_inference_mode_reuses_cached_layouts():
    """Layouts and position indices cached under inference_mode must still serve autograd."""
    from geminifusion.backbones import swin

    swin.window_layout.cache_clear()
    swin._cached_position_index.cache_clear()
    model = gf.build_segmentor(TINY, num_classes=3)
    x = [torch.randn(1, 3, 40, 56), torch.rand(1, 3, 40, 56)]
    with torch.inference_mode():
        model.eval()(x)  # evaluation first fills the caches
    model.train()
    sum(out.sum() for out in model(x)).backward()
    assert model.backbone.layers[0].blocks[0].attn.qkv.weight.grad.abs().sum() > 0
