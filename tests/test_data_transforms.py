"""Joint transforms: alignment, colour-only photometrics, and reproducible seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from geminifusion.data import EvalTransform, NYUDv2, TrainTransform, build_dataset, sample_seed
from geminifusion.data.transforms import color_jitter, eval_size, gaussian_blur3x3
from test_data_helpers import make_nyu


def blocks(h: int, w: int, cell: int = 4, seed: int = 0) -> torch.Tensor:
    """A label of random cell x cell blocks with values 0..9."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 10, (h // cell, w // cell), generator=g)
    return coarse.repeat_interleave(cell, 0).repeat_interleave(cell, 1)


def sample(label: torch.Tensor) -> dict[str, torch.Tensor]:
    """rgb and depth that encode the label: value label / 10 in every channel."""
    image = (label.float() / 10).expand(3, *label.shape).clone()
    return {"rgb": image.clone(), "depth": image.clone()}


def test_crop_and_flip_keep_every_pixel_aligned():
    label = blocks(24, 32)
    t = TrainTransform((20, 40), scale_range=(1.0, 1.0), jitter_p=0.0, blur_p=0.0)
    flipped = 0
    for seed in range(8):
        images, out = t(sample(label), label.clone(), torch.Generator().manual_seed(seed))
        assert out.shape == (20, 40) and images["depth"].shape == (3, 20, 40)
        valid = out != 255
        assert (~valid).sum() == 20 * 8  # width 32 padded to 40 with the ignore label
        assert torch.equal(images["rgb"], images["depth"])
        assert torch.equal(images["depth"][0][valid] * 10, out[valid].float())
        assert (images["depth"][:, ~valid] == 0).all()  # images padded with 0
        # The crop is a window of the (possibly flipped) label.
        windows = [label, label.flip(-1)]
        found = [
            any(torch.equal(src[top : top + 20], out[:, :32]) for top in range(5))
            or any(torch.equal(src[top : top + 20], out[:, 8:]) for top in range(5))
            for src in windows
        ]
        assert any(found)
        flipped += found[1] and not found[0]
    assert 0 < flipped < 8


def test_random_scale_keeps_modalities_and_label_aligned():
    label = blocks(48, 64, cell=12, seed=1)
    t = TrainTransform((40, 56), scale_range=(0.5, 2.0), jitter_p=0.0, blur_p=0.0)
    for seed in range(6):
        images, out = t(sample(label), label.clone(), torch.Generator().manual_seed(seed))
        assert torch.equal(images["rgb"], images["depth"])
        lab = out.float()
        # Interior pixels: the label is constant over their 3 x 3 neighbourhood there.
        pad = torch.nn.functional.pad(lab[None, None], (1, 1, 1, 1), value=-1)[0, 0]
        hood = torch.stack([pad[i : i + 40, j : j + 56] for i in range(3) for j in range(3)])
        interior = (hood == lab).all(0) & (out != 255)
        assert interior.sum() > 0.3 * (out != 255).sum()
        depth = images["depth"][0]
        torch.testing.assert_close(depth[interior] * 10, lab[interior], atol=1e-4, rtol=0)


def test_colour_transforms_touch_rgb_only():
    label = blocks(16, 16)
    images = sample(label)
    images["depth"] = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(5))
    images["rgb"] = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(6))
    t = TrainTransform((16, 16), scale_range=(1.0, 1.0), flip_p=0.0, jitter_p=1.0, blur_p=1.0)
    out, out_label = t({k: v.clone() for k, v in images.items()}, label, torch.Generator())
    assert torch.equal(out["depth"], images["depth"])
    assert torch.equal(out_label, label)
    assert not torch.allclose(out["rgb"], images["rgb"], atol=1e-3)
    assert out["rgb"].min() >= 0 and out["rgb"].max() <= 1


def test_jitter_and_blur_basics():
    grey = torch.full((3, 5, 5), 0.5)
    torch.testing.assert_close(gaussian_blur3x3(grey, 1.0), grey)
    spot = torch.zeros(3, 5, 5)
    spot[:, 2, 2] = 1.0
    blurred = gaussian_blur3x3(spot, 1.0)
    assert blurred.sum().item() == pytest.approx(3.0, abs=1e-5) and blurred[0, 2, 2] < 1
    colour = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = color_jitter(colour, torch.Generator().manual_seed(3))
    b = color_jitter(colour, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, colour)


def test_same_seed_same_sample_other_epoch_other_sample(tmp_path):
    root = make_nyu(tmp_path, n=4, h=16, w=20)
    make = lambda seed: NYUDv2(root, transform=TrainTransform((12, 12)), seed=seed)  # noqa: E731
    a, b = make(7), make(7)
    for i in range(4):
        for key in ("rgb", "depth", "label"):
            assert torch.equal(a[i][key], b[i][key])
    before = a[2]
    a.set_epoch(1)
    assert not torch.equal(a[2]["rgb"], before["rgb"])
    a.set_epoch(0)
    assert torch.equal(a[2]["rgb"], before["rgb"])
    assert not torch.equal(make(8)[2]["rgb"], before["rgb"])
    seeds = {sample_seed(0, e, i) for e in range(3) for i in range(3)}
    assert len(seeds) == 9


def test_dataloader_workers_do_not_change_the_augmentations(tmp_path):
    root = make_nyu(tmp_path, n=4, h=16, w=20)
    ds = build_dataset("nyudv2", root, "train", train=True, crop_size=(12, 12), seed=3)
    ds.set_epoch(2)

    def batches(workers: int) -> list[dict]:
        return list(DataLoader(ds, batch_size=2, num_workers=workers))

    serial, parallel = batches(0), batches(2)
    for x, y in zip(serial, parallel, strict=True):
        for key in ("rgb", "depth", "label"):
            assert torch.equal(x[key], y[key])
        assert x["paths"] == y["paths"]


def test_eval_transform_sizes():
    assert eval_size(1042, 1042, 1024) == (1024, 1024)
    assert eval_size(480, 640, 1024) == (1024, 1376)  # 1365.3 -> 1365 -> 1376
    assert eval_size(70, 100, 64) == (64, 96)
    label = blocks(20, 24)
    images = sample(label)
    same_images, same_label = EvalTransform()(images, label)
    assert same_images is images and same_label is label
    resized, kept = EvalTransform(40)(sample(label), label)
    assert resized["rgb"].shape == (3, 64, 64) and torch.equal(kept, label)
    _, small = EvalTransform(40, resize_label=True)(sample(label), label)
    assert small.shape == (64, 64) and set(small.unique().tolist()) <= set(label.unique().tolist())


def test_training_crop_and_padding_through_the_dataset(tmp_path):
    root = make_nyu(tmp_path, n=2, h=8, w=12)
    ds = build_dataset("nyudv2", root, "train", train=True, crop_size=(30, 30), seed=0)
    s = ds[0]
    assert s["rgb"].shape == (3, 30, 30) and s["label"].shape == (30, 30)
    assert (s["label"][-6:, :] == 255).all()  # at most 2 x 12 = 24 rows of data
    assert np.isclose(s["depth"][:, -6:, :].abs().sum().item(), 0.0)
