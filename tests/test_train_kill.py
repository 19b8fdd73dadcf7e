"""A training process killed with SIGKILL resumes, in a new process, to the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from geminifusion.checkpoints import read_checkpoint
from geminifusion.configs import get_preset
from geminifusion.data import generate_synthetic_dataset
from geminifusion.engine.train import train

LAUNCHER = """\
import sys
import torch
torch.set_num_threads(1)
import geminifusion.cli as cli
cli.COMMAND_MODULES = ("geminifusion.commands.train",)
sys.exit(cli.main())
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_then_resume_in_a_new_process(tmp_path):
    torch.set_num_threads(1)
    data = tmp_path / "data"
    generate_synthetic_dataset(data, num=10, size=(64, 64), seed=0)
    config = get_preset("synthetic_tiny").replace(data_root=str(data), checkpoint_every=1)
    reference = train(config, tmp_path / "reference", progress=False)

    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    run = tmp_path / "run"
    command = [sys.executable, str(launcher), "train", "synthetic_tiny", "--out", str(run)]
    command += ["--set", f"data_root={data}", "--set", "checkpoint_every=1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if last.is_file() and read_checkpoint(last)["position"]["iter"] >= 5:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    killed_at = read_checkpoint(last)["position"]["iter"]
    assert 5 <= killed_at < 12

    done = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = read_checkpoint(last)["model"]
    theirs = read_checkpoint(reference.last_checkpoint)["model"]
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
