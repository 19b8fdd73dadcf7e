"""The MiT model reproduces the paper implementation's checkpoint outputs (mit_b0_nyu)."""

from __future__ import annotations

import json

import pytest
import torch

import geminifusion as gf


@pytest.fixture(scope="module")
def reference_model(reference_dir):
    model = gf.build_segmentor("mit_b0", num_classes=40).eval()
    meta = gf.load_reference_checkpoint(model, reference_dir / "mit_b0_nyu.pth")
    io = torch.load(reference_dir / "mit_b0_nyu_io.pt", weights_only=True)
    return model, meta, io


def test_checkpoint_metadata(reference_model):
    _, meta, _ = reference_model
    assert meta["epoch_start"] == 264
    assert meta["best_val"] == pytest.approx(52.71349180574291)


def test_float32_outputs_and_features(reference_model):
    model, _, io = reference_model
    inputs = [io["rgb"], io["depth"]]
    with torch.no_grad():
        outputs = model(inputs)
        features = model.forward_features(inputs)
    assert len(outputs) == 3
    for ours, theirs in zip(outputs, io["outputs"], strict=True):
        assert ours.shape == theirs.shape == (2, 40, 16, 24)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)
    for s in range(4):
        for m, name in enumerate(("rgb", "depth")):
            torch.testing.assert_close(features[s][m], io["features"][name][s], rtol=0, atol=2e-5)


def test_float64_outputs(reference_model):
    model, _, io = reference_model
    model64 = gf.build_segmentor("mit_b0", num_classes=40).double().eval()
    model64.load_state_dict(
        {k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    )
    with torch.no_grad():
        outputs = model64([io["rgb"].double(), io["depth"].double()])
        features = model64.forward_features([io["rgb"].double(), io["depth"].double()])
    for ours, theirs in zip(outputs, io["outputs_fp64"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)
    for s in range(4):
        torch.testing.assert_close(
            features[s][1], io["features_fp64"]["depth"][s], rtol=0, atol=1e-9
        )


def test_round_trip_to_reference_names(reference_model, reference_dir):
    model, _, _ = reference_model
    ckpt = torch.load(reference_dir / "mit_b0_nyu.pth", map_location="cpu", weights_only=False)
    theirs = {k.removeprefix("module."): v for k, v in ckpt["segmenter"].items()}
    ours = gf.to_reference_state_dict(model)
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype, key
        assert torch.equal(ours[key], value), key


@pytest.mark.parametrize("arch", ["mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5"])
def test_keys_shapes_and_counts_match_official(arch, reference_dir):
    official = json.loads((reference_dir / "official_keys.json").read_text())["configs"][arch]
    with torch.device("meta"):
        model = gf.build_segmentor(arch, num_classes=40)
    ours = gf.to_reference_state_dict(model)
    expected = {key: (tuple(shape), dtype) for key, shape, dtype in official["keys"]}
    got = {key: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for key, t in ours.items()}
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))[:10]
    assert got == expected
    assert len(ours) == official["num_tensors"]
    assert sum(p.numel() for p in model.parameters()) == official["num_parameters"]
