"""Inference modes: the bicubic resize, views, sliding windows, and evaluation over a loader."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from geminifusion import build_segmentor
from geminifusion.backbones.mit import MiTConfig
from geminifusion.engine.evaluate import (
    ShardSampler,
    build_eval_loader,
    confusion_matrices,
    evaluate,
)
from geminifusion.engine.inference import (
    _tile_starts,
    predict_classes,
    predict_scores,
    resize_logits,
    scaled_size,
)
from geminifusion.engine.metrics import confusion_matrix


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny tensors: more threads only add overhead


TINY = MiTConfig(embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4), depths=(1, 1, 1, 1))


def _cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _plain_bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Keys' cubic convolution (a = -0.75) at pixel centres, borders clamped: cv2's INTER_CUBIC."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = (i + 0.5) * n_in / n_out - 0.5
        base = math.floor(x)
        for j in range(base - 1, base + 3):
            m[i, min(max(j, 0), n_in - 1)] += _cubic(np.array(x - j))
    return m


def test_resize_is_the_reference_bicubic():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, 9, generator=g, dtype=torch.float64)
    out = resize_logits(logits, (30, 35))
    rows, cols = _plain_bicubic_matrix(7, 30), _plain_bicubic_matrix(9, 35)
    plain = np.einsum("ij,bkjl,ml->bkim", rows, logits.numpy(), cols)
    np.testing.assert_allclose(out.numpy(), plain, rtol=0, atol=1e-12)
    assert resize_logits(logits, (7, 9)) is logits


class PixelModel(nn.Module):
    """A per-pixel model with the segmentor's interface: no context, so tiles and mirrors agree."""

    modalities = ("rgb", "depth")
    output_names = ["rgb", "depth", "ensemble"]

    def __init__(self, num_classes: int = 4, stride: int = 1) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, num_classes, 1)
        self.stride = stride
        self.calls: list[tuple[int, int]] = []

    def forward(self, inputs):
        self.calls.append(tuple(inputs[0].shape[-2:]))
        outs = [self.proj(x)[..., :: self.stride, :: self.stride] for x in inputs]
        return outs + [0.5 * (outs[0] + outs[1])]


def _pair(h: int, w: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)]


def test_tiles_cover_the_image_and_stay_inside():
    for length, window, stride in [(100, 40, 27), (64, 64, 43), (30, 64, 43), (131, 32, 32)]:
        starts = _tile_starts(length, window, stride)
        covered = np.zeros(length, bool)
        for s in starts:
            assert s >= 0 and (s + window <= length or (s == 0 and length < window))
            covered[s : s + window] = True
        assert covered.all()


def test_sliding_window_of_a_pixel_model_equals_the_whole_image():
    model = PixelModel().eval()
    images = _pair(50, 70)
    whole = predict_scores(model, images)
    model.calls.clear()
    tiled = predict_scores(model, images, window=(32, 32), stride=(20, 20))
    assert len(model.calls) == 2 * 3 and set(model.calls) == {(32, 32)}
    for a, b in zip(whole, tiled, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_flip_and_repeated_views_average_probabilities():
    model = PixelModel().eval()
    images = _pair(40, 48)
    logits = predict_scores(model, images)
    flipped = predict_scores(model, images, flip=True)
    twice = predict_scores(model, images, scales=(1.0, 1.0))
    for lg, f, t in zip(logits, flipped, twice, strict=True):
        torch.testing.assert_close(f, lg.softmax(1), rtol=0, atol=1e-6)
        torch.testing.assert_close(t, lg.softmax(1), rtol=0, atol=1e-6)


def test_multi_scale_sizes_and_label_size():
    assert scaled_size(480, 640, 1.0) == (480, 640)
    assert scaled_size(480, 640, 0.75) == (384, 480)
    assert scaled_size(100, 130, 0.5) == (64, 96)
    assert scaled_size(20, 20, 0.5) == (32, 32)
    with pytest.raises(ValueError, match="positive"):
        scaled_size(10, 10, 0.0)
    model = PixelModel(stride=4).eval()
    scores = predict_scores(model, _pair(64, 96), (61, 93), scales=(0.5, 1.0, 1.5), flip=True)
    assert set(model.calls) == {(32, 64), (64, 96), (96, 160)} and len(model.calls) == 6
    assert all(s.shape == (1, 4, 61, 93) for s in scores)
    torch.testing.assert_close(scores[0].sum(1), torch.ones(1, 61, 93))


def test_segmentor_single_scale_is_upsampled_logits():
    torch.manual_seed(0)
    model = build_segmentor(TINY, num_classes=5, head_embed_dim=16).eval()
    images = _pair(64, 96)
    with torch.no_grad():
        raw = model(images)
    scores = predict_scores(model, {"rgb": images[0], "depth": images[1]}, (64, 96))
    for r, s in zip(raw, scores, strict=True):
        assert r.shape[-2:] == (16, 24)
        torch.testing.assert_close(s, resize_logits(r, (64, 96)))
    classes = predict_classes(model, images, window=(64, 64))  # odd tiles on an odd image
    assert [c.shape for c in classes] == [(1, 64, 96)] * 3
    whole = predict_classes(model, images, window=(128, 128))  # window larger than the image
    assert all(torch.equal(a, s.argmax(1)) for a, s in zip(whole, scores, strict=True))


class ToyData(Dataset):
    """Random image pairs with labels holding ignore and out-of-range values."""

    def __init__(self, n: int = 5, size: tuple[int, int] = (40, 56)) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(100 + i)
        h, w = self.size
        label = torch.randint(0, 6, (h, w), generator=g)
        label[label == 5] = 255
        return {
            "rgb": torch.randn(3, h, w, generator=g),
            "depth": torch.rand(3, h, w, generator=g),
            "label": label,
            "paths": {"rgb": f"{i}.png"},
        }


def test_evaluate_matches_per_sample_predictions_and_keeps_module_modes():
    torch.manual_seed(1)
    model = build_segmentor(TINY, num_classes=4, head_embed_dim=16)
    model.train()
    model.head.linear_fuse.bn.eval()  # a frozen BatchNorm, as training leaves it
    data = ToyData()
    matrices = confusion_matrices(model, DataLoader(data, batch_size=2), 4, progress=False)
    assert model.training and model.backbone.training and not model.head.linear_fuse.bn.training
    model.eval()
    expected = {n: torch.zeros(4, 4, dtype=torch.int64) for n in model.output_names}
    for i in range(len(data)):
        item = data[i]
        preds = predict_classes(model, [item["rgb"][None], item["depth"][None]])
        for name, p in zip(model.output_names, preds, strict=True):
            expected[name] += confusion_matrix(p[0], item["label"], 4)
    assert list(matrices) == ["rgb", "depth", "ensemble"]
    for name in expected:
        assert torch.equal(matrices[name], expected[name])
        assert int(matrices[name].sum()) == int(
            (torch.stack([data[i]["label"] for i in range(len(data))]) < 4).sum()
        )
    results = evaluate(model, build_eval_loader(data), 4, progress=False)
    assert results["ensemble"]["pixels"] == int(expected["ensemble"].sum())


def test_shards_split_without_padding():
    shards = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert [len(ShardSampler(7, r, 3)) for r in range(3)] == [3, 2, 2]
    assert list(ShardSampler(4)) == [0, 1, 2, 3]
