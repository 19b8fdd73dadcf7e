"""TensorBoard logs of a training run, read back with TensorBoard's own event reader."""

from __future__ import annotations

import pytest
import torch

from geminifusion.cli import main
from geminifusion.configs import get_preset
from geminifusion.data import generate_synthetic_dataset
from geminifusion.engine.train import train


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny tensors


def read_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_training_writes_curves_scores_and_pictures(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    data = tmp_path / "data"
    generate_synthetic_dataset(data, num=10, size=(64, 64), seed=0)
    config = get_preset("synthetic_tiny").replace(
        data_root=str(data), tensorboard=True, stage_epochs=[1], stage_lrs=[6e-4]
    )
    run = tmp_path / "run"
    result = train(config, run, progress=False)
    events = read_events(run / "tb")
    tags = events.Tags()
    scalars, images = set(tags["scalars"]), set(tags["images"])

    outputs = ("rgb", "depth", "ensemble")
    assert {"train/loss"} | {f"train/loss/{o}" for o in outputs} <= scalars
    assert {"train/lr/encoder", "train/lr/encoder_norm", "train/lr/decoder"} <= scalars
    # One point per iteration, numbered like the metrics log.
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, result.iterations + 1))
    for key in ("aAcc", "mIoU", "mAcc"):
        assert {f"val/{key}/{o}" for o in outputs} <= scalars
    assert len(events.Scalars("val/mIoU/ensemble")) == 1  # one per epoch (val_every=1)
    assert any(t.startswith("val/IoU/") for t in scalars)
    assert {f"val_images/0/{k}" for k in ("rgb", "depth", "label", "prediction")} <= images
    picture = events.Images("val_images/0/prediction")[-1]
    assert (picture.width, picture.height) == (64, 64)
    (tmp_path / "prediction.png").write_bytes(picture.encoded_image_string)

    # The validation scores are those of the metrics log.
    import json

    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in val if r["type"] == "val"]
    logged = [e.value for e in events.Scalars("val/mIoU/ensemble")]
    assert logged == pytest.approx([r["metrics"]["ensemble"]["mIoU"] for r in val], abs=1e-4)


def test_missing_tensorboard_is_reported_before_the_run_folder(tmp_path, capsys, monkeypatch):
    import geminifusion.extras as extras

    real = extras.importlib.util.find_spec
    monkeypatch.setattr(
        extras.importlib.util,
        "find_spec",
        lambda n, *a: None if n == "tensorboard" else real(n, *a),
    )
    run = tmp_path / "run"
    data = tmp_path / "data"
    args = ["train", "synthetic_tiny", "--set", "tensorboard=true", "--out", str(run)]
    assert main([*args, "--set", f"data_root={data}"]) == 2
    err = capsys.readouterr().err.strip()
    assert 'pip install "geminifusion[tensorboard]"' in err and "\n" not in err
    assert not run.exists()
