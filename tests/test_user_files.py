"""What the package does with a user's files, tried as a user would: the CLI in a subprocess.

Each case runs ``python -m geminifusion.cli ...`` against this tree and checks the exit code, that
no traceback is printed, that the message names the file, key or option, and that the user's
files are byte for byte what they were. Read-only and full disks are real mounts (a bind mount
remounted read-only, a small tmpfs), which need root; elsewhere those cases are skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import geminifusion as gf
from geminifusion.configs import get_preset
from geminifusion.data import generate_synthetic_dataset
from geminifusion.engine.train import train
from geminifusion.weights.io import UNSAFE, read_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"
pytestmark = pytest.mark.threads(1)


# ------------------------------------------------------------------------------------ helpers


def cli(*args, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``geminifusion ARGS`` in a new process, importing the tree under test."""
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "geminifusion.cli", *map(str, args)]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


def error_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    """The one error line of a failed command, which must name every needle."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr)
    lines = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def warning_lines(done: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in done.stderr, done.stderr
    return [line for line in (done.stdout + done.stderr).splitlines() if "warning" in line]


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root`` (hidden ones too)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def user_folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@contextlib.contextmanager
def mounted(kind: str, path: Path, size: str = "1m"):
    """A read-only bind mount (``ro``) or a small tmpfs (``tmpfs``) at ``path``; skips the test
    when this process may not mount (not root, or no mount namespace)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip(f"{kind} case needs root to mount (chmod does not stop root, nor a user)")
    if kind == "ro":
        source = path.with_name(path.name + "_src")
        source.mkdir()
        steps = [["mount", "--bind", str(source), str(path)]]
        steps += [["mount", "-o", "remount,bind,ro", str(path)]]
    else:
        steps = [["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]]
    done = None
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            subprocess.run(["umount", str(path)], capture_output=True)
            pytest.skip(f"cannot mount here ({' '.join(step)}: {done.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def area(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("user")


@pytest.fixture(scope="module")
def data(area) -> Path:
    generate_synthetic_dataset(area / "data", num=6, size=(64, 64), seed=0)
    return area / "data"


@pytest.fixture(scope="module")
def run(area, data) -> Path:
    """A tiny run folder (one epoch), with its checkpoints."""
    torch.set_num_threads(1)
    config = get_preset("synthetic_tiny").replace(data_root=str(data), stage_epochs=(1, 0, 0))
    return train(config, area / "run", progress=False).run_dir


@pytest.fixture(scope="module")
def model_folder(area, run) -> Path:
    gf.save_pretrained(gf.load_model(run), area / "model")
    return area / "model"


@pytest.fixture(scope="module")
def evil(area) -> Path:
    """A checkpoint whose unpickling would run a shell command (it creates ``PWNED``)."""

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {area / 'PWNED'}",))

    torch.save({"segmenter": {"w": Evil()}}, area / "evil.pth")
    return area / "evil.pth"


def fresh(area: Path, name: str) -> Path:
    """A path under ``area`` that no case has used."""
    return area / f"{name}_{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------- damage: a user's folder


def test_train_refuses_a_folder_of_the_users(area, data):
    folder = user_folder(fresh(area, "mine"), {"config.yaml": "lr: 1\n", "train.log": "notes\n"})
    before = snapshot(folder)
    done = cli("train", "synthetic_tiny", "--set", f"data_root={data}", "--out", folder)
    error_line(done, str(folder), "config.yaml", "train.log", "did not write")
    assert snapshot(folder) == before
    done = cli(
        "train", "synthetic_tiny", "--set", f"data_root={data}", "--out", folder, "--overwrite"
    )
    error_line(done, "did not write")
    assert snapshot(folder) == before


def test_overwrite_of_a_run_removes_only_what_the_run_wrote(area, data):
    out = fresh(area, "run")
    config = get_preset("synthetic_tiny").replace(data_root=str(data), stage_epochs=(1, 0, 0))
    train(config, out, progress=False)
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints" / "keep.pt").write_text("mine too")
    with pytest.raises(ValueError, match="already holds a run.*--overwrite"):
        train(config, out, progress=False)
    args = ["train", "synthetic_tiny", "--set", f"data_root={data}", "--out", out]
    done = cli(*args, "--set", "stage_epochs=[1,0,0]", "--no-progress", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "checkpoints" / "keep.pt").read_text() == "mine too"


def test_demo_overwrite_never_touches_the_users_files(area):
    folder = user_folder(fresh(area, "demo"), {"data/mine.txt": "m", "table.txt": "t"})
    before = snapshot(folder)
    done = cli("demo", "--quick", "--out", folder, "--overwrite", "--no-progress")
    error_line(done, str(folder), "data/mine.txt", "table.txt")
    assert snapshot(folder) == before


def test_predict_never_writes_among_its_inputs(area, run, data):
    inputs = fresh(area, "rgb")
    shutil.copytree(data / "rgb", inputs)
    shutil.copy(inputs / "000001.png", inputs / "000001_color.png")  # an input, not an output
    before = snapshot(inputs)
    for out in (inputs, inputs / "preds"):
        done = cli("predict", run, "--rgb", inputs, "--depth", data / "depth", "--out", out)
        error_line(done, "--out", str(inputs), "input")
    assert snapshot(inputs) == before


def test_predict_refuses_output_names_that_are_the_users(area, run, data):
    from geminifusion.data.inputs import collect_samples
    from geminifusion.engine.predict import predict_folder

    out = fresh(area, "preds")
    rgb, depth = data / "rgb" / "000001.png", data / "depth" / "000001.png"
    model = gf.load_model(run)
    predict_folder(model, collect_samples(model.modalities, {"rgb": rgb, "depth": depth}), out)
    first = snapshot(out)
    (out / "000002_color.png").write_text("the user's picture")
    mine = snapshot(out)
    done = cli("predict", run, "--rgb", data / "rgb", "--depth", data / "depth", "--out", out)
    error_line(done, "000002_color.png", "not written by geminifusion")
    assert snapshot(out) == mine
    # Its own earlier outputs are replaced without a word; the user's file stays.
    done = cli("predict", run, "--rgb", rgb, "--depth", depth, "--out", out)
    assert done.returncode == 0, done.stderr
    assert snapshot(out).keys() == mine.keys() and first.keys() < mine.keys()
    assert (out / "000002_color.png").read_text() == "the user's picture"


def test_convert_never_writes_inside_its_input(area, model_folder):
    before = snapshot(model_folder)
    for target in (model_folder / "model.safetensors", model_folder / "ref.pth"):
        done = cli("convert", model_folder, target, "--force")
        error_line(done, str(model_folder), "input")
    assert snapshot(model_folder) == before
    gf.load_model(model_folder)  # still a working model folder
    mine = user_folder(fresh(area, "ckpt"), {"paper.pth": "the user's checkpoint"})
    done = cli("convert", model_folder, mine / "paper.pth", "--force")
    error_line(done, "paper.pth", "not written by geminifusion")
    assert (mine / "paper.pth").read_text() == "the user's checkpoint"


# ------------------------------------------------------------ operating-system errors: one line


def test_read_only_destination_is_one_line(area, run, data):
    with mounted("ro", fresh(area, "ro")) as ro:
        cases = [
            ("predict", run, "--rgb", data / "rgb", "--depth", data / "depth", "--out", ro / "p"),
            ("eval", run, "--out", ro / "e", "--no-progress"),
            ("train", "synthetic_tiny", "--set", f"data_root={data}", "--out", ro / "r"),
            ("synth", ro / "s", "--num", "2", "--size", "32x32"),
        ]
        for case in cases:
            error_line(cli(*case), "read-only file system", str(ro))
        assert not any(ro.iterdir())


def test_full_disk_keeps_the_previous_checkpoint(area, data):
    with mounted("tmpfs", fresh(area, "full"), size="4m") as disk:
        out = disk / "run"
        args = ["train", "synthetic_tiny", "--set", f"data_root={data}", "--out", out]
        line = error_line(cli(*args, "--no-progress"), "no space left on device")
        assert f"{out / 'checkpoints' / 'last.pt'}; the previous checkpoint" in line
        assert "is intact" in line and "[enforce fail" not in line
        last = read_checkpoint(out / "checkpoints" / "last.pt")  # intact and readable
        assert last["position"]["iter"] >= 1
        assert not list(out.rglob("*.tmp"))


def test_full_disk_leaves_no_partial_pictures(area, run, data):
    with mounted("tmpfs", fresh(area, "small"), size="40k") as disk:
        out = disk / "preds"
        done = cli("predict", run, "--rgb", data / "rgb", "--depth", data / "depth", "--out", out)
        error_line(done, "no space left on device", str(disk))
        pictures = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
        assert all(p.stat().st_size > 0 for p in pictures)
        assert not [p for p in pictures if p.name.endswith(".tmp")]


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_an_output_that_is_a_file_is_refused_before_any_work(area, run, data, command):
    target = fresh(area, "file")
    target.write_text("the user's file")
    args = ["--rgb", data / "rgb", "--depth", data / "depth"] if command == "predict" else []
    done = cli(command, run, *args, "--out", target, "--no-progress")
    error_line(done, str(target), "is a file")
    assert "evaluating" not in done.stdout  # refused before the work
    assert target.read_text() == "the user's file"


# ------------------------------------------------------------------------ model folders, configs


def test_damaged_model_folders_name_the_file_and_key(area, model_folder, data):
    cases = {}
    for name in ("truncated", "random", "typed", "nocfg", "badjson"):
        cases[name] = fresh(area, name)
        shutil.copytree(model_folder, cases[name])
    weights = (cases["truncated"] / "model.safetensors").read_bytes()
    (cases["truncated"] / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (cases["random"] / "model.safetensors").write_bytes(np.random.bytes(4096))
    config = json.loads((cases["typed"] / "config.json").read_text())
    (cases["typed"] / "config.json").write_text(json.dumps({**config, "num_classes": "7"}))
    (cases["nocfg"] / "config.json").unlink()
    (cases["badjson"] / "config.json").write_text("{not json")
    rgb, depth = data / "rgb" / "000001.png", data / "depth" / "000001.png"
    expect = {
        "truncated": ["model.safetensors", "not a readable safetensors file"],
        "random": ["model.safetensors", "not a readable safetensors file"],
        "typed": ["config.json", "num_classes", "'7'"],
        "nocfg": ["no config.json", "model.safetensors"],
        "badjson": ["config.json", "JSON"],
    }
    for name in ("random", "nocfg", "badjson"):  # the Python API says the same
        with pytest.raises((ValueError, FileNotFoundError)) as raised:
            gf.load_model(cases[name])
        assert all(needle in str(raised.value) for needle in expect[name]), raised.value
    for name in ("truncated", "typed"):  # the command line, in a user's terminal
        folder, out = cases[name], fresh(area, "out")
        error_line(
            cli("predict", folder, "--rgb", rgb, "--depth", depth, "--out", out), *expect[name]
        )
        assert not out.exists()


def test_bad_config_values_are_named_before_the_run_folder_exists(area, data):
    from geminifusion.configs import apply_overrides

    out = fresh(area, "cfg")
    args = ["train", "synthetic_tiny", "--set", f"data_root={data}", "--set", "ignore_index=300"]
    error_line(cli(*args, "--out", out), "'ignore_index'", "255")
    assert not out.exists()
    base = get_preset("synthetic_tiny")
    for setting, key in [
        ("crop_size=[16,16]", "'crop_size'"),
        ("weight_decay=-0.1", "'weight_decay'"),
        ("stage_lrs=[.nan,1,1]", "'stage_lrs'"),
        ("betas=[1.5,0.9]", "'betas'"),
        ("eval_window=[8,8]", "'eval_window'"),
        ("name=../elsewhere", "'name'"),
        ("dataset_options.depth_fromat=hha", "depth_fromat"),
    ]:
        with pytest.raises(ValueError, match=key):
            apply_overrides(base, [setting])


def test_sliding_window_below_the_minimum_names_the_option(run):
    error_line(cli("eval", run, "--sliding-window", "16x16"), "--sliding-window", "32")


def test_python_api_rejects_bad_inputs_with_value_errors():
    model = gf.build_segmentor("mit_b0", 7).eval()
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="'rgb'.*float64"):
        model([x.double(), x.double()])
    with pytest.raises(ValueError, match="'rgb'.*empty batch"):
        model([x[:0], x[:0]])
    with pytest.raises(ValueError, match="num_classes"):
        gf.build_segmentor("mit_b0", num_classes="7")
    with pytest.raises(ValueError, match="MiTConfig.mlp_ratio"):
        gf.build_segmentor(gf.MiTConfig(mlp_ratio="4"), 7)


# ------------------------------------------------------------------- silent wrong results


def test_a_mistyped_synthetic_data_root_is_refused(area):
    out, root = fresh(area, "run"), fresh(area, "typo")
    error_line(
        cli("train", "synthetic_tiny", "--set", f"data_root={root}", "--out", out), str(root)
    )
    assert not root.exists() and not out.exists()


def test_check_data_names_the_likely_layout(area, data):
    done = cli("check-data", "--dataset", "sunrgbd", "--root", data, "--no-progress")
    text = " ".join(warning_lines(done))
    assert "NYUDv2 layout" in text and "ignored" in text and "--dataset nyudv2" in text
    sun = fresh(area, "sun")
    for sub in ("RGB", "Depth", "labels"):
        (sun / sub).mkdir(parents=True)
    lines = []
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(sun / "RGB" / f"{i}.jpg")
        Image.fromarray(np.full((32, 32), 40, np.uint8)).save(sun / "Depth" / f"{i}.png")
        Image.fromarray(np.full((32, 32), 1 + i, np.uint8)).save(sun / "labels" / f"{i}.png")
        lines.append(f"RGB/{i}.jpg\tlabels/{i}.png\tDepth/{i}.png")
    (sun / "train.txt").write_text("\n".join(lines))
    done = cli("check-data", "--dataset", "nyudv2", "--root", sun, "--no-progress")
    text = " ".join(warning_lines(done))
    assert "SUN RGB-D layout" in text and "shifted by one" in text and "--dataset sunrgbd" in text


def test_folder_dataset_names_images_without_a_label(area, data):
    root = fresh(area, "folder")
    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        shutil.copy(data / "rgb" / f"00000{i}.png", root / "rgb")
        shutil.copy(data / "depth" / f"00000{i}.png", root / "depth")
    shutil.copy(data / "masks" / "000000.png", root / "labels")
    args = ["check-data", "--dataset", "folder", "--root", root, "--num-classes", "7"]
    error_line(cli(*args, "--no-progress"), "have no label", "000001.png", "allow_unlabelled")
    done = cli(*args, "--no-progress", "--allow-unlabelled")
    assert done.returncode == 0, done.stderr
    assert any("000002.png" in line for line in warning_lines(done))


def test_non_finite_weights_and_outputs_are_announced(area, model_folder, data):
    from safetensors.torch import load_file, save_file

    broken = fresh(area, "nan")
    shutil.copytree(model_folder, broken)
    state = load_file(broken / "model.safetensors")
    state["head.linear_pred.weight"][:] = float("nan")
    save_file(state, broken / "model.safetensors", {"format": "pt"})
    rgb, depth = data / "rgb" / "000001.png", data / "depth" / "000001.png"
    done = cli("predict", broken, "--rgb", rgb, "--depth", depth, "--out", fresh(area, "p"))
    lines = warning_lines(done)
    assert any("head.linear_pred.weight" in line and "NaN" in line for line in lines), lines
    assert any("predictions have NaN" in line for line in lines), lines
    assert all(line.startswith("geminifusion predict: warning: ") for line in lines)


def test_a_diverging_loss_stops_keeps_the_last_good_checkpoint_and_says_what_to_run(area, data):
    out = fresh(area, "diverge")
    args = ["train", "synthetic_tiny", "--set", f"data_root={data}", "--out", out]
    args += ["--set", "stage_lrs=[100,100,100]", "--set", "checkpoint_every=1", "--no-progress"]
    line = error_line(cli(*args), "diverged", "iteration")
    last = out / "checkpoints" / "last.pt"
    if "No checkpoint was written" in line:
        assert not last.exists()
    else:
        assert f"last good checkpoint is {last}" in line
        kept = read_checkpoint(last)
        assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
        assert max(kept["loss_history"]) < 1e3
    # The command it proposes works (with a rate low enough for this test to finish).
    command = line.split(": geminifusion train ", 1)[1].split()
    assert command[-1].startswith("stage_lrs=")
    done = cli("train", *command[:-1], "stage_lrs=[1e-4,1e-4,1e-4]", "--no-progress")
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------- checkpoints that may contain code


@pytest.mark.parametrize(
    "command",
    ["eval", "predict", "convert", "train --resume", "train --finetune", "train --pretrained"],
)
def test_a_checkpoint_that_may_run_code_is_refused_everywhere(area, data, evil, command):
    out = fresh(area, "out")
    tiny = ["synthetic_tiny", "--set", f"data_root={data}", "--out", out]
    argv = {
        "eval": ["eval", *tiny[:3], "-c", evil, "--out", out],
        "predict": [
            "predict",
            evil,
            "--rgb",
            data / "rgb",
            "--depth",
            data / "depth",
            "--out",
            out,
        ],
        "convert": ["convert", evil, out],
        "train --resume": ["train", *tiny, "--resume", evil],
        "train --finetune": ["train", *tiny, "--finetune", evil],
        "train --pretrained": ["train", *tiny, "--pretrained", evil],
    }[command]
    line = error_line(cli(*argv, "--no-progress" if command != "convert" else "--force"), UNSAFE)
    assert "weights_only" not in line and str(evil) in line
    assert not (area / "PWNED").exists()
