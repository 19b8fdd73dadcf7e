"""``eval`` and ``predict`` end to end, the palette, and clean errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import geminifusion.cli as cli
from geminifusion.configs import get_preset
from geminifusion.data import build_dataset, generate_synthetic_dataset
from geminifusion.engine.evaluate import build_eval_loader, evaluate
from geminifusion.engine.inference import predict_classes
from geminifusion.engine.train import train
from geminifusion.engine.visualize import (
    PALETTE,
    colorize,
    comparison_figure,
    voc_palette,
    write_prediction,
)
from geminifusion.weights import load_model


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny tensors: more threads only add overhead


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny fused model trained for a few iterations on 10 synthetic scenes (2 held out)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval")
    generate_synthetic_dataset(root / "data", num=10, size=(64, 64), seed=0)
    config = get_preset("synthetic_tiny").replace(
        data_root=str(root / "data"), stage_epochs=(1, 1, 0)
    )
    return train(config, root / "run", progress=False).run_dir


def main(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------------- palette


def test_palette_is_the_reference_cmap(reference_dir):
    cmap = np.load(reference_dir / "cmap.npy")
    assert voc_palette().tobytes() == cmap.tobytes() and cmap.dtype == np.uint8


def test_palette_rule_and_colours():
    p = voc_palette()
    assert p.shape == (256, 3) and p.dtype == np.uint8
    assert p[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert p[255].tolist() == [224, 224, 192]
    classes = np.array([[0, 1, 255], [39, 2, 0]])
    colours = colorize(classes)
    assert colours[0, 0].tolist() == PALETTE[1].tolist()  # class k -> cmap[k + 1]
    assert colours[1, 0].tolist() == PALETTE[40].tolist()
    assert colours[0, 2].tolist() == [0, 0, 0]  # ignore -> cmap[0], black


def test_prediction_files_and_figure(tmp_path):
    classes = np.random.default_rng(0).integers(0, 40, (20, 30))
    image = np.full((20, 30, 3), 200, np.uint8)
    written = write_prediction(tmp_path, "x", classes, image, opacity=0.25)
    assert sorted(written) == ["classes", "color", "overlay"]
    assert np.array_equal(np.array(Image.open(written["classes"])), classes)
    assert np.array_equal(np.array(Image.open(written["color"])), colorize(classes))
    blend = np.rint(0.75 * 200 + 0.25 * colorize(classes).astype(float))
    assert np.array_equal(np.array(Image.open(written["overlay"])), blend.astype(np.uint8))
    fig = comparison_figure([[("a", image), ("b", image)]] * 3, scale=2, gap=4, title="t")
    assert fig.width == 2 * 60 + 3 * 4 and fig.height > 3 * 40


# -------------------------------------------------------------------------------------- eval


def test_eval_prints_and_saves_the_table(run, tmp_path, capsys):
    code, out, err = main(["eval", run, "--out", tmp_path, "--no-progress"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert "per-class results (ensemble):" in lines
    header = lines[lines.index("per-class results (ensemble):") + 2]
    assert [c.strip() for c in header.strip("|").split("|")] == ["Class", "IoU", "Acc"]
    summary = lines[lines.index("Summary:") + 2]
    assert [c.strip() for c in summary.strip("|").split("|")] == ["Output", "aAcc", "mIoU", "mAcc"]
    record = json.loads((tmp_path / "eval_val.json").read_text())
    assert (tmp_path / "eval_val.txt").read_text().startswith("per-class results")
    assert list(record["results"]) == ["rgb", "depth", "ensemble"]
    assert record["num_images"] == 2 and len(record["class_names"]) == 7

    # The saved numbers are those of the library call on the same weights.
    model = load_model(run)
    val = build_dataset("synthetic", run.parent / "data", "val")
    expected = evaluate(model, build_eval_loader(val), 7, progress=False)
    for name, scores in expected.items():
        assert record["results"][name]["mIoU"] == pytest.approx(scores["mIoU"], abs=1e-12)
        assert record["results"][name]["pixels"] == scores["pixels"]


def test_eval_with_test_time_options_and_explicit_checkpoint(run, tmp_path, capsys):
    args = ["eval", "synthetic_tiny", "--checkpoint", run / "checkpoints" / "last.pt"]
    args += ["--set", f"data_root={run.parent / 'data'}", "--out", tmp_path, "--no-progress"]
    args += ["--scales", "0.75", "1", "--flip", "--sliding-window", "48x48", "--stride", "16"]
    code, out, err = main(args, capsys)
    assert code == 0, err
    assert "scales [0.75, 1.0], flip, sliding window 48x48" in out
    record = json.loads((tmp_path / "eval_val_ms_flip_slide.json").read_text())
    assert record["options"] == {
        "scales": [0.75, 1.0], "flip": True, "window": [48, 48], "stride": [16, 16]
    }  # fmt: skip


def _nyu_folder(root: Path, count: int = 2) -> Path:
    """A NYUDv2-layout folder of random 64 x 96 images; labels hold 255 and values >= 40."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        for sub in ("rgb", "depth", "masks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(
            root / f"rgb/{i}.png"
        )
        Image.fromarray(rng.integers(0, 256, (64, 96), dtype=np.uint8)).save(
            root / f"depth/{i}.png"
        )
        label = rng.integers(0, 40, (64, 96)).astype(np.uint8)
        label[:4] = 255
        label[4:8] = 45
        Image.fromarray(label).save(root / f"masks/{i}.png")
        lines.append(f"rgb/{i}.png\tmasks/{i}.png\tdepth/{i}.png")
    (root / "val.txt").write_text("\n".join(lines))
    return root


def test_eval_accepts_a_reference_checkpoint(reference_dir, tmp_path, capsys):
    data = _nyu_folder(tmp_path / "nyu")
    args = ["eval", "nyudv2_mit_b0", "-c", reference_dir / "mit_b0_nyu.pth"]
    args += ["--set", f"data_root={data}", "--set", "num_workers=0"]
    args += ["--out", tmp_path / "out", "--no-progress"]
    code, out, err = main(args, capsys)
    assert code == 0, err
    assert "(reference)" in out
    first_cells = {line.split("|")[1].strip() for line in out.splitlines() if line.startswith("|")}
    assert {"wall", "otherprop", "ensemble"} <= first_cells
    record = json.loads((tmp_path / "out" / "eval_val.json").read_text())
    # Rows 0..7 of each image are 255 or 45: skipped, like the reference skips labels >= 40.
    assert record["results"]["ensemble"]["pixels"] == 2 * 56 * 96


def test_bad_input_gives_a_clean_message(run, reference_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    cases = [
        (["eval", run, "--set", "no_such_key=1"], "unknown config key 'no_such_key'"),
        (["eval", run, "-c", reference_dir / "mit_b0_nyu.pth"], "40 classes, the model 7"),
        (["eval", run, "--set", "data_root=/no/such/folder"], "does not exist"),
        (["eval", "synthetic_tiny"], "give --checkpoint"),
        (["eval", run, "-c", tmp_path / "missing.pt"], "file not found"),
        (["predict", run, "--rgb", tmp_path / "in", "--out", tmp_path / "p"], "give --depth"),
        (["predict", run, "--rgb", "a.png", "--depth", "b.png", "--out", tmp_path], "not found"),
        (["predict", run, "--list", tmp_path / "no.txt", "--out", tmp_path], "file not found"),
    ]
    for args, message in cases:
        code, out, err = main(args, capsys)
        assert code == 2, (args, out, err)
        assert message in err and "Traceback" not in err, (args, err)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = main(["predict", bad, "--rgb", "x", "--out", tmp_path / "q"], capsys)
    assert code == 2 and "not a readable PyTorch checkpoint" in err


# ----------------------------------------------------------------------------------- predict


def test_predict_writes_the_three_images(run, tmp_path, capsys):
    data = run.parent / "data"
    rgb, depth = data / "rgb" / "000008.png", data / "depth" / "000008.png"
    code, out, err = main(
        ["predict", run, "--rgb", rgb, "--depth", depth, "--out", tmp_path], capsys
    )
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".geminifusion.json", "000008_classes.png", "000008_color.png", "000008_overlay.png"
    ]  # fmt: skip
    classes = np.array(Image.open(tmp_path / "000008_classes.png"))
    val = build_dataset("synthetic", data, "val")
    sample = val[0]
    assert sample["paths"]["rgb"].endswith("000008.png")
    expected = predict_classes(load_model(run), [sample["rgb"][None], sample["depth"][None]])[-1]
    assert np.array_equal(classes, expected[0].numpy())
    assert np.array_equal(np.array(Image.open(tmp_path / "000008_color.png")), colorize(classes))
    overlay = np.array(Image.open(tmp_path / "000008_overlay.png"))
    assert overlay.shape == (64, 64, 3)


def test_predict_on_folders_and_split_lists(run, tmp_path, capsys):
    data = run.parent / "data"
    args = ["predict", run / "checkpoints" / "last.pt", "--rgb", data / "rgb"]
    code, _, err = main(args + ["--depth", data / "depth", "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    assert len(list((tmp_path / "a").glob("*_color.png"))) == 10
    args = ["predict", run, "--list", data / "val.txt", "--out", tmp_path / "b", "--flip"]
    code, out, err = main(args + ["--output", "depth"], capsys)
    assert code == 0, err
    assert "wrote 2 predictions (depth)" in out
    assert len(list((tmp_path / "b").glob("*_overlay.png"))) == 2


# ------------------------------------------------------------------------------- distributed

LAUNCHER = """\
import sys
import geminifusion.cli as cli
cli.COMMAND_MODULES = ("geminifusion.commands.eval",)
sys.exit(cli.main())
"""


@pytest.mark.slow  # three fresh interpreters; test_distributed.py checks DDP validation by default
def test_two_process_eval_equals_one_process(run, tmp_path, capsys):
    """``eval`` under torchrun: each process scores its shard (3 and 2 of 5 images), the summed
    matrices give exactly the one-process numbers."""
    generate_synthetic_dataset(tmp_path / "data", num=10, size=(64, 64), seed=1, val_fraction=0.5)
    sets = ["--set", f"data_root={tmp_path / 'data'}"]
    code, _, err = main(["eval", run, *sets, "--out", tmp_path / "one", "--no-progress"], capsys)
    assert code == 0, err
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    command += ["2", str(launcher), "eval", str(run), *sets, "--out", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command + ["--no-progress"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "eval_val.json").read_text())
    two = json.loads((tmp_path / "two" / "eval_val.json").read_text())
    assert one["num_images"] == 5 and two["processes"] == 2
    assert one["results"] == two["results"]
