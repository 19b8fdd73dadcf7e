"""The synthetic demo runs end to end at a tiny size; its scenes are consistent across sensors."""

import argparse
import json
import math

import numpy as np
import pytest
import torch

from geminifusion.commands import detection3d as command
from geminifusion.detection3d.demo import (
    CLASSES,
    PRESETS,
    PointSegmenter,
    average_precision,
    camera_matrix,
    collate,
    make_scenes,
    preset,
)
from geminifusion.detection3d.projection import point_pixels

pytestmark = pytest.mark.threads(1)  # tiny tensors: pool wake-ups would dominate


def test_tiny_demo_command_prints_the_table(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    command.add_commands(parser.add_subparsers())
    out = tmp_path / "demo.json"
    args = parser.parse_args(["demo3d", "--size", "tiny", "--threads", "1", "--json", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "not KITTI" in printed and "not detection AP" in printed
    for name in ("LiDAR only", "sum fusion", "GeminiFusion", "mIoU", "aAcc", *CLASSES):
        assert name in printed
    for name in ("camera dropout 0.5", "mIoU no camera", "point mAP camera", "point mAP no camera"):
        assert name in printed
    runs = json.loads(out.read_text())["runs"]
    fusions = {"sum", "sum_every", "gemini"}
    assert set(runs) == {"lidar", *fusions, *(f"{m}+dropout" for m in fusions)}
    for metrics in (m for per_seed in runs.values() for m in per_seed):
        for key in ("mIoU", "aAcc", "no camera mIoU", "no camera mAP"):
            assert 0 <= metrics[key] <= 100, key
    # LiDAR only does not look at the camera: failing it changes nothing.
    lidar = runs["lidar"][0]
    assert lidar["mIoU"] == lidar["no camera mIoU"] and lidar["mAP"] == lidar["no camera mAP"]


def test_average_precision_by_hand():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    positive = torch.tensor([False, False, True, True])
    # Ranked: 0.8 (hit), 0.4 (miss), 0.35 (hit): precisions 1 and 2/3 at the two hits.
    assert average_precision(scores, positive) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(scores, scores > 0.3) == 1.0
    assert math.isnan(average_precision(scores, torch.zeros(4, dtype=torch.bool)))


def test_object_points_see_their_own_colour():
    """Unaugmented car points project onto pixels of their car's colour (red or blue)."""
    cfg = PRESETS["tiny"]
    for scene in make_scenes(4, 0, cfg):
        pixels, depth = point_pixels(scene.points.double(), {"lidar2img": camera_matrix((32, 64))})
        col, row = pixels[:, 0].floor().long(), pixels[:, 1].floor().long()
        inside = (depth > 0) & (col >= 0) & (col < 64) & (row >= 0) & (row < 32)
        for cls, channel in ((1, 0), (2, 2)):  # red car: red dominant; blue car: blue dominant
            sel = inside & (scene.labels == cls)
            if sel.any():
                rgb = scene.image[:, row[sel], col[sel]]
                dominant = (rgb.argmax(dim=0) == channel).float().mean()
                assert dominant > 0.8, (cls, float(dominant))


def test_augmented_batch_still_finds_the_pixels():
    """After the training augmentations, projection through img_metas gives the same pixels."""
    cfg = PRESETS["tiny"]
    scenes = make_scenes(3, 1, cfg)
    plain = collate(scenes, cfg, None)
    augmented = collate(scenes, cfg, np.random.default_rng(5))
    for b in range(3):
        assert augmented.metas[b]["transformation_3d_flow"] == ["R", "S", "HF"]
        want = point_pixels(plain.points[b].double(), plain.metas[b])[0]
        got = point_pixels(augmented.points[b].double(), augmented.metas[b])[0]
        if augmented.metas[b]["flip"]:
            got[:, 0] = cfg.image_size[1] - got[:, 0]
        if len(want) == len(got):  # the range filter kept every point
            torch.testing.assert_close(got, want, rtol=0, atol=1e-3)


def test_models_and_presets():
    cfg = PRESETS["tiny"]
    sizes = {m: sum(p.numel() for p in PointSegmenter(m, cfg).parameters()) for m in cfg.methods}
    assert sizes["lidar"] < sizes["sum"] < sizes["sum_every"] < sizes["gemini"]
    assert preset("tiny", epochs=3, seeds=None).epochs == 3
    with pytest.raises(ValueError, match="unknown demo size"):
        preset("huge")
    with pytest.raises(ValueError, match="method"):
        PointSegmenter("late", cfg)
