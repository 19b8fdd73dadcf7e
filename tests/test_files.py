"""The output rule of geminifusion.files, piece by piece (the CLI cases are in test_user_files)."""

from __future__ import annotations

import json
import os

import pytest

from geminifusion.engine.divergence import LossWatch, lower_rates
from geminifusion.engine.predict import unique_names
from geminifusion.files import (
    MANIFEST,
    AppendFile,
    OutputError,
    OutputFolder,
    WriteError,
    adopt_complete_sets,
    atomic_write,
    check_apart,
    claim_file,
    describe_os_error,
    foreign_files,
    read_manifest,
    write_file_bytes,
    write_text,
)


def test_a_new_folder_is_created_only_when_the_first_file_goes_in(tmp_path):
    folder = OutputFolder.open(tmp_path / "a" / "b", "predict")
    folder.claim("x.png")
    assert not (tmp_path / "a").exists()  # a command failing now leaves nothing
    folder.write_text("x.png", "x")
    assert read_manifest(tmp_path / "a" / "b") == ("predict", {"x.png": "predict"})


def test_a_folder_of_the_users_is_refused_and_named(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.txt").write_text("m")
    (tmp_path / "notes.txt").write_text("n")
    with pytest.raises(OutputError, match=r"notes\.txt, sub/mine\.txt"):
        OutputFolder.open(tmp_path, "eval")
    file = tmp_path / "notes.txt"
    with pytest.raises(OutputError, match="is a file"):
        OutputFolder.open(file, "eval")


def test_claims_never_take_a_file_the_manifest_does_not_list(tmp_path):
    folder = OutputFolder.open(tmp_path / "out", "predict")
    folder.write_text("a.png", "ours")
    (tmp_path / "out" / "b.png").write_text("theirs")
    again = OutputFolder.open(tmp_path / "out", "predict")  # ours: user files inside are fine
    with pytest.raises(OutputError, match=r"b\.png was not written by geminifusion"):
        again.claim("a.png", "b.png")
    assert (tmp_path / "out" / "b.png").read_text() == "theirs"
    with pytest.raises(OutputError, match="geminifusion predict"):
        OutputFolder.open(tmp_path / "out", "train")  # another command's folder


def test_remove_deletes_only_listed_files_and_empties_sub_folders_by_their_manifest(tmp_path):
    out = tmp_path / "demo"
    demo = OutputFolder.open(out, "demo")
    demo.claim("data/", "table.txt")
    data = OutputFolder.open(out / "data", "synth")
    data.write_text("rgb/0.png", "0")
    (out / "data" / "mine.txt").write_text("the user's")
    demo.write_text("table.txt", "t")
    (out / "notes.txt").write_text("the user's")
    assert foreign_files(out) == ["data/mine.txt", "notes.txt"]
    assert OutputFolder.open(out, "demo").remove() == ["data/", "table.txt"]
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert left == [MANIFEST, "data/.geminifusion.json", "data/mine.txt", "notes.txt"]


def test_a_kill_leaves_temporary_files_that_the_next_open_removes(tmp_path):
    folder = OutputFolder.open(tmp_path / "run", "train")
    folder.write_text("checkpoints/last.pt", "ok")
    torn = tmp_path / "run" / "checkpoints" / ".last.pt.abc123.tmp"
    torn.write_text("half")
    assert foreign_files(tmp_path / "run") == []  # a torn write of ours is not the user's
    OutputFolder.open(tmp_path / "run", "train")
    assert not torn.exists()


def test_single_files_are_replaced_only_when_geminifusion_wrote_them(tmp_path):
    mine = tmp_path / "mine.pth"
    mine.write_text("the user's")
    with pytest.raises(OutputError, match="pass --force"):
        claim_file(mine, "convert")
    with pytest.raises(OutputError, match="not written by geminifusion"):
        claim_file(mine, "convert", replace=True)
    ours = tmp_path / "ours.pth"
    claim_file(ours, "convert")
    write_file_bytes(ours, b"1", "convert")
    claim_file(ours, "export", replace=True)
    assert read_manifest(tmp_path) == (None, {"ours.pth": "convert"})
    with pytest.raises(OutputError, match="is a folder"):
        claim_file(tmp_path, "convert")


def test_outputs_stay_apart_from_inputs(tmp_path):
    (tmp_path / "rgb").mkdir()
    image = tmp_path / "rgb" / "a.png"
    image.write_text("")
    for out in (tmp_path / "rgb", tmp_path / "rgb" / "preds", image):
        with pytest.raises(OutputError, match="input"):
            check_apart(out, [tmp_path / "rgb"])
    with pytest.raises(OutputError, match="among the inputs"):
        check_apart(tmp_path / "rgb", [image])
    check_apart(tmp_path / "preds", [image, tmp_path / "rgb"])


def test_earlier_outputs_are_recognised_only_as_complete_sets(tmp_path):
    adopt = adopt_complete_sets(("_classes.png", "_color.png", "_overlay.png"))
    for name in ("a_classes.png", "a_color.png", "a_overlay.png"):
        (tmp_path / name).write_text("")
    assert adopt(tmp_path) == ["a_classes.png", "a_color.png", "a_overlay.png"]
    (tmp_path / "a_overlay.png").unlink()
    assert adopt(tmp_path) is None


def test_atomic_writes_keep_the_mode_and_leave_no_temporary_file(tmp_path):
    path = tmp_path / "f.txt"
    write_text(path, "one")
    os.chmod(path, 0o640)
    write_text(path, "two")
    assert path.read_text() == "two" and (path.stat().st_mode & 0o777) == 0o640

    def fails(f):
        f.write(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(path, fails)
    assert path.read_text() == "two" and sorted(os.listdir(tmp_path)) == ["f.txt"]
    with pytest.raises(WriteError, match="is a folder"):
        write_text(tmp_path, "x")
    with pytest.raises(WriteError, match="not a folder"):
        write_text(path / "below.txt", "x")


def test_logs_grow_by_whole_lines(tmp_path):
    log = AppendFile(tmp_path / "train.log")
    log.write_line("one")
    log.close()
    with open(tmp_path / "train.log", "a") as f:
        f.write('{"torn": ')  # a kill mid-line
    log = AppendFile(tmp_path / "train.log")
    log.write_line("two")
    log.close()
    assert (tmp_path / "train.log").read_text().splitlines() == ["one", '{"torn": ', "two"]


def test_os_errors_are_one_line_naming_the_path():
    assert describe_os_error(PermissionError(13, "Permission denied", "a/b")) == (
        "permission denied: a/b"
    )
    assert describe_os_error(FileNotFoundError("--list: file not found: x")) == (
        "--list: file not found: x"
    )


def test_prediction_names_never_collide():
    assert unique_names(["a", "a", "a_1", "b", "a"]) == ["a", "a_2", "a_1", "b", "a_3"]


def test_loss_watch_tells_divergence_from_noise():
    watch = LossWatch()
    assert watch.problem(5.0) is None  # nothing to compare with yet
    for value in (5.0, 4.0, 6.0, 0.001):
        watch.add(value)
    assert watch.problem(900.0) is None  # noisy, not diverged
    assert "diverged" in watch.problem(5e4)
    assert "nan" in watch.problem(float("nan"))
    converged = LossWatch([1e-4] * 50)
    assert converged.problem(0.5) is None  # a median below 1 counts as 1
    assert LossWatch(json.loads(json.dumps(watch.state()))).state() == watch.state()
    assert lower_rates((6e-5, 3e-5)) == "[6e-06,3e-06]"
