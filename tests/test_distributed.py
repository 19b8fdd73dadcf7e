"""Two processes under ``torchrun`` (Gloo on CPU) train and evaluate like one process does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geminifusion.checkpoints import read_checkpoint
from geminifusion.configs import build_model, get_preset
from geminifusion.data import build_dataset, generate_synthetic_dataset
from geminifusion.engine.evaluate import build_eval_loader, evaluate
from geminifusion.engine.train import train

# The CLI with only the train command, so the test does not depend on the other commands.
LAUNCHER = """\
import sys
import geminifusion.cli as cli
cli.COMMAND_MODULES = ("geminifusion.commands.train",)
sys.exit(cli.main())
"""


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # what torchrun gives each of its processes


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def test_two_process_run_equals_one_process(tmp_path):
    data = tmp_path / "data"
    generate_synthetic_dataset(data, num=10, size=(64, 64), seed=0)
    # No dropout or drop-path: the two runs then compute the same function of the same batches.
    sets = [f"data_root={data}", "head_dropout=0", "drop_path_rate=0", "stage_epochs=[1,1,0]"]
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(launcher), "train", "synthetic_tiny"]
    command += ["--out", str(tmp_path / "ddp"), "--no-progress", "--set", "batch_size=1"]
    # Activation checkpointing under DDP changes memory only: the weights must still agree.
    command += ["--set", "activation_checkpointing=true"]
    for item in sets:
        command += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ddp = tmp_path / "ddp"

    config = get_preset("synthetic_tiny").replace(
        data_root=str(data), head_dropout=0.0, drop_path_rate=0.0, stage_epochs=(1, 1, 0)
    )
    single = train(config, tmp_path / "single", progress=False)

    # Same batches per step (rank r takes the r-th image of the one-process batch), gradients
    # averaged by DDP: the same losses and weights up to float rounding.
    ddp_train, one_train = records(ddp, "train"), records(single.run_dir, "train")
    assert [r["iter"] for r in ddp_train] == [r["iter"] for r in one_train] == list(range(1, 9))
    for a, b in zip(ddp_train, one_train, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["lr"] == b["lr"]
    ddp_state = read_checkpoint(ddp / "checkpoints" / "last.pt")
    assert ddp_state["position"]["world_size"] == 2 and len(ddp_state["rng"]) == 2
    one_state = read_checkpoint(single.run_dir / "checkpoints" / "last.pt")
    for key, value in ddp_state["model"].items():
        assert torch.allclose(value.double(), one_state["model"][key].double(), atol=1e-4), key

    # Validation under DDP (each process a shard, matrices summed) equals evaluating the same
    # weights in this single process, exactly.
    model = build_model(config, 7)
    model.load_state_dict(ddp_state["model"])
    val = build_dataset("synthetic", data, "val", modalities=config.modalities)
    ours = evaluate(model, build_eval_loader(val), 7)
    logged = records(ddp, "val")[-1]["metrics"]
    for name, scores in ours.items():
        for key in ("aAcc", "mIoU", "mAcc"):
            assert logged[name][key] == scores[key], (name, key)
    # And the two runs' validations agree.
    for a, b in zip(records(ddp, "val"), records(single.run_dir, "val"), strict=True):
        for name in a["metrics"]:
            assert a["metrics"][name]["mIoU"] == pytest.approx(b["metrics"][name]["mIoU"])
