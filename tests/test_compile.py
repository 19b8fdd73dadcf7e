"""``torch.compile``: the compiled forward equals the eager one, and every command's switch
reaches ``torch.compile`` (``--set compile=true`` for training, ``--compile`` elsewhere)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import geminifusion as gf
from geminifusion.cli import main
from geminifusion.configs import get_preset
from geminifusion.data import generate_synthetic_dataset
from geminifusion.engine.train import train

TINY = gf.MiTConfig(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 5, 8))


def needs_compiler() -> None:
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("no C++ compiler on PATH: torch.compile's CPU backend cannot build kernels")


@pytest.mark.slow  # compiling takes from 20 s to minutes on two busy cores
@pytest.mark.threads(1)
def test_compiled_forward_matches_eager():
    needs_compiler()
    model = gf.build_segmentor(TINY, num_classes=3).eval()
    x = [torch.randn(1, 3, 64, 64), torch.rand(1, 3, 64, 64)]
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    assert len(compiled) == len(eager) == 3
    for c, e in zip(compiled, eager, strict=True):
        torch.testing.assert_close(c, e, rtol=0, atol=1e-5)


@pytest.fixture
def spy(monkeypatch):
    """``torch.compile`` replaced by a recorder that returns the module unchanged."""
    calls = []

    def fake_compile(module, *args, **kwargs):
        calls.append(type(module).__name__)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


@pytest.mark.threads(1)
def test_every_command_switch_reaches_torch_compile(tmp_path, spy, capsys):
    data = tmp_path / "data"
    generate_synthetic_dataset(data, num=10, size=(64, 64), seed=0)
    config = get_preset("synthetic_tiny").replace(
        data_root=str(data), compile=True, checkpoint_every=1
    )
    run = train(config, tmp_path / "run", progress=False, stop_after=1).run_dir
    assert spy == ["Segmentor"]  # training compiles the network it steps

    args = ["eval", run, "--checkpoint", run / "checkpoints" / "last.pt", "--compile"]
    assert main([str(a) for a in args]) == 0
    assert spy[-1] == "Segmentor" and len(spy) == 2

    rgb = next((data / "rgb").iterdir())
    depth = data / "depth" / rgb.name
    args = ["predict", run, "--rgb", rgb, "--depth", depth, "--out", tmp_path / "p", "--compile"]
    assert main([str(a) for a in args]) == 0
    assert len(spy) == 3

    arch = json.dumps({"type": "MiTConfig", "embed_dims": [16, 32, 40, 64], "depths": [1] * 4})
    args = ["benchmark", arch, "--size", "64x64", "--compile", "--warmup", "1", "--iters", "1"]
    assert main([*args, "--no-memory", "--no-onnxruntime"]) == 0
    assert len(spy) == 5  # the fused model and its single-input twin
    capsys.readouterr()


@pytest.mark.slow
@pytest.mark.threads(1)
def test_compiled_training_follows_eager_training(tmp_path):
    needs_compiler()
    data = tmp_path / "data"
    generate_synthetic_dataset(data, num=10, size=(64, 64), seed=0)
    losses = {}
    for compile in (False, True):
        config = get_preset("synthetic_tiny").replace(data_root=str(data), compile=compile)
        run = train(config, tmp_path / f"run{compile}", progress=False, stop_after=3).run_dir
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[compile] = [r["loss"] for r in records if r["type"] == "train"]
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)


@pytest.mark.slow
@pytest.mark.threads(1)
def test_a_compiled_checkpointed_step_gives_eager_gradients(monkeypatch):
    """Activation checkpointing stays on inside a compiled graph, drop-path draws replayed."""
    from geminifusion import layers
    from geminifusion.engine.losses import segmentation_loss

    needs_compiler()
    torch.manual_seed(0)
    model = gf.build_segmentor(TINY, 5, drop_path_rate=0.3, activation_checkpointing=True)
    model.train()
    calls = []
    real = layers.checkpoint
    monkeypatch.setattr(layers, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = [torch.randn(2, 3, 33, 47) for _ in range(2)]
    label = torch.randint(0, 5, (2, 33, 47))

    def gradients(net):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        loss, _ = segmentation_loss(net(x), label)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    eager = gradients(model)
    calls.clear()
    # Static shapes: after the other tests' compiles in this process, dynamo would otherwise
    # mark sizes dynamic, which this torch's inductor cannot lower for a convolution backward.
    compiled = gradients(torch.compile(model, dynamic=False))
    assert calls, "the compiled forward did not checkpoint its blocks"
    assert set(compiled) == set(eager)
    for key, grad in eager.items():
        torch.testing.assert_close(compiled[key], grad, rtol=1e-4, atol=1e-6, msg=key)
