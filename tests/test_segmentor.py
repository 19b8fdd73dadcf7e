"""Segmentor behaviour: shapes, odd sizes, single modality, errors, fast == plain end to end."""

from __future__ import annotations

import pytest
import torch

import geminifusion as gf
from geminifusion.testing import swap_in_plain_fusion
from model_helpers import randomise

TINY = gf.MiTConfig(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 5, 8))


def test_public_contract_config_build():
    model = gf.build_segmentor(
        gf.MiTConfig(
            embed_dims=(32, 64, 160, 256),
            depths=(2, 2, 2, 2),
            num_heads=(1, 2, 5, 8),
            sr_ratios=(8, 4, 2, 1),
        ),
        num_classes=40,
    )
    assert sum(p.numel() for p in model.parameters()) == 5_863_562  # = mit_b0
    assert model.output_names == ["rgb", "depth", "ensemble"]


@pytest.mark.parametrize("size", [(65, 97), (32, 33), (64, 96)])
def test_odd_sizes_forward_and_backward(size):
    model = gf.build_segmentor(TINY, num_classes=5)
    x = [torch.randn(2, 3, *size), torch.rand(2, 3, *size)]
    outputs = model(x)
    expected = (2, 5, -(-size[0] // 4), -(-size[1] // 4))
    assert [tuple(o.shape) for o in outputs] == [expected] * 3
    (outputs[0].sum() + outputs[1].sum()).backward()
    fusion = model.backbone.block1[0].attn.fusion
    assert fusion.in_proj_weight.grad.abs().sum() > 0
    assert model.alpha.grad is None  # the ensemble sees detached logits, as in the reference


def test_ensemble_is_alpha_weighted_sum():
    model = randomise(gf.build_segmentor(TINY, num_classes=3)).eval()
    x = [torch.randn(1, 3, 40, 48), torch.rand(1, 3, 40, 48)]
    with torch.no_grad():
        rgb, depth, ens = model(x)
    w = torch.softmax(model.alpha, 0)
    torch.testing.assert_close(ens, w[0] * rgb + w[1] * depth)


def test_single_modality_is_plain_segformer():
    model = gf.build_segmentor("mit_b0", num_classes=7, modalities=("rgb",))
    assert not any("fusion" in k for k in model.state_dict())
    assert not hasattr(model, "alpha")
    outputs = model([torch.randn(1, 3, 64, 64)])
    assert len(outputs) == 1 and outputs[0].shape == (1, 7, 16, 16)
    assert model.output_names == ["rgb"]


def test_fast_model_equals_plain_fusion_model_in_float64():
    model = randomise(gf.build_segmentor(TINY, num_classes=4)).double().eval()
    x = [torch.randn(2, 3, 37, 45, dtype=torch.float64) for _ in range(2)]
    with torch.no_grad():
        fast = model(x)
        plain = swap_in_plain_fusion(model)(x)
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_dict_and_stacked_inputs():
    model = gf.build_segmentor(TINY, num_classes=3).eval()
    rgb, depth = torch.randn(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = model([rgb, depth])[2]
        b = model({"depth": depth, "rgb": rgb})[2]
        c = model(torch.stack([rgb, depth]))[2]
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize(
    "inputs,message",
    [
        ([torch.randn(1, 3, 64, 64)], "takes 2 inputs"),
        ([torch.randn(1, 3, 64, 64)] * 3, "takes 2 inputs"),
        ([torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 72)], "same size"),
        ([torch.randn(1, 3, 64, 64), torch.randn(1, 1, 64, 64)], "3 channels"),
        ([torch.randn(3, 64, 64), torch.randn(3, 64, 64)], "B x 3 x H x W"),
        ([torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)], "at least 32"),
        ({"rgb": torch.randn(1, 3, 64, 64)}, "missing modalities"),
    ],
)
def test_bad_inputs_raise_clear_errors(inputs, message):
    model = gf.build_segmentor(TINY, num_classes=3)
    with pytest.raises(ValueError, match=message):
        model(inputs)


def test_bad_architecture_and_classes():
    with pytest.raises(ValueError, match="unknown architecture"):
        gf.build_segmentor("mit_b9", num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        gf.build_segmentor("mit_b0", num_classes=0)
    with pytest.raises(ValueError, match="4 values"):
        gf.MiTConfig(embed_dims=(32, 64, 160))


def test_checkpoint_errors_name_the_problem(tmp_path):
    model = gf.build_segmentor(TINY, num_classes=3)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        gf.load_reference_checkpoint(model, tmp_path / "nothing.pth")

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth: not a readable PyTorch checkpoint"):
        gf.load_reference_checkpoint(model, garbage)

    # Another class count: shapes named, and the hint says why.
    other = gf.build_segmentor(TINY, num_classes=5)
    path = tmp_path / "five.pth"
    sd = {"module." + k: v for k, v in gf.to_reference_state_dict(other).items()}
    torch.save({"segmenter": sd, "epoch_start": 1}, path)
    with pytest.raises(ValueError, match=r"linear_pred.weight \(5, 256, 1, 1\)") as err:
        gf.load_reference_checkpoint(model, path)
    assert "predicts 5 classes, the model 3" in str(err.value)

    # A checkpoint of a different architecture: missing and unexpected keys, by name.
    path = tmp_path / "b0.pth"
    torch.save({"segmenter": gf.to_reference_state_dict(gf.build_segmentor("mit_b0", 3))}, path)
    with pytest.raises(ValueError, match="shape mismatches") as err:
        gf.load_reference_checkpoint(model, path)
    assert "encoder.patch_embed1.proj.module.weight" in str(err.value)

    # Our own state dict is not the reference format.
    path = tmp_path / "ours.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="missing keys") as err:
        gf.load_reference_checkpoint(model, path)
    assert "unexpected keys: backbone." in str(err.value)

    path = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(ValueError, match="no model weights"):
        gf.load_reference_checkpoint(model, path)


def test_round_trip_preserves_outputs(tmp_path):
    model = randomise(gf.build_segmentor(TINY, num_classes=3)).eval()
    path = tmp_path / "ref.pth"
    torch.save({"segmenter": gf.to_reference_state_dict(model)}, path)
    fresh = gf.build_segmentor(TINY, num_classes=3).eval()
    gf.load_reference_checkpoint(fresh, path)
    x = [torch.randn(1, 3, 48, 40), torch.rand(1, 3, 48, 40)]
    with torch.no_grad():
        for a, b in zip(model(x), fresh(x), strict=True):
            assert torch.equal(a, b)


def _head_and_plain_form():
    from geminifusion.head import SegFormerHead

    torch.manual_seed(0)
    head = randomise(SegFormerHead((8, 16, 24, 32), num_classes=5, embed_dim=12)).double()
    sizes = [(17, 23), (9, 12), (5, 6), (3, 3)]
    feats = [
        torch.randn(2, c, *s, dtype=torch.float64)
        for c, s in zip((8, 16, 24, 32), sizes, strict=True)
    ]

    def plain() -> torch.Tensor:  # the reference's form: embed, upsample, concatenate, fuse
        embedded = []
        for i in (3, 2, 1, 0):
            proj = getattr(head, f"linear_c{i + 1}").proj
            x = torch.einsum("bchw,ec->behw", feats[i], proj.weight) + proj.bias[:, None, None]
            embedded.append(torch.nn.functional.interpolate(x, size=sizes[0], mode="bilinear"))
        return head.linear_pred(head.linear_fuse(torch.cat(embedded, dim=1)))

    return head, feats, plain


def test_folded_head_equals_concatenating_head_in_float64():
    """The head folds its fuse convolution (and a fixed BatchNorm) into the stage embeddings."""
    head, feats, plain = _head_and_plain_form()
    with torch.no_grad():
        torch.testing.assert_close(head.eval()(feats), plain(), rtol=0, atol=1e-10)
        head.train()  # batch statistics: the BatchNorm cannot fold
        head.dropout.eval()
        torch.testing.assert_close(head(feats), plain(), rtol=0, atol=1e-10)


def test_folded_head_trains_like_the_plain_form_with_frozen_batchnorm():
    head, feats, plain = _head_and_plain_form()
    head.train()
    head.linear_fuse.bn.eval()  # what freeze_bn does: fixed statistics, trained affine
    head.dropout.eval()
    grads = []
    for fn in (lambda: head(feats), plain):
        head.zero_grad()
        fn().square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in head.named_parameters()})
    assert grads[0]["linear_fuse.bn.weight"].abs().sum() > 0
    for name in grads[1]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=1e-9)


def test_whole_model_runs_under_autocast():
    model = gf.build_segmentor(TINY, num_classes=3).eval()
    x = [torch.randn(1, 3, 40, 48), torch.rand(1, 3, 40, 48)]
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    for a, b in zip(low, full, strict=True):
        torch.testing.assert_close(a.float(), b, rtol=0.1, atol=0.1)
