"""Pretrained backbones in: original SegFormer / Swin ImageNet files and transformers checkpoints.

The original-format files are written here from the published key layouts (independently of the
package's naming code); the transformers checkpoints are random models built offline from a
config and saved with ``save_pretrained``. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import geminifusion as gf
from geminifusion.layers import ModalityLayerNorm
from geminifusion.weights.formats import detect_format, resize_position_bias
from geminifusion.weights.pretrained import group_names

# A small MiT whose widths take the 8 GeminiFusion heads, so one config serves 1 and 2 streams.
TINY_MIT = dict(embed_dims=(16, 32, 48, 64), depths=(2, 1, 1, 2), num_heads=(1, 2, 3, 4))


def _fill(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("relative_position_index"):
            side = int(shape[0] ** 0.5)
            out[key] = torch.randint(0, (2 * side - 1) ** 2, shape, generator=gen)
        elif "norm" in key and key.endswith("weight"):
            out[key] = torch.rand(shape, generator=gen) * 0.8 + 0.6
        else:
            out[key] = torch.randn(shape, generator=gen) * (0.5 if len(shape) == 1 else 0.2)
    return out


def segformer_imagenet_state(
    dims: Sequence[int],
    depths: Sequence[int],
    sr_ratios: Sequence[int],
    mlp_ratio: int = 4,
    classes: int = 1000,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """An original SegFormer ImageNet state dict (``patch_embed1.proj.weight`` ... ``head``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    prev = 3
    for s, (c, depth, sr) in enumerate(zip(dims, depths, sr_ratios, strict=True), start=1):
        k = 7 if s == 1 else 3
        hidden = c * mlp_ratio
        shapes |= {
            f"patch_embed{s}.proj.weight": (c, prev, k, k),
            f"patch_embed{s}.proj.bias": (c,),
            f"patch_embed{s}.norm.weight": (c,),
            f"patch_embed{s}.norm.bias": (c,),
        }
        for j in range(depth):
            b = f"block{s}.{j}."
            shapes |= {
                b + "norm1.weight": (c,),
                b + "norm1.bias": (c,),
                b + "attn.q.weight": (c, c),
                b + "attn.q.bias": (c,),
                b + "attn.kv.weight": (2 * c, c),
                b + "attn.kv.bias": (2 * c,),
                b + "attn.proj.weight": (c, c),
                b + "attn.proj.bias": (c,),
            }
            if sr > 1:
                shapes |= {
                    b + "attn.sr.weight": (c, c, sr, sr),
                    b + "attn.sr.bias": (c,),
                    b + "attn.norm.weight": (c,),
                    b + "attn.norm.bias": (c,),
                }
            shapes |= {
                b + "norm2.weight": (c,),
                b + "norm2.bias": (c,),
                b + "mlp.fc1.weight": (hidden, c),
                b + "mlp.fc1.bias": (hidden,),
                b + "mlp.dwconv.dwconv.weight": (hidden, 1, 3, 3),
                b + "mlp.dwconv.dwconv.bias": (hidden,),
                b + "mlp.fc2.weight": (c, hidden),
                b + "mlp.fc2.bias": (c,),
            }
        shapes |= {f"norm{s}.weight": (c,), f"norm{s}.bias": (c,)}
        prev = c
    shapes |= {"head.weight": (classes, dims[-1]), "head.bias": (classes,)}
    return _fill(shapes, seed)


def swin_imagenet_state(
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    window: int,
    patch: int = 4,
    classes: int = 1000,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """An original Swin ImageNet state dict (the ``model`` entry of the released files)."""
    n = window * window
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.weight": (embed_dim, 3, patch, patch),
        "patch_embed.proj.bias": (embed_dim,),
        "patch_embed.norm.weight": (embed_dim,),
        "patch_embed.norm.bias": (embed_dim,),
    }
    for s, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
        c = embed_dim * 2**s
        for j in range(depth):
            b = f"layers.{s}.blocks.{j}."
            shapes |= {
                b + "norm1.weight": (c,),
                b + "norm1.bias": (c,),
                b + "attn.relative_position_bias_table": ((2 * window - 1) ** 2, heads),
                b + "attn.relative_position_index": (n, n),
                b + "attn.qkv.weight": (3 * c, c),
                b + "attn.qkv.bias": (3 * c,),
                b + "attn.proj.weight": (c, c),
                b + "attn.proj.bias": (c,),
                b + "norm2.weight": (c,),
                b + "norm2.bias": (c,),
                b + "mlp.fc1.weight": (4 * c, c),
                b + "mlp.fc1.bias": (4 * c,),
                b + "mlp.fc2.weight": (c, 4 * c),
                b + "mlp.fc2.bias": (c,),
            }
            if j % 2:  # shifted blocks of the classification model keep their mask as a buffer
                shapes[b + "attn_mask"] = (4, n, n)
        if s < len(depths) - 1:
            shapes |= {
                f"layers.{s}.downsample.reduction.weight": (2 * c, 4 * c),
                f"layers.{s}.downsample.norm.weight": (4 * c,),
                f"layers.{s}.downsample.norm.bias": (4 * c,),
            }
    last = embed_dim * 2 ** (len(depths) - 1)
    shapes |= {
        "norm.weight": (last,),
        "norm.bias": (last,),
        "head.weight": (classes, last),
        "head.bias": (classes,),
    }
    return _fill(shapes, seed)


def randomize(module: nn.Module, seed: int = 0) -> None:
    """Random weights far from any initialisation (norm scales around 1, BN statistics too)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.8 + 0.6)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)


def mit_model(modalities: Sequence[str] = ("rgb",), classes: int = 5, **kw) -> nn.Module:
    config = gf.MiTConfig(**{**TINY_MIT, **kw})
    return gf.build_segmentor(config, classes, modalities=modalities, head_embed_dim=32).eval()


def fusion_keys(model: nn.Module) -> list[str]:
    return [k for k in model.state_dict() if ".fusion." in k]


# --------------------------------------------------------------------------- transformers SegFormer


@pytest.fixture(scope="module")
def hf_segformer(tmp_path_factory):
    """A random ``SegformerForSemanticSegmentation`` saved as a transformers folder."""
    transformers = pytest.importorskip("transformers")
    config = transformers.SegformerConfig(
        num_labels=5,
        hidden_sizes=list(TINY_MIT["embed_dims"]),
        depths=list(TINY_MIT["depths"]),
        num_attention_heads=list(TINY_MIT["num_heads"]),
        decoder_hidden_size=32,
    )
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    randomize(model, seed=1)
    folder = tmp_path_factory.mktemp("hf_segformer")
    model.save_pretrained(folder)
    return model, folder


def test_hf_segformer_logits_match_transformers(hf_segformer):
    """Same logits as transformers, up to the LayerNorm eps the two implementations use.

    transformers builds every SegFormer LayerNorm with the default eps 1e-5 (its config's
    ``layer_norm_eps`` is not used by the modules); this model keeps the reference's 1e-6. With
    the eps set equal the float64 outputs agree to rounding (1e-10). With each side's own eps,
    every norm's output moves by a relative ~(1e-5 - 1e-6) / (2 var) ~ 5e-6 for unit-variance
    tokens; through the ~20 norms of this model that is ~2e-5 on logits of scale 3 (measured:
    2.1e-5 in float32 and float64 alike), so 1e-4.
    """
    hf, folder = hf_segformer
    model = mit_model()
    report = gf.load_pretrained_backbone(model, folder)
    assert report.format == "segformer-hf"
    assert report.initialised == [] and report.unused == {}
    assert report.loaded == list(model.state_dict())

    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = hf(pixel_values=x).logits
        ours = model([x])[0]
    assert ours.shape == theirs.shape == (2, 5, 16, 24)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)

    model64 = mit_model().double()
    gf.load_pretrained_backbone(model64, folder)
    for module in model64.modules():
        if isinstance(module, ModalityLayerNorm):
            module.eps = 1e-5
    hf64 = hf.double()
    with torch.no_grad():
        torch.testing.assert_close(
            model64([x.double()])[0], hf64(pixel_values=x.double()).logits, rtol=0, atol=1e-10
        )
    hf.float()


def test_fused_model_gets_shared_weights_and_per_modality_norms(hf_segformer):
    hf, folder = hf_segformer
    model = mit_model(("rgb", "depth"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = gf.load_pretrained_backbone(model, folder)

    state = model.state_dict()
    source = {k.removeprefix("segformer."): v for k, v in hf.state_dict().items()}
    pairs = {  # one of each kind of norm, by the names transformers 5 uses in memory
        "backbone.patch_embed1.norm": "stages.0.patch_embeddings.layer_norm",
        "backbone.block1.1.norm1": "stages.0.blocks.1.layernorm_before",
        "backbone.block4.0.norm2": "stages.3.blocks.0.layernorm_after",
        "backbone.block2.0.attn.norm": "stages.1.blocks.0.attention.sequence_reduction.layer_norm",
        "backbone.norm3": "stages.2.layer_norm",
    }
    for ours, theirs in pairs.items():
        for leaf in ("weight", "bias"):
            assert state[f"{ours}.{leaf}"].shape == (2, source[f"{theirs}.{leaf}"].shape[0])
            for row in state[f"{ours}.{leaf}"]:
                assert torch.equal(row, source[f"{theirs}.{leaf}"])
    norms = [
        f"{name}.{leaf}"
        for name, m in model.named_modules()
        if isinstance(m, ModalityLayerNorm)
        for leaf in ("weight", "bias")
    ]
    # patch embeddings, two per block, spatial reduction (stages 1-3), stage outputs
    assert len(norms) == 2 * (4 + 2 * 6 + (2 + 1 + 1) + 4)
    for key in norms:
        assert torch.equal(state[key][0], state[key][1])
    kv = torch.cat(
        [
            source["stages.0.blocks.0.attention.k_proj.weight"],
            source["stages.0.blocks.0.attention.v_proj.weight"],
        ]
    )
    assert torch.equal(state["backbone.block1.0.attn.kv.weight"], kv)

    assert sorted(report.initialised) == sorted(fusion_keys(model) + ["alpha"])
    for key in report.initialised:
        assert torch.equal(state[key], before[key]), key
    assert set(report.loaded) | set(report.initialised) == set(state)
    assert report.unused == {}
    assert any("single norm in every row" in n for n in report.notes)


def test_hf_model_file_without_head_and_bin_format(hf_segformer, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf, _ = hf_segformer
    encoder = transformers.SegformerModel(hf.config)
    encoder.load_state_dict(hf.segformer.state_dict())
    encoder.save_pretrained(tmp_path / "st")
    # A pickled copy of the same file, as transformers 4 wrote them (pytorch_model.bin).
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
    legacy = load_file(tmp_path / "st" / "model.safetensors")
    torch.save(legacy, tmp_path / "bin" / "pytorch_model.bin")

    for path in (tmp_path / "bin", tmp_path / "st" / "model.safetensors"):
        model = mit_model()
        report = gf.load_pretrained_backbone(model, path)
        assert all(k.startswith("head.") for k in report.initialised)
        assert len(report.initialised) == len(model.head.state_dict())
        assert report.unused == {}
        full = mit_model()
        gf.load_pretrained_backbone(full, hf_segformer[1])
        for key in report.loaded:
            assert torch.equal(model.state_dict()[key], full.state_dict()[key])


def test_head_that_does_not_fit(hf_segformer):
    _, folder = hf_segformer
    model = mit_model(classes=7)
    report = gf.load_pretrained_backbone(model, folder)
    assert sorted(report.initialised) == sorted(f"head.{k}" for k in model.head.state_dict())
    assert "decode_head.classifier.weight" in report.unused
    assert "does not fit" in report.unused["decode_head.classifier.weight"]
    with pytest.raises(ValueError, match=r"decode_head\.classifier\.weight \(5, 32, 1, 1\)"):
        gf.load_pretrained_backbone(mit_model(classes=7), folder, head=True)
    report = gf.load_pretrained_backbone(mit_model(), folder, head=False)
    assert report.unused["decode_head.classifier.bias"] == "decode head (head=False)"
    report = gf.load_pretrained_backbone(mit_model().backbone, folder)  # a bare backbone
    assert report.initialised == [] and len(report.loaded) == len(mit_model().backbone.state_dict())
    assert all(k.startswith("decode_head.") for k in report.unused)


def test_hf_config_that_contradicts_the_model(hf_segformer):
    _, folder = hf_segformer
    model = mit_model(num_heads=(1, 1, 1, 1))  # same shapes, other head counts
    with pytest.raises(ValueError, match=r"num_attention_heads=\[1, 2, 3, 4\]"):
        gf.load_pretrained_backbone(model, folder)
    with pytest.raises(ValueError, match=r"the model has no backbone\.block1\.1\.norm1\.weight"):
        gf.load_pretrained_backbone(mit_model(depths=(1, 1, 1, 2)), folder)


# --------------------------------------------------------------------------- original SegFormer


def test_original_segformer_imagenet_file(tmp_path):
    """mit_b0 in the original ImageNet layout: every backbone key used, the classifier not."""
    config = gf.VARIANTS["mit_b0"]
    state = segformer_imagenet_state(config.embed_dims, config.depths, config.sr_ratios)
    path = tmp_path / "mit_b0.pth"
    torch.save(state, path)
    model = gf.build_segmentor("mit_b0", 40)
    report = gf.load_pretrained_backbone(model, path)

    assert report.format == "segformer-imagenet"
    assert set(report.unused) == {"head.weight", "head.bias"}
    assert all("classifier" in why for why in report.unused.values())
    backbone = [k for k in model.state_dict() if k.startswith("backbone.")]
    assert sorted(report.loaded) == sorted(k for k in backbone if ".fusion." not in k)
    assert sorted(report.initialised) == sorted(
        fusion_keys(model) + ["alpha"] + [f"head.{k}" for k in model.head.state_dict()]
    )
    # Every tensor of the file other than the classifier shows up, unchanged, in the model.
    assert len(state) - 2 == len(report.loaded)
    ours = model.state_dict()
    assert torch.equal(
        ours["backbone.block2.1.mlp.dwconv.weight"], state["block2.1.mlp.dwconv.dwconv.weight"]
    )
    assert torch.equal(ours["backbone.block1.0.attn.kv.bias"], state["block1.0.attn.kv.bias"])
    for row in ours["backbone.patch_embed3.norm.weight"]:
        assert torch.equal(row, state["patch_embed3.norm.weight"])


def test_mmseg_segformer_checkpoint_loads_backbone_and_head(tmp_path):
    state = segformer_imagenet_state((16, 32, 48, 64), TINY_MIT["depths"], (8, 4, 2, 1))
    del state["head.weight"], state["head.bias"]
    full = {f"backbone.{k}": v for k, v in state.items()}
    source = mit_model(("rgb", "depth"))
    randomize(source.head, seed=4)
    full |= {f"decode_head.{k}": v for k, v in source.head.state_dict().items()}
    full["decode_head.conv_seg.weight"] = torch.zeros(5, 32, 1, 1)
    torch.save({"meta": {"epoch": 3}, "state_dict": full}, tmp_path / "iter_160000.pth")

    model = mit_model(("rgb", "depth"))
    report = gf.load_pretrained_backbone(model, tmp_path / "iter_160000.pth")
    assert report.format == "segformer-mmseg"
    assert list(report.unused) == ["decode_head.conv_seg.weight"]
    assert sorted(report.initialised) == sorted(fusion_keys(model) + ["alpha"])
    for key, value in source.head.state_dict().items():
        assert torch.equal(model.head.state_dict()[key], value)


def test_architecture_mismatch_names_the_key(tmp_path):
    b0 = gf.VARIANTS["mit_b0"]
    torch.save(segformer_imagenet_state(b0.embed_dims, b0.depths, b0.sr_ratios), tmp_path / "b0")
    with pytest.raises(ValueError, match=r"patch_embed1\.proj\.weight \(32, 3, 7, 7\) != "):
        gf.load_pretrained_backbone(gf.build_segmentor("mit_b1", 40), tmp_path / "b0")

    small = segformer_imagenet_state((16, 32, 48, 64), (2, 1, 1, 2), (8, 4, 2, 1))
    torch.save(small, tmp_path / "small.pth")
    with pytest.raises(ValueError, match=r"lacks backbone\.block3\.1\.norm1\.weight"):
        gf.load_pretrained_backbone(mit_model(depths=(2, 1, 2, 2)), tmp_path / "small.pth")
    with pytest.raises(ValueError, match=r"block1\.1\.norm1\.weight: the model has no"):
        gf.load_pretrained_backbone(mit_model(depths=(1, 1, 1, 2)), tmp_path / "small.pth")
    # Failed loads leave the model untouched.
    model = mit_model(depths=(1, 1, 1, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError):
        gf.load_pretrained_backbone(model, tmp_path / "small.pth")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unknown_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        gf.load_pretrained_backbone(mit_model(), tmp_path / "missing.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a known pretrained format"):
        gf.load_pretrained_backbone(mit_model(), tmp_path / "other.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no weights in this folder"):
        gf.load_pretrained_backbone(mit_model(), tmp_path / "empty")
    fused = mit_model(("rgb", "depth"))
    torch.save({"segmenter": gf.to_reference_state_dict(fused)}, tmp_path / "ref.pth")
    with pytest.raises(ValueError, match="load_reference_checkpoint"):
        gf.load_pretrained_backbone(fused, tmp_path / "ref.pth")
    gf.save_pretrained(fused, tmp_path / "folder")
    with pytest.raises(ValueError, match="from_pretrained"):
        gf.load_pretrained_backbone(fused, tmp_path / "folder")


def test_format_detection_and_report_text():
    assert detect_format(["patch_embed1.proj.weight", "head.weight"]) == "segformer-imagenet"
    assert detect_format(["segformer.encoder.block.0.0.mlp.dense1.weight"]) == "segformer-hf"
    assert detect_format(["patch_embed.proj.weight", "layers.0.blocks.0.norm1.weight"]) == (
        "swin-imagenet"
    )
    assert detect_format(["embeddings.patch_embeddings.projection.weight"]) == "swin-hf"
    assert detect_format(["x"], {"model_type": "swin"}) == "swin-hf"
    names = [
        "backbone.block1.0.attn.q.weight",
        "backbone.block1.0.attn.q.bias",
        "backbone.block2.1.attn.q.weight",
        "alpha",
    ]
    assert group_names(names) == ["backbone.block*.*.attn.q.{bias,weight} (3)", "alpha"]


# --------------------------------------------------------------------------- Swin

TINY_SWIN = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))


def swin_model(modalities: Sequence[str] = ("rgb",), window: int = 3) -> nn.Module:
    config = gf.SwinConfig(**TINY_SWIN, window_size=window)
    return gf.build_segmentor(config, 5, modalities=modalities, head_embed_dim=32).eval()


@pytest.fixture(scope="module")
def hf_swin(tmp_path_factory):
    """A random transformers ``SwinModel`` (window 3) saved as a folder."""
    transformers = pytest.importorskip("transformers")
    config = transformers.SwinConfig(
        **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY_SWIN.items()},
        window_size=3,
        image_size=128,
    )
    model = transformers.SwinModel(config).eval()
    randomize(model, seed=2)
    folder = tmp_path_factory.mktemp("hf_swin")
    model.save_pretrained(folder)
    return model, folder


def hf_swin_stage_maps(hf: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """transformers' four stage outputs before patch merging, NCHW (what our output norms see)."""
    embeddings, size = hf.embeddings(x)
    out = hf.encoder(
        embeddings, size, output_hidden_states=True, output_hidden_states_before_downsampling=True
    )
    return list(out.reshaped_hidden_states[1:])


def test_hf_swin_features_match_transformers(hf_swin):
    """Our four feature maps are transformers' stage outputs through our fresh output norms.

    The output norms (``norm0..3``) are not in a classification model, so they stay at their
    initial identity affine and each feature is ``layer_norm(stage output, eps=1e-6)``. The only
    other eps difference is the patch-embedding norm (1e-6 here, 1e-5 in transformers): with it
    equal, float64 agrees to rounding (5e-15); with each side's own it moves the unit-scale
    features by up to 4e-5 (measured in float64), so float32 is held to 1e-4.
    """
    hf, folder = hf_swin
    model = swin_model()
    report = gf.load_pretrained_backbone(model, folder)
    assert report.format == "swin-hf"
    assert set(report.unused) == {"layernorm.weight", "layernorm.bias"}
    assert sorted(report.initialised) == sorted(
        [f"backbone.norm{s}.{leaf}" for s in range(4) for leaf in ("weight", "bias")]
        + [f"head.{k}" for k in model.head.state_dict()]
    )

    x = torch.randn(2, 3, 128, 160, generator=torch.Generator().manual_seed(5))
    for dtype, eps, atol in ((torch.float32, None, 1e-4), (torch.float64, 1e-5, 1e-10)):
        model, hf = model.to(dtype), hf.to(dtype)
        if eps is not None:
            model.backbone.patch_embed.norm.eps = eps
        with torch.no_grad():
            ours = model.forward_features([x.to(dtype)])
            theirs = hf_swin_stage_maps(hf, x.to(dtype))
        for s, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert a.shape[1:] == b.shape == (2, 16 * 2**s, -(-32 // 2**s), -(-40 // 2**s))
            expected = F.layer_norm(b.movedim(1, -1), b.shape[1:2], eps=1e-6).movedim(-1, 1)
            torch.testing.assert_close(a[0], expected, rtol=0, atol=atol)
    hf.float()


def test_original_swin_imagenet_file_into_a_larger_window(tmp_path):
    state = swin_imagenet_state(16, TINY_SWIN["depths"], TINY_SWIN["num_heads"], window=7)
    torch.save({"model": state, "epoch": 299}, tmp_path / "swin_tiny_patch4_window7_224.pth")
    model = swin_model(("rgb", "depth"), window=12)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = gf.load_pretrained_backbone(model, tmp_path / "swin_tiny_patch4_window7_224.pth")

    assert report.format == "swin-imagenet"
    derived = [k for k in state if k.endswith(("relative_position_index", "attn_mask"))]
    assert len(derived) == 8 + 4
    assert set(report.unused) == set(derived) | {
        "norm.weight",
        "norm.bias",
        "head.weight",
        "head.bias",
    }
    new = fusion_keys(model) + ["alpha"] + [f"head.{k}" for k in model.head.state_dict()]
    new += [f"backbone.norm{s}.{leaf}" for s in range(4) for leaf in ("weight", "bias")]
    assert sorted(report.initialised) == sorted(new)
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in new)
    assert len(report.loaded) == len(state) - len(report.unused)

    ours = model.state_dict()
    table = "layers.2.blocks.1.attn.relative_position_bias_table"
    assert ours[f"backbone.{table}"].shape == (23 * 23, 2)
    torch.testing.assert_close(ours[f"backbone.{table}"], resize_position_bias(state[table], 12))
    for row in ours["backbone.patch_embed.norm.weight"]:
        assert torch.equal(row, state["patch_embed.norm.weight"])
    assert torch.equal(
        ours["backbone.layers.1.blocks.0.norm1.bias"], state["layers.1.blocks.0.norm1.bias"]
    )
    assert any("resized (bicubic) to window 12" in n for n in report.notes)

    same = swin_model(window=7)
    gf.load_pretrained_backbone(same, tmp_path / "swin_tiny_patch4_window7_224.pth")
    assert torch.equal(same.state_dict()[f"backbone.{table}"], state[table])


def test_position_bias_resize():
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(13 * 13, 3, generator=gen)
    assert torch.equal(resize_position_bias(table, 7), table)
    flat = torch.full((13 * 13, 2), 0.25)
    torch.testing.assert_close(resize_position_bias(flat, 12), torch.full((23 * 23, 2), 0.25))
    # The centre (zero offset) stays the centre: row (2w-1)^2 // 2 in both layouts.
    peak = torch.zeros(13 * 13, 1)
    peak[13 * 13 // 2] = 1.0
    resized = resize_position_bias(peak, 12)
    assert resized.argmax().item() == 23 * 23 // 2


def test_swin_shape_and_family_mismatches(tmp_path, hf_swin):
    _, folder = hf_swin
    state = swin_imagenet_state(16, TINY_SWIN["depths"], (1, 2, 4, 4), window=7)
    torch.save({"model": state}, tmp_path / "heads.pth")
    with pytest.raises(
        ValueError, match=r"layers\.2\.blocks\.0\.attn\.relative_position_bias_table"
    ):
        gf.load_pretrained_backbone(swin_model(), tmp_path / "heads.pth")
    with pytest.raises(ValueError, match="does not fit a MixTransformer"):
        gf.load_pretrained_backbone(mit_model(), folder)
    with pytest.raises(ValueError, match="does not fit a SwinTransformer"):
        mit = segformer_imagenet_state(TINY_MIT["embed_dims"], TINY_MIT["depths"], (8, 4, 2, 1))
        torch.save(mit, tmp_path / "mit.pth")
        gf.load_pretrained_backbone(swin_model(), tmp_path / "mit.pth")
