"""ONNX export: the graph's names and shapes, ONNX Runtime against PyTorch for every backbone
family, the paper's reference checkpoints against their stored outputs, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import geminifusion as gf
from geminifusion.backbones import CONFIG_TYPES
from geminifusion.cli import main
from geminifusion.export import ExportError, onnx_session

pytest.importorskip("onnx", reason="the export extra is not installed")
pytest.importorskip("onnxruntime", reason="the export extra is not installed")
pytest.importorskip("onnxscript", reason="the export extra is not installed")

TINY_MIT = {"type": "MiTConfig", "embed_dims": [16, 32, 40, 64], "depths": [1, 1, 1, 1]}
TINY_MIT["num_heads"] = [1, 2, 5, 8]
TINY_SWIN = {"type": "SwinConfig", "embed_dim": 16, "depths": [2, 2, 2, 2]}
TINY_SWIN |= {"num_heads": [1, 2, 2, 4], "window_size": 7}
TINY_DELIVER = {**TINY_MIT, "type": "DeliverConfig"}
# The narrow Swin of the reference fixture (reference/README.md).
SWIN_MINI = {"type": "SwinConfig", "embed_dim": 32, "depths": [2, 2, 2, 2]}
SWIN_MINI |= {"num_heads": [1, 2, 4, 8], "window_size": 7}


def run_onnx(path: Path, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    session = onnx_session(path)
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})


def largest_difference(got: list[np.ndarray], expected: list[torch.Tensor]) -> float:
    assert len(got) == len(expected)
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected, strict=True))


def test_export_command_names_inputs_and_outputs_and_checks(tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    args = ["export", json.dumps(TINY_MIT), str(out), "--num-classes", "3", "--size", "64x96"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "ONNX Runtime vs PyTorch, batch 1: largest difference" in printed
    import onnx

    proto = onnx.load(out)
    assert [i.name for i in proto.graph.input] == ["rgb", "depth"]
    assert [o.name for o in proto.graph.output] == [
        "rgb_logits",
        "depth_logits",
        "ensemble_logits",
    ]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 96]
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["modalities"]) == ["rgb", "depth"]
    assert props["num_classes"] == "3"
    # The GeminiFusion weights went in folded: no graph input but the images, and none of the
    # layer's packed projections (in_proj) is left as a weight.
    names = [t.name for t in proto.graph.initializer]
    assert not any("in_proj" in n for n in names)
    # No temporary file left; the folder's manifest records what geminifusion wrote.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".geminifusion.json", "tiny.onnx"]

    # An existing file is kept unless --overwrite, before any work is done.
    before = out.read_bytes()
    assert main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_missing_extra_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    import geminifusion.extras as extras

    real = extras.importlib.util.find_spec
    monkeypatch.setattr(
        extras.importlib.util, "find_spec", lambda n, *a: None if n == "onnx" else real(n, *a)
    )
    out = tmp_path / "m.onnx"
    assert main(["export", "mit_b0", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert 'pip install "geminifusion[export]"' in err
    assert not out.exists()


def test_refusals_come_before_any_work(tmp_path, capsys):
    swin = gf.build_segmentor(gf.SwinConfig(**_fields(TINY_SWIN)), num_classes=3)
    with pytest.raises(ValueError, match="dynamic batch"):
        gf.export_onnx(swin, tmp_path / "s.onnx", size=(64, 64), dynamic_batch=True)
    with pytest.raises(ValueError, match="float32"):
        gf.export_onnx(swin.double(), tmp_path / "s.onnx", size=(64, 64))
    assert main(["export", "no_such_arch", str(tmp_path / "x.onnx")]) == 2
    assert "not an architecture name" in capsys.readouterr().err
    assert main(["export", "mit_b0", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_failed_check_writes_nothing(tmp_path):
    model = gf.build_segmentor(gf.MiTConfig(**_fields(TINY_MIT)), num_classes=3)
    model.train()
    with pytest.raises(ExportError, match="differs from PyTorch"):
        gf.export_onnx(model, tmp_path / "m.onnx", size=(64, 64), tolerance=-1.0, optimize=False)
    assert list(tmp_path.iterdir()) == []
    assert model.training  # the mode it was in


def _fields(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "type"}


FAMILIES = {
    "mit": (TINY_MIT, ("rgb", "depth")),
    "mit-single": (TINY_MIT, ("depth",)),
    "swin": (TINY_SWIN, ("rgb", "depth")),
    "swin-single": (TINY_SWIN, ("rgb",)),
    "deliver-3": (TINY_DELIVER, ("rgb", "depth", "lidar")),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_matches_pytorch_at_an_odd_size(family, tmp_path):
    config, modalities = FAMILIES[family]
    arch = CONFIG_TYPES[config["type"]](**_fields(config))
    model = gf.build_segmentor(arch, num_classes=5, modalities=modalities).eval()
    result = gf.export_onnx(model, tmp_path / "m.onnx", size=(70, 90), batch=2)
    assert result.input_names == list(modalities)
    assert result.max_difference < 1e-4
    gen = torch.Generator().manual_seed(5)
    inputs = {m: torch.randn(2, 3, 70, 90, generator=gen) for m in modalities}
    with torch.no_grad():
        expected = model(list(inputs.values()))
    assert largest_difference(run_onnx(tmp_path / "m.onnx", inputs), expected) < 1e-4


@pytest.mark.slow
def test_dynamic_batch_runs_other_batch_sizes(tmp_path):
    model = gf.build_segmentor(gf.MiTConfig(**_fields(TINY_MIT)), num_classes=3).eval()
    result = gf.export_onnx(model, tmp_path / "m.onnx", size=(64, 64), dynamic_batch=True)
    assert sorted(result.differences) == [1, 2]
    for batch in (1, 3):
        inputs = {m: torch.randn(batch, 3, 64, 64) for m in model.modalities}
        with torch.no_grad():
            expected = model(list(inputs.values()))
        assert largest_difference(run_onnx(tmp_path / "m.onnx", inputs), expected) < 1e-4


REFERENCES = {
    "mit_b0_nyu": ("mit_b0_nyu.pth", "mit_b0_nyu_io.pt", []),
    "swin_mini_sun": (
        "swin_mini_sun.pth",
        "swin_mini_sun_io.pt",
        ["--arch", json.dumps(SWIN_MINI)],
    ),
    "deliver_mit_b0": ("deliver/deliver_mit_b0.pth", "deliver/deliver_mit_b0_io.pt", []),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", REFERENCES)
def test_reference_checkpoints_match_their_stored_outputs(name, reference_dir, tmp_path, capsys):
    checkpoint, io_file, extra = REFERENCES[name]
    io = torch.load(reference_dir / io_file, weights_only=True)
    modalities = ["rgb", "depth", "event", "lidar"] if "event" in io else ["rgb", "depth"]
    batch, _, height, width = io["rgb"].shape
    out = tmp_path / f"{name}.onnx"
    args = ["export", str(reference_dir / checkpoint), str(out), "--size", f"{height}x{width}"]
    assert main([*args, "--batch", str(batch), *extra]) == 0
    assert "largest difference" in capsys.readouterr().out
    got = run_onnx(out, {m: io[m] for m in modalities})
    assert largest_difference(got, io["outputs"]) < 1e-4
