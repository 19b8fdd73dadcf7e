"""The training engine on a tiny synthetic set: loss, run folder, exact resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import geminifusion.cli as cli
import geminifusion.engine.train as train_module
from geminifusion.checkpoints import read_checkpoint, to_reference_state_dict
from geminifusion.configs import build_model, get_preset
from geminifusion.data import generate_synthetic_dataset
from geminifusion.engine import distributed as D
from geminifusion.engine.losses import output_loss, segmentation_loss
from geminifusion.engine.rng import capture_rng_state, restore_rng_state
from geminifusion.engine.train import Trainer, TrainingError, train
from geminifusion.runs import load_run_config
from geminifusion.weights.io import save_checkpoint
from geminifusion.weights.load import load_weights
from geminifusion.weights.training import finetune_state


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny tensors: more threads only add overhead


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(root, num=10, size=(64, 64), seed=0)
    return root


@pytest.fixture(scope="module")
def config(data_root):
    """Three stages of one epoch, four iterations each, a checkpoint every third iteration."""
    return get_preset("synthetic_tiny").replace(data_root=str(data_root), checkpoint_every=3)


@pytest.fixture(scope="module")
def full_run(config, tmp_path_factory):
    torch.set_num_threads(1)
    return train(config, tmp_path_factory.mktemp("full") / "run", progress=False)


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


# ------------------------------------------------------------------------------ loss


def test_loss_is_the_nll_summed_over_outputs_with_ignore():
    gen = torch.Generator().manual_seed(0)
    outputs = [torch.randn(2, 5, 4, 6, generator=gen) for _ in range(3)]
    label = torch.randint(0, 5, (2, 16, 24), generator=gen)
    label[0, :3] = 255
    total, parts = segmentation_loss(outputs, label)
    by_hand = []
    for o in outputs:
        up = F.interpolate(o, size=(16, 24), mode="bilinear", align_corners=False)
        logp = up.log_softmax(1).permute(0, 2, 3, 1)[label != 255]
        by_hand.append(-logp.gather(1, label[label != 255][:, None]).mean())
    assert torch.allclose(torch.stack(parts), torch.stack(by_hand), atol=1e-6)
    assert torch.allclose(total, sum(by_hand), atol=1e-5)


def test_loss_of_an_all_ignored_batch_is_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = output_loss(logits, torch.full((1, 8, 8), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


# ------------------------------------------------------------------------------ training


def test_short_train_reduces_the_loss_and_fills_the_run_folder(full_run):
    run = full_run.run_dir
    assert full_run.finished and full_run.iterations == 12 and full_run.epochs == 3
    for name in ("config.yaml", "metrics.jsonl", "train.log", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert not list((run / "checkpoints").glob(".*tmp"))
    train_records = [r for r in records(run) if r["type"] == "train"]
    val_records = [r for r in records(run) if r["type"] == "val"]
    assert [r["iter"] for r in train_records] == list(range(1, 13))
    losses = [r["loss"] for r in train_records]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    assert set(train_records[0]["losses"]) == {"rgb", "depth", "ensemble"}
    assert set(train_records[0]["lr"]) == {"encoder", "encoder_norm", "decoder"}
    assert [r["epoch"] for r in val_records] == [0, 1, 2]
    assert set(val_records[0]["metrics"]) == {"rgb", "depth", "ensemble"}
    assert full_run.best_checkpoint is not None and full_run.best["output"] == "ensemble"
    assert full_run.best["mIoU"] == max(r["metrics"]["ensemble"]["mIoU"] for r in val_records)

    last = read_checkpoint(run / "checkpoints" / "last.pt")
    assert last["position"] == {"stage": 2, "epoch": 3, "batch": 0, "iter": 12, "world_size": 1}
    # Frozen BatchNorm: its statistics never move from their initial values.
    assert torch.equal(last["model"]["head.linear_fuse.bn.running_mean"], torch.zeros(16))
    assert torch.equal(last["model"]["head.linear_fuse.bn.running_var"], torch.ones(16))
    assert int(last["model"]["head.linear_fuse.bn.num_batches_tracked"]) == 0
    # alpha is not trained by default.
    assert torch.equal(last["model"]["alpha"], torch.ones(2))
    # The saved config rebuilds the run.
    assert load_run_config(run) == full_run_config(run)


def full_run_config(run: Path):
    from geminifusion.configs import load_config

    return load_config(run / "config.yaml")


@pytest.mark.parametrize("stop", [3, 7])
def test_resume_after_a_kill_gives_bit_identical_weights(config, full_run, tmp_path, stop):
    """Stopped at ``stop`` (3: right after a mid-epoch checkpoint; 7: one iteration after the
    stage-2 checkpoint at 6, which is lost and redone), then resumed by fresh objects."""
    run = tmp_path / "run"
    stopped = train(config, run, progress=False, stop_after=stop)
    assert not stopped.finished and stopped.iterations == stop
    resumed = train(config, run, resume=True, progress=False)
    assert resumed.finished and resumed.iterations == 12
    ours, reference = final_weights(run), final_weights(full_run.run_dir)
    assert ours.keys() == reference.keys()
    for key in ours:
        assert torch.equal(ours[key], reference[key]), key

    def strip(rs):
        return [{k: v for k, v in r.items() if k != "time"} for r in rs]

    assert strip(records(run)) == strip(records(full_run.run_dir))


def test_a_finished_run_resumes_to_nothing(full_run, config):
    result = train(config, full_run.run_dir, resume=True, progress=False)
    assert result.finished and result.iterations == 12


def test_run_folder_policy(config, full_run, tmp_path):
    with pytest.raises(ValueError, match="already holds a run.*--resume.*--overwrite"):
        train(config, full_run.run_dir, progress=False)
    changed = config.replace(batch_size=4)
    with pytest.raises(ValueError, match=r"(?s)another config.*batch_size: 2 -> 4"):
        train(changed, full_run.run_dir, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(config, tmp_path / "empty", resume=True, progress=False)
    short = config.replace(stage_epochs=(1, 0, 0))
    train(short, tmp_path / "again", progress=False, stop_after=1)
    result = train(short, tmp_path / "again", overwrite=True, progress=False)
    assert result.finished and result.iterations == 4
    assert [r["iter"] for r in records(tmp_path / "again") if r["type"] == "train"] == [1, 2, 3, 4]


def test_nan_loss_stops_with_the_iteration_and_keeps_the_checkpoint(config, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train_module.segmentation_loss

    def poisoned(outputs, label, ignore_index=255, **kwargs):
        calls["n"] += torch.is_grad_enabled()  # training steps, not the check before a save
        total, parts = real(outputs, label, ignore_index, **kwargs)
        return (total * float("nan"), parts) if calls["n"] == 5 else (total, parts)

    monkeypatch.setattr(train_module, "segmentation_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"loss is nan at iteration 5 .*last good checkpoint"):
        train(config, run, progress=False)
    last = read_checkpoint(run / "checkpoints" / "last.pt")
    assert last["position"]["iter"] == 4  # the end of epoch 1; nothing after it was written
    assert not list((run / "checkpoints").glob(".*tmp"))
    assert max(r["iter"] for r in records(run)) == 4


# ------------------------------------------------------------------------------ weights


def test_finetune_keeps_everything_but_the_classifier(config, full_run, tmp_path):
    source = build_model(config, 7)
    load_weights(source, full_run.run_dir / "checkpoints" / "last.pt")
    reference_file = tmp_path / "reference.pth"
    state = {"module." + k: v for k, v in to_reference_state_dict(source).items()}
    torch.save({"segmenter": state, "epoch_start": 0, "best_val": 1.0}, reference_file)
    for path in (full_run.run_dir / "checkpoints" / "last.pt", reference_file):
        torch.manual_seed(1)
        target = build_model(config, 5)  # another class count, as SUN RGB-D -> NYUDv2
        fresh = {k: v.clone() for k, v in target.state_dict().items()}
        skipped = finetune_state(target, path)
        assert skipped == ["head.linear_pred.weight", "head.linear_pred.bias"]
        for key, value in target.state_dict().items():
            expected = fresh[key] if key in skipped else source.state_dict()[key]
            assert torch.equal(value, expected), (path.name, key)


def test_resume_from_a_reference_checkpoint_starts_after_its_epoch(config, full_run, tmp_path):
    source = build_model(config, 7)
    load_weights(source, full_run.run_dir / "checkpoints" / "last.pt")
    path = tmp_path / "reference.pth"
    state = {"module." + k: v for k, v in to_reference_state_dict(source).items()}
    torch.save({"segmenter": state, "epoch_start": 0, "best_val": 12.5}, path)
    trainer = Trainer(config, D.setup_distributed("cpu"), tmp_path / "run", resume=str(path))
    try:
        assert trainer.position == {"stage": 1, "epoch": 1, "batch": 0, "iter": 4}
        assert trainer.best["mIoU"] == 12.5
        for key, value in trainer.model.state_dict().items():
            assert torch.equal(value, source.state_dict()[key]), key
    finally:
        trainer.close()


def test_atomic_save_never_leaves_a_torn_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"a": torch.ones(3)}, path)
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails midway
        save_checkpoint({"a": torch.zeros(3), "b": lambda: 0}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_rng_states_round_trip():
    import random

    import numpy as np

    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    buffer = __import__("io").BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and first[2] == again[2]


# ------------------------------------------------------------------------------ command line


@pytest.fixture
def main(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("geminifusion.commands.train",))
    return cli.main


def test_train_command(main, data_root, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "synthetic_tiny", "--set", f"data_root={data_root}", "--out", str(out)]
    args += ["--set", "stage_epochs=[1,0,0]", "--no-progress"]
    assert main(args) == 0
    assert "best checkpoint" in capsys.readouterr().out
    assert (out / "checkpoints" / "best.pt").is_file()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert main(["train", "--list"]) == 0
    assert "nyudv2_mit_b3" in capsys.readouterr().out.split()
    assert main(["train", "nyudv2_mit_b3", "--set", "seed=3", "--print-config"]) == 0
    assert "seed: 3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "nope=1"], "unknown config key 'nope'"),
        (["--set", "data_root=/does/not/exist", "--set", "dataset=nyudv2"], "does not exist"),
        (["--finetune", "/does/not/exist.pt"], "--finetune: file not found"),
        (["--pretrained", "/does/not/exist"], "--pretrained: file not found"),
        (["--resume", "/does/not/exist.pt"], "--resume: checkpoint not found"),
        (["--resume", "--overwrite"], "contradict"),
    ],
)
def test_train_command_errors_are_one_line(main, tmp_path, capsys, extra, message):
    assert main(["train", "synthetic_tiny", "--out", str(tmp_path / "r")] + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_checkpoint_of_another_model_is_refused(main, full_run, data_root, tmp_path, capsys):
    args = ["train", "synthetic_tiny", "--set", f"data_root={data_root}", "--out", str(tmp_path)]
    args += ["--set", "head_embed_dim=32", "--resume", str(full_run.last_checkpoint)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "does not fit this model" in err and "head.linear_c1.proj.weight" in err


def test_pretrained_backbone_starts_the_run(config, tmp_path):
    from test_pretrained import segformer_imagenet_state  # the original SegFormer file layout

    tiny = config.arch_overrides
    state = segformer_imagenet_state(tiny["embed_dims"], tiny["depths"], (8, 4, 2, 1))
    path = tmp_path / "mit_tiny.pth"
    torch.save(state, path)
    trainer = Trainer(
        config.replace(pretrained=str(path)), D.setup_distributed("cpu"), tmp_path / "run"
    )
    try:
        ours = trainer.model.state_dict()
        assert torch.equal(ours["backbone.block1.0.attn.q.weight"], state["block1.0.attn.q.weight"])
        for row in ours["backbone.norm4.weight"]:
            assert torch.equal(row, state["norm4.weight"])
    finally:
        trainer.close()
    assert "pretrained weights from" in (tmp_path / "run" / "train.log").read_text()


def test_checkpoint_of_another_class_count_says_so(config, full_run):
    with pytest.raises(ValueError, match="predicts 7 classes, the model 5"):
        load_weights(build_model(config, 5), full_run.last_checkpoint)
