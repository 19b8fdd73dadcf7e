"""Every named variant, one parametrised test each: build, keys, counts, forward, backward.

Full-size models are built on the meta device (shapes only) and compared with the key lists the
paper's code produced (``official_keys.json``, ten of them). The forward and backward run on a
narrow twin of each variant: the same blocks' head counts, windows, spatial reductions and
fusion heads, one block per stage and a few channels per head, at a size no stride divides.
"""

from __future__ import annotations

import json

import pytest
import torch

import geminifusion as gf
from geminifusion.configs import build_model, load_config
from model_helpers import narrow

DELIVER_SENSORS = ("rgb", "depth", "event", "lidar")
SIZE = (33, 47)


def setting(name: str) -> tuple[int, tuple[str, ...]]:
    """(classes, modalities) of a variant's paper setting."""
    return (25, DELIVER_SENSORS) if name.startswith("deliver_") else (40, ("rgb", "depth"))


@pytest.mark.parametrize("name", sorted(gf.VARIANTS))
def test_keys_shapes_and_counts(name, reference_dir):
    classes, modalities = setting(name)
    with torch.device("meta"):
        model = gf.build_segmentor(name, classes, modalities=modalities)
    ours = gf.to_reference_state_dict(model)
    assert model.spec["arch"] == name and model.output_names[-1] == "ensemble"
    official = json.loads((reference_dir / "official_keys.json").read_text())["configs"]
    if name not in official:
        return  # DeLiVER sizes: their key lists are checked in tests/test_deliver.py
    expected = {key: (tuple(shape), dtype) for key, shape, dtype in official[name]["keys"]}
    got = {key: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for key, t in ours.items()}
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))[:10]
    assert got == expected
    assert len(ours) == official[name]["num_tensors"]
    assert sum(p.numel() for p in model.parameters()) == official[name]["num_parameters"]


@pytest.mark.parametrize("name", sorted(gf.VARIANTS))
def test_forward_and_backward_at_an_odd_size(name):
    classes, modalities = setting(name)
    torch.manual_seed(0)
    model = gf.build_segmentor(narrow(gf.VARIANTS[name]), 5, modalities=modalities)
    x = [torch.randn(2, 3, *SIZE) for _ in modalities]
    outputs = model(x)
    stride4 = (-(-SIZE[0] // 4), -(-SIZE[1] // 4))
    out_size = SIZE if model.backbone.upsample_logits else stride4
    assert [tuple(o.shape) for o in outputs] == [(2, 5, *out_size)] * 3
    assert all(torch.isfinite(o).all() for o in outputs)
    sum(o.square().mean() for o in outputs).backward()
    fused = [m for m in model.modules() if isinstance(m, gf.GeminiFusion)]
    assert fused and all(f.in_proj_weight.grad.abs().sum() > 0 for f in fused)
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []  # every trained weight is reached (alpha through the ensemble's term)


@pytest.mark.parametrize("name", sorted(gf.VARIANTS))
def test_a_config_naming_only_the_arch_builds_what_build_segmentor_builds(name, tmp_path):
    classes, modalities = setting(name)
    path = tmp_path / "run.yaml"
    path.write_text(f"arch: {name}\ndataset: nyudv2\nmodalities: [{', '.join(modalities)}]\n")
    config = load_config(path)
    with torch.device("meta"):
        from_config = build_model(config, classes)
        direct = gf.build_segmentor(name, classes, modalities=modalities)
    shapes = {k: v.shape for k, v in direct.state_dict().items()}
    assert {k: v.shape for k, v in from_config.state_dict().items()} == shapes
    assert from_config.spec == direct.spec
    assert config.resolved().head_embed_dim == direct.spec["head_embed_dim"]
    assert config.resolved().drop_path_rate == direct.spec["drop_path_rate"]
