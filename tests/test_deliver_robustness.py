"""DeLiVER recipe pieces: OHEM loss, modality dropout, dead sensors, per-condition evaluation."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from geminifusion.backbones.deliver import DeliverConfig
from geminifusion.engine.losses import ohem_loss, segmentation_loss
from geminifusion.engine.robustness import (
    DroppedModality,
    dead_sensor,
    format_robustness_table,
    modality_dropout,
    robustness_report,
    save_report,
)

MODALITIES = ("rgb", "depth", "event", "lidar")
TINY = DeliverConfig(embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4))


def reference_ohem(logits, label, ignore=255):
    """The DeLiVER branch's OHEM, written as its code base states it."""
    threshold = -torch.log(torch.tensor(0.7, dtype=torch.float))
    n_min = label[label != ignore].numel() // 16
    loss = F.cross_entropy(logits, label, ignore_index=ignore, reduction="none").view(-1)
    hard = loss[loss > threshold]
    if hard.numel() < n_min:
        hard, _ = loss.topk(n_min)
    return torch.mean(hard)


@pytest.mark.parametrize("confidence,enough_hard", [(0.0, True), (3.0, True), (8.0, False)])
def test_ohem_matches_the_reference_rule(confidence, enough_hard):
    gen = torch.Generator().manual_seed(1)
    label = torch.randint(0, 5, (2, 24, 32), generator=gen)
    label[:, :4] = 255
    logits = torch.randn(2, 5, 24, 32, generator=gen)
    logits += confidence * F.one_hot(label.clamp(max=4), 5).permute(0, 3, 1, 2)  # easy pixels
    ours = ohem_loss(logits, label)
    torch.testing.assert_close(ours, reference_ohem(logits, label), rtol=1e-6, atol=0)
    loss = F.cross_entropy(logits, label, ignore_index=255, reduction="none")
    hard = int((loss > -math.log(0.7)).sum())
    assert (hard >= int((label != 255).sum()) // 16) == enough_hard  # both regimes are tested


def test_ohem_edge_cases_and_upsampling():
    label = torch.full((1, 16, 16), 255)
    logits = torch.randn(1, 3, 16, 16, requires_grad=True)
    loss = ohem_loss(logits, label)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().sum() == 0
    label = torch.randint(0, 3, (1, 16, 16))
    small = torch.randn(1, 3, 4, 4)
    big = F.interpolate(small, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ohem_loss(small, label), ohem_loss(big, label))
    total, parts = segmentation_loss([big, big], label, kind="ohem")
    torch.testing.assert_close(total, 2 * ohem_loss(big, label))
    with pytest.raises(ValueError, match="unknown loss"):
        segmentation_loss([big], label, kind="focal")


def test_modality_dropout_drops_one_extra_sensor_per_hit_sample():
    x = [torch.rand(4000, 3, 2, 2) + 1 for _ in MODALITIES]
    assert all(a is b for a, b in zip(modality_dropout(x, MODALITIES, 0.0), x, strict=True))
    gen = torch.Generator().manual_seed(0)
    out = modality_dropout(x, MODALITIES, 1.0, gen)
    assert torch.equal(out[0], x[0])
    dropped = torch.stack([(o == 0).flatten(1).all(1) for o in out[1:]])  # (3, B)
    assert torch.equal(dropped.sum(0), torch.ones(4000, dtype=torch.long))
    half = modality_dropout(x, MODALITIES, 0.6, torch.Generator().manual_seed(1))
    rates = torch.stack([(o == 0).flatten(1).all(1) for o in half[1:]]).float().mean(1)
    torch.testing.assert_close(rates, torch.full((3,), 0.2), rtol=0, atol=0.025)
    again = modality_dropout(x, MODALITIES, 0.6, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(half, again, strict=True))
    with pytest.raises(ValueError, match="lie in"):
        modality_dropout(x, MODALITIES, 1.5)


def test_dead_sensor_modes():
    like = torch.rand(2, 3, 8, 8)
    assert torch.equal(dead_sensor("depth", like, "zeros"), torch.zeros_like(like))
    noise = dead_sensor("lidar", like, "noise", torch.Generator().manual_seed(0))
    assert noise.min() >= 0 and noise.max() < 1 and not torch.equal(noise, like)
    rgb = dead_sensor("rgb", like, "noise", torch.Generator().manual_seed(0))
    assert rgb.min() < 0  # normalised like a colour image
    with pytest.raises(ValueError, match="drop mode"):
        dead_sensor("depth", like, "blur")


@pytest.fixture(scope="module")
def deliver_root(tmp_path_factory):
    from geminifusion.data import generate_synthetic_deliver

    root = tmp_path_factory.mktemp("deliver") / "synthetic"
    generate_synthetic_deliver(root, num=10, size=(32, 48), conditions=("sun", "night", "fog"))
    return root


def _dataset(root, split, train=False):
    from geminifusion.data import build_dataset

    options = {"crop_size": (32, 48), "train": True} if train else {"eval_short_side": None}
    return build_dataset("deliver", root, split, modalities=MODALITIES, **options)


def test_dropped_modality_view(deliver_root):
    data = _dataset(deliver_root, "val")
    view = DroppedModality(data, "event", "noise", seed=3)
    sample, base = view[1], data[1]
    assert torch.equal(sample["rgb"], base["rgb"]) and torch.equal(sample["label"], base["label"])
    assert not torch.equal(sample["event"], base["event"])
    assert torch.equal(view[1]["event"], sample["event"])  # same noise every time
    assert view.num_classes == 25 and len(view) == len(data)
    with pytest.raises(ValueError, match="cannot drop"):
        DroppedModality(data, "thermal")


def test_engine_trains_deliver_then_eval_prints_condition_and_sensor_tables(
    deliver_root, tmp_path, capsys
):
    from geminifusion.cli import main
    from geminifusion.configs import build_model, get_preset
    from geminifusion.engine.train import train

    config = get_preset("deliver_mit_b0").replace(
        data_root=str(deliver_root),
        arch_overrides={"embed_dims": [8, 16, 32, 64], "depths": [1] * 4, "num_heads": [1] * 4},
        head_embed_dim=16,
        crop_size=[32, 48],
        batch_size=4,
        stage_epochs=[1],
        warmup_iters=1,
        max_iters=4,
        modality_dropout=0.5,
        dataset_options={"eval_short_side": None},
        num_workers=0,
        device="cpu",
        val_every=1,
    )
    assert config.loss == "ohem" and config.head_embed_dim == 16
    result = train(config, tmp_path / "run", progress=False)
    assert result.finished and result.iterations == 2

    # geminifusion eval RUN --by-condition --drop-modality all: both tables printed and saved.
    code = main(["eval", str(tmp_path / "run"), "--by-condition", "--drop-modality", "all"])
    shown = capsys.readouterr().out
    assert code == 0 and "mIoU per condition" in shown and "dropped (ensemble mIoU)" in shown
    print(shown)
    saved = json.loads((tmp_path / "run" / "eval" / "robustness_zeros.json").read_text())
    assert list(saved) == ["none", "depth", "event", "lidar"]
    assert list(saved["none"]) == ["fog", "sun", "overall"]
    assert (tmp_path / "run" / "eval" / "robustness_zeros.txt").is_file()
    assert (tmp_path / "run" / "eval" / "eval_val.json").is_file()

    # The overall row sums the per-condition matrices: it equals the trainer's one-pass validation.
    for name, scores in result.last_val.items():
        assert saved["none"]["overall"][name]["mIoU"] == pytest.approx(scores["mIoU"])
    model = build_model(config, 25)
    with pytest.raises(ValueError, match="cannot drop \\['thermal'\\]"):
        robustness_report(model, _dataset(deliver_root, "val"), 25, drops=[None, "thermal"])
    assert "ensemble mIoU" in format_robustness_table(
        {k: {g: {"ensemble": {"mIoU": 1.0}} for g in ("fog", "overall")} for k in ("none", "event")}
    )
    paths = save_report({"none": {}}, tmp_path / "saved", "report", "table")
    assert all(p.is_file() for p in paths)
