"""The demo: a quick run end to end, its folder rules, its table; the full run is slow."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

import geminifusion.cli as cli
from geminifusion.engine.demo import (
    QUICK,
    REQUIRED_MARGIN,
    DemoSettings,
    demo_config,
    demo_table,
    prepare_out_dir,
    run_demo,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for label in ("fused (rgb + depth)", "rgb only", "depth only"):
        assert label in printed
    assert "per-class IoU:" in printed and "needed: +10 each" in printed
    summary = json.loads((out / "demo.json").read_text())
    assert summary["status"] == "done" and summary["required_margin"] == REQUIRED_MARGIN
    assert list(summary["results"]) == ["fused", "rgb_only", "depth_only"]
    fused = summary["results"]["fused"]["mIoU"]
    for key, margin in summary["margins"].items():
        assert margin == pytest.approx(fused - summary["results"][key]["mIoU"])
    assert (out / "table.txt").read_text().strip() in printed
    for key in ("fused", "rgb_only", "depth_only"):
        assert (out / key / "checkpoints" / "best.pt").is_file()
    # Two held-out scenes, each a row of RGB | depth | ground truth | three predictions.
    figure = Image.open(out / "comparison.png")
    assert figure.width > 6 * 2 * 64 and figure.height > 2 * 2 * 64
    # Running it again needs --overwrite, which replaces the earlier demo's files only.
    again = ["demo", "--quick", "--out", str(out), "--no-progress", "--iters", "2"]
    (out / "notes.txt").write_text("mine")
    assert cli.main(again) == 2
    assert "holds an earlier demo" in capsys.readouterr().err
    assert cli.main(again + ["--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine"


def test_out_folder_rules(tmp_path):
    prepare_out_dir(tmp_path / "new", overwrite=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    for overwrite in (False, True):  # a folder of the user's is never the demo's
        with pytest.raises(ValueError, match="files geminifusion did not write"):
            prepare_out_dir(busy, overwrite=overwrite)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    code = cli.main(["demo", "--quick", "--out", str(busy / "notes.txt")])
    assert code == 2
    assert cli.main(["demo", "--iters", "0", "--out", str(tmp_path / "x")]) == 2


def test_demo_config_follows_the_recipe():
    settings = DemoSettings()
    config = demo_config("synthetic_mit_b0", settings, tmp := "data")
    assert config.data_root == tmp and config.modalities == ("rgb", "depth")
    assert len(config.stage_epochs) == 3 and config.stage_lrs == tuple(settings.stage_lrs)
    per_epoch = (settings.num_scenes - round(0.2 * settings.num_scenes)) // settings.batch_size
    assert config.total_epochs * per_epoch >= settings.iters
    assert config.val_every == config.total_epochs and config.freeze_bn
    assert config.decoder_lr_mult == 10.0 and not config.train_alpha
    assert demo_config("synthetic_mit_b0_depth", QUICK, "d").modalities == ("depth",)


def test_table_and_verdict():
    def scores(miou):
        return {"mIoU": miou, "aAcc": 90.0, "mAcc": 80.0, "IoU": [miou, math.nan]}

    results = {"fused": scores(80.0), "rgb_only": scores(60.0), "depth_only": scores(75.0)}
    labels = {"fused": "fused", "rgb_only": "rgb only", "depth_only": "depth only"}
    margins = {"rgb_only": 20.0, "depth_only": 5.0}
    text = demo_table(results, labels, ["wall", "chair"], margins, passed=False)
    assert text.endswith("rgb only by +20.0, depth only by +5.0 points (needed: +10 each): FAIL")
    assert "| chair |  nan  |   nan    |    nan     |" in text


@pytest.mark.slow
def test_full_demo_fused_beats_both_by_ten_points(tmp_path):
    result = run_demo(tmp_path / "demo", progress=False, log=lambda *a: None)
    assert result.passed, result.table
    assert all(m >= REQUIRED_MARGIN for m in result.margins.values())
