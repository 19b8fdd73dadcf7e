"""``geminifusion synth`` and ``geminifusion check-data``."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from geminifusion.commands import data as data_commands
from test_data_helpers import make_folder, make_nyu, save


def run(argv: list[str]) -> int:
    """Parse with only the data commands registered, then run like ``cli.main`` would."""
    parser = argparse.ArgumentParser(prog="geminifusion")
    data_commands.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_synth_then_check_data(tmp_path, capsys):
    out = tmp_path / "synth"
    assert run(["synth", str(out), "--num", "5", "--size", "24x32", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 5 samples (4 train, 1 val) of 24x32" in printed
    assert (out / "train.txt").is_file() and len(list((out / "rgb").iterdir())) == 5
    code = run(["check-data", "--dataset", "synthetic", "--root", str(out), "--split", "val"])
    report = capsys.readouterr().out
    assert code == 0 and "samples   1 (modalities: rgb, depth)" in report
    assert "result    OK" in report
    with pytest.raises(ValueError, match="not empty"):
        run(["synth", str(out), "--num", "2"])


def test_synth_deliver_layout(tmp_path, capsys):
    out = tmp_path / "deliver"
    args = ["synth", str(out), "--layout", "deliver", "--num", "4", "--size", "16x24"]
    assert run(args) == 0
    assert (out / "hha" / "sun" / "train" / "seq00" / "000000_depth.png").is_file()
    capsys.readouterr()
    code = run(["check-data", "--dataset", "deliver", "--root", str(out), "--conditions", "sun"])
    assert code == 0 and "(modalities: rgb, depth, event, lidar)" in capsys.readouterr().out


def test_check_data_reports_errors_and_exits_non_zero(tmp_path, capsys):
    root = make_nyu(tmp_path)
    save(root / "depth" / "000002.png", np.zeros((5, 5), np.uint8))
    (root / "rgb" / "000000.png").write_bytes(b"broken")
    argv = ["check-data", "--dataset", "nyudv2", "--root", str(root), "--modalities", "rgb,depth"]
    assert run(argv) == 1
    report = capsys.readouterr().out
    assert "2 errors" in report and "result    FAILED (2 errors)" in report
    assert f"error: {root / 'rgb' / '000000.png'}: cannot decode image" in report
    assert f"error: {root / 'depth' / '000002.png'}: depth image is 5x5" in report


def test_check_data_folder_options(tmp_path, capsys):
    root = make_folder(tmp_path)
    argv = ["check-data", "--dataset", "folder", "--root", str(root), "--num-classes", "3"]
    assert run([*argv, "--modalities", "thermal"]) == 0
    assert "(modalities: thermal)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="give num_classes"):
        run(argv[:5])
    with pytest.raises(ValueError, match="folder only"):
        run(["check-data", "--dataset", "nyudv2", "--root", str(root), "--num-classes", "3"])


def test_registered_in_the_main_cli(tmp_path, capsys, monkeypatch):
    from geminifusion import cli

    assert "geminifusion.commands.data" in cli.COMMAND_MODULES
    # Only ours, so that this test does not depend on the other command modules.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("geminifusion.commands.data",))
    assert cli.main(["check-data", "--dataset", "nyudv2", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "check-data: error:" in err and "train.txt: split list not found" in err
