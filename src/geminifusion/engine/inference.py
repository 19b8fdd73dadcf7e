"""Scores at the label size: single scale, multi-scale + flip, sliding window.

Single scale is the reference's evaluation: the head's stride-4 logits resized to the label size
with bicubic interpolation, then argmax. The other modes combine several *views* of the image:
each scale (sides rounded up to a multiple of 32, as the reference's DeLiVER evaluation does), its
horizontal mirror, and, in sliding-window mode, overlapping tiles. Tiles are averaged as logits;
views are averaged as softmax probabilities. With one view the returned scores are the raw logits,
otherwise mean probabilities; their argmax is the prediction either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Inputs = Sequence[torch.Tensor] | Mapping[str, torch.Tensor]

# The MSF scales of the SegFormer-family evaluations.
DEFAULT_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel (or similar) wrapper."""
    return getattr(model, "module", model)


def resize_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubic resize of ``B x K x h x w`` scores to ``size``, as the reference evaluates."""
    size = tuple(int(s) for s in size)
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bicubic", align_corners=False)


def scaled_size(height: int, width: int, scale: float, multiple: int = 32) -> tuple[int, int]:
    """The input size for one test scale: sides scaled, then rounded up to ``multiple``.

    Scale 1 keeps the size as it is, so ``flip`` alone is the plain single-scale evaluation
    plus its mirror.
    """
    if scale <= 0:
        raise ValueError(f"test scales must be positive, got {scale}")
    if scale == 1.0:
        return height, width
    h, w = (max(1, math.ceil(int(scale * side) / multiple)) * multiple for side in (height, width))
    return h, w


def _as_list(model: nn.Module, inputs: Inputs) -> list[torch.Tensor]:
    if isinstance(inputs, Mapping):
        names = unwrap(model).modalities
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"missing modalities {missing}; the model takes {list(names)}")
        return [inputs[n] for n in names]
    return list(inputs)


def _tile_starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets covering ``0..length``; the last tile is pushed back to end at the border."""
    if length <= window:
        return [0]
    count = math.ceil((length - window) / stride) + 1
    return [min(i * stride, length - window) for i in range(count)]


def _forward(model: nn.Module, images: list[torch.Tensor]) -> list[torch.Tensor]:
    return [o.float() for o in model(images)]


def sliding_window(
    model: nn.Module,
    images: list[torch.Tensor],
    window: Sequence[int],
    stride: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """Logits at the input size, averaged over overlapping ``window`` tiles.

    Tiles never leave the image (the last one in each direction ends at the border), and an image
    smaller than the window is run whole, so nothing is padded. ``stride`` defaults to two thirds
    of the window (one third overlap, as the reference's DeLiVER tiling).
    """
    wh, ww = (int(v) for v in window)
    if stride is None:
        stride = (math.ceil(wh * 2 / 3), math.ceil(ww * 2 / 3))
    sh, sw = (max(1, int(v)) for v in stride)
    height, width = images[0].shape[-2:]
    totals: list[torch.Tensor] | None = None
    count = images[0].new_zeros((1, 1, height, width), dtype=torch.float32)
    for top in _tile_starts(height, wh, sh):
        for left in _tile_starts(width, ww, sw):
            bottom, right = min(top + wh, height), min(left + ww, width)
            tile = [x[..., top:bottom, left:right] for x in images]
            outputs = [resize_logits(o, tile[0].shape[-2:]) for o in _forward(model, tile)]
            if totals is None:
                totals = [o.new_zeros((*o.shape[:2], height, width)) for o in outputs]
            for total, out in zip(totals, outputs, strict=True):
                total[..., top:bottom, left:right] += out
            count[..., top:bottom, left:right] += 1
    return [t / count for t in totals]


def describe_options(options: dict) -> str:
    """``single scale``, or ``scales [...], flip, sliding window HxW``: the test-time options of
    :func:`predict_scores`, for a log line."""
    scales = tuple(options.get("scales", (1.0,)))
    parts = ["single scale" if scales == (1.0,) else f"scales {list(scales)}"]
    if options.get("flip"):
        parts.append("flip")
    if options.get("window"):
        parts.append(f"sliding window {options['window'][0]}x{options['window'][1]}")
    return ", ".join(parts)


@torch.no_grad()
def predict_scores(
    model: nn.Module,
    inputs: Inputs,
    size: Sequence[int] | None = None,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    window: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """Scores of every model output (``B x K x H x W`` at ``size``), for argmax.

    Args:
        model: a segmentor (or a wrapper of one) in eval mode.
        inputs: one ``B x 3 x h x w`` tensor per modality, a list in model order or a dict.
        size: the label size ``(H, W)``; default the input size.
        scales: test scales; ``(1.0,)`` is single scale.
        flip: add the horizontal mirror of every scale.
        window: sliding-window tile ``(h, w)``; None runs each view whole.
        stride: sliding-window step; default two thirds of the window.
    """
    images = _as_list(model, inputs)
    height, width = images[0].shape[-2:]
    size = (height, width) if size is None else tuple(int(s) for s in size)
    if not scales:
        raise ValueError("give at least one test scale")
    views = [(s, False) for s in scales] + ([(s, True) for s in scales] if flip else [])
    summed: list[torch.Tensor] | None = None
    for scale, mirrored in views:
        view = images
        target = scaled_size(height, width, scale)
        if target != (height, width):
            view = [
                F.interpolate(x, size=target, mode="bilinear", align_corners=False) for x in view
            ]
        if mirrored:
            view = [x.flip(-1) for x in view]
        if window is not None:
            outputs = sliding_window(model, view, window, stride)
        else:
            outputs = _forward(model, view)
        outputs = [resize_logits(o.flip(-1) if mirrored else o, size) for o in outputs]
        if len(views) == 1:
            return outputs
        probs = [o.softmax(dim=1) for o in outputs]
        summed = probs if summed is None else [a + p for a, p in zip(summed, probs, strict=True)]
    return [p / len(views) for p in summed]


@torch.no_grad()
def predict_classes(model: nn.Module, inputs: Inputs, size=None, **options) -> list[torch.Tensor]:
    """Argmax class maps (``B x H x W`` int64) of every output; options as ``predict_scores``."""
    return [s.argmax(dim=1) for s in predict_scores(model, inputs, size, **options)]
