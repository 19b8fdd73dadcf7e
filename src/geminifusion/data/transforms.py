"""Joint transforms of all modalities and the label, in plain torch.

A transform takes ``images`` (modality name -> float tensor 3 x H x W in [0, 1], before any
mean/std step), the ``label`` (int64 H x W) and a ``torch.Generator``, and returns both
transformed. The geometric steps run once on the modalities stacked on a leading axis, so every
modality sees exactly the same resize, crop and flip; the label sees the same geometry with
nearest-neighbour sampling. Photometric steps touch only the colour image (``"rgb"``).

Every random number is drawn from the generator passed in; the dataset seeds it from
(base seed, epoch, sample index), see ``sample_seed``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
RGB_KEY = "rgb"

# Rec. 601 luma, and the YIQ transform in which a hue shift is a rotation of the (I, Q) plane.
_LUMA = torch.tensor([0.299, 0.587, 0.114])
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def sample_seed(base_seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's generator: a hash of (base seed, epoch, sample index).

    It depends on nothing else (not the worker, not the order samples are drawn in), so a run is
    reproducible with any number of DataLoader workers, and epochs differ from each other.
    """
    state = np.random.SeedSequence([base_seed, epoch, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def normalize_rgb(rgb: Tensor) -> Tensor:
    """ImageNet mean/std normalisation of a 3 x H x W colour image in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=rgb.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=rgb.dtype).view(3, 1, 1)
    return (rgb - mean) / std


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _chance(g: torch.Generator, p: float) -> bool:
    # Always draw, so the stream's position never depends on p being 0 or 1.
    return float(torch.rand((), generator=g)) < p


def _resize_label(label: Tensor, size: tuple[int, int]) -> Tensor:
    # "nearest-exact" samples at pixel centres, matching bilinear with align_corners=False.
    out = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")
    return out[0, 0].long()


def _resize_images(stack: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(stack, size=size, mode="bilinear", align_corners=False, antialias=False)


def random_scale(
    stack: Tensor, label: Tensor, g: torch.Generator, scale_range: tuple[float, float]
) -> tuple[Tensor, Tensor]:
    """Resize the whole sample by one factor drawn from ``scale_range``."""
    s = _uniform(g, *scale_range)
    h, w = label.shape
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return _resize_images(stack, size), _resize_label(label, size)


def random_crop(
    stack: Tensor, label: Tensor, g: torch.Generator, crop_size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Crop to ``crop_size``, first padding bottom/right (images 0, label ignore) if smaller."""
    ch, cw = crop_size
    h, w = label.shape
    pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
    if pad_h or pad_w:
        stack = F.pad(stack, (0, pad_w, 0, pad_h), value=0.0)
        label = F.pad(label, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        h, w = h + pad_h, w + pad_w
    top = int(torch.randint(h - ch + 1, (), generator=g))
    left = int(torch.randint(w - cw + 1, (), generator=g))
    return stack[..., top : top + ch, left : left + cw], label[top : top + ch, left : left + cw]


def color_jitter(
    rgb: Tensor,
    g: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
) -> Tensor:
    """Brightness, contrast, saturation and hue changes in a random order (3 x H x W in [0, 1]).

    The hue shift rotates the chroma plane of YIQ by up to ``hue`` of a full turn, a linear
    stand-in for an HSV hue shift that needs no colour-space branches.
    """
    luma = _LUMA.to(rgb.dtype).view(3, 1, 1)
    for op in torch.randperm(4, generator=g).tolist():
        if op == 0:
            rgb = rgb * _uniform(g, 1 - brightness, 1 + brightness)
        elif op == 1:
            mean = (rgb * luma).sum(0).mean()
            rgb = (rgb - mean) * _uniform(g, 1 - contrast, 1 + contrast) + mean
        elif op == 2:
            grey = (rgb * luma).sum(0, keepdim=True)
            rgb = (rgb - grey) * _uniform(g, 1 - saturation, 1 + saturation) + grey
        else:
            angle = 2 * math.pi * _uniform(g, -hue, hue)
            c, s = math.cos(angle), math.sin(angle)
            rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
            matrix = (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).to(rgb.dtype)
            rgb = torch.einsum("ij,jhw->ihw", matrix, rgb)
        rgb = rgb.clamp(0.0, 1.0)
    return rgb


def gaussian_blur3x3(rgb: Tensor, sigma: float) -> Tensor:
    """A separable 3 x 3 Gaussian blur with reflected borders (3 x H x W)."""
    taps = torch.tensor([-1.0, 0.0, 1.0], dtype=rgb.dtype)
    k = torch.exp(-(taps**2) / (2 * sigma**2))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
    padded = F.pad(rgb[None], (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernel, groups=3)[0]


def eval_size(h: int, w: int, short_side: int, multiple: int = 32) -> tuple[int, int]:
    """Shorter side to ``short_side``, then each side rounded up to a multiple of ``multiple``."""
    s = short_side / min(h, w)
    nh, nw = round(h * s), round(w * s)
    return math.ceil(nh / multiple) * multiple, math.ceil(nw / multiple) * multiple


class TrainTransform:
    """The paper's training augmentation, applied jointly to all modalities and the label.

    1. resize the whole sample by a factor in ``scale_range`` (bilinear images, nearest label);
    2. random crop to ``crop_size``, padding images with 0 and the label with 255 where smaller;
    3. horizontal flip with probability ``flip_p``;
    4. colour jitter (p ``jitter_p``) and 3 x 3 Gaussian blur (p ``blur_p``, sigma 0.1-2.0)
       on the colour image only; depth and the other sensors are never photometrically changed.
    """

    def __init__(
        self,
        crop_size: tuple[int, int],
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip_p: float = 0.5,
        jitter_p: float = 0.2,
        blur_p: float = 0.2,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    ) -> None:
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f"crop_size must be (H, W) with positive sides, got {crop_size}")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.scale_range = scale_range
        self.flip_p, self.jitter_p, self.blur_p = flip_p, jitter_p, blur_p
        self.jitter = jitter

    def __call__(
        self, images: dict[str, Tensor], label: Tensor, g: torch.Generator
    ) -> tuple[dict[str, Tensor], Tensor]:
        names = list(images)
        stack = torch.stack([images[n] for n in names])  # M x 3 x H x W
        stack, label = random_scale(stack, label, g, self.scale_range)
        stack, label = random_crop(stack, label, g, self.crop_size)
        if _chance(g, self.flip_p):
            stack, label = stack.flip(-1), label.flip(-1)
        out = dict(zip(names, stack.unbind(0), strict=True))
        do_jitter, do_blur = _chance(g, self.jitter_p), _chance(g, self.blur_p)
        if RGB_KEY in out:
            if do_jitter:
                out[RGB_KEY] = color_jitter(out[RGB_KEY], g, *self.jitter)
            if do_blur:
                out[RGB_KEY] = gaussian_blur3x3(out[RGB_KEY], _uniform(g, 0.1, 2.0))
        return {n: t.contiguous() for n, t in out.items()}, label.contiguous()

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop_size={self.crop_size}, scale_range={self.scale_range}, "
            f"flip_p={self.flip_p}, jitter_p={self.jitter_p}, blur_p={self.blur_p})"
        )


class EvalTransform:
    """Deterministic evaluation resize.

    With ``short_side=None`` nothing changes. Otherwise the inputs are resized (bilinear) so the
    shorter side is ``short_side`` and each side a multiple of ``multiple`` (the DeLiVER
    reference: 1024 and 32). The label keeps its full resolution unless ``resize_label`` (the
    DeLiVER reference scores at the resized size, nearest-neighbour).
    """

    def __init__(
        self, short_side: int | None = None, multiple: int = 32, resize_label: bool = False
    ) -> None:
        self.short_side, self.multiple, self.resize_label = short_side, multiple, resize_label

    def __call__(
        self, images: dict[str, Tensor], label: Tensor, g: torch.Generator | None = None
    ) -> tuple[dict[str, Tensor], Tensor]:
        if self.short_side is None:
            return images, label
        names = list(images)
        h, w = label.shape
        size = eval_size(h, w, self.short_side, self.multiple)
        stack = _resize_images(torch.stack([images[n] for n in names]), size)
        if self.resize_label:
            label = _resize_label(label, size)
        return dict(zip(names, stack.unbind(0), strict=True)), label

    def __repr__(self) -> str:
        return (
            f"EvalTransform(short_side={self.short_side}, multiple={self.multiple}, "
            f"resize_label={self.resize_label})"
        )
