"""Pictures of predictions: class-map PNGs, the reference palette, overlays, comparison figures.

The palette is the PASCAL-VOC one the reference ships as ``cmap.npy``, generated here instead of
read from a file. As in the reference, class ``k`` is painted with ``palette[k + 1]``, so the
ignore label 255 wraps around to ``palette[0]``, black. Everything is drawn with PIL only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from geminifusion.files import atomic_write

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The ``(num_colors, 3)`` uint8 PASCAL-VOC palette.

    Colour ``i`` spreads the bits of ``i`` over the channels three at a time (bit 0 to red, bit 1
    to green, bit 2 to blue), filling each channel from its most significant bit down, so that
    neighbouring indices get very different colours.
    """
    index = np.arange(num_colors, dtype=np.int64)
    palette = np.zeros((num_colors, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (index >> (3 * shift + channel)) & 1
            palette[:, channel] |= bit << (7 - shift)
    return palette.astype(np.uint8)


PALETTE = voc_palette()


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def colorize(classes: np.ndarray | torch.Tensor, palette: np.ndarray = PALETTE) -> np.ndarray:
    """Class indices -> ``H x W x 3`` uint8: class k gets ``palette[k + 1]``; 255 black."""
    classes = _as_numpy(classes).astype(np.int64)
    return palette[(classes + 1) % len(palette)]


def image_to_uint8(image: np.ndarray | torch.Tensor, normalized: bool = False) -> np.ndarray:
    """A ``3 x H x W`` float image in [0, 1] (or ImageNet-normalised) -> ``H x W x 3`` uint8."""
    arr = _as_numpy(image).astype(np.float32)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"expected a 3 x H x W (or 1 x H x W) image, got shape {arr.shape}")
    arr = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr
    arr = arr.transpose(1, 2, 0)
    if normalized:
        arr = arr * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, colors: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Blend a colour-coded class map over an ``H x W x 3`` uint8 image."""
    if image.shape != colors.shape:
        raise ValueError(f"image {image.shape} and class colours {colors.shape} differ in shape")
    mixed = (1.0 - opacity) * image.astype(np.float32) + opacity * colors.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def save_class_map(path: str | os.PathLike, classes: np.ndarray | torch.Tensor) -> None:
    """The raw class indices as a grey PNG (8-bit; 16-bit when there are more than 256 values)."""
    arr = _as_numpy(classes).astype(np.int64)
    if arr.min(initial=0) < 0:
        raise ValueError("class indices must be non-negative")
    mode = np.uint8 if arr.max(initial=0) < 256 else np.uint16
    save_image(path, Image.fromarray(arr.astype(mode)))


def save_rgb(path: str | os.PathLike, image: np.ndarray) -> None:
    save_image(path, Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)))


def save_image(path: str | os.PathLike, image: Image.Image) -> None:
    """Write a PNG through the atomic writer (never a half-written picture)."""
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def comparison_figure(
    rows: Sequence[Sequence[tuple[str, np.ndarray]]],
    scale: int = 2,
    gap: int = 6,
    title: str | None = None,
) -> Image.Image:
    """Panels side by side, one row per sample, each with its title above it.

    Args:
        rows: per row, ``(title, H x W x 3 uint8 image)`` panels; every panel is shown at the size
            of the first one, enlarged ``scale`` times (nearest, so class borders stay crisp).
        scale: enlargement factor of the panels.
        gap: pixels between panels.
        title: optional heading over the whole figure.
    """
    if not rows or not rows[0]:
        raise ValueError("comparison_figure needs at least one panel")
    h, w = rows[0][0][1].shape[:2]
    ph, pw = h * scale, w * scale
    font = _font(max(11, min(18, pw // 12)))
    label_h = font.getbbox("Ag")[3] + 6
    head_h = label_h + gap if title else 0
    columns = max(len(r) for r in rows)
    width = columns * pw + (columns + 1) * gap
    height = head_h + len(rows) * (label_h + ph + gap) + gap
    figure = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(figure)
    if title:
        draw.text((gap, gap), title, fill="black", font=font)
    top = head_h + gap
    for row in rows:
        for col, (name, image) in enumerate(row):
            left = gap + col * (pw + gap)
            tw = draw.textlength(name, font=font)
            draw.text((left + max(0, (pw - tw) / 2), top), name, fill="black", font=font)
            panel = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
            panel = panel.resize((pw, ph), Image.NEAREST)
            figure.paste(panel, (left, top + label_h))
        top += label_h + ph + gap
    return figure


def write_prediction(
    out_dir: str | os.PathLike,
    stem: str,
    classes: np.ndarray | torch.Tensor,
    image: np.ndarray | None = None,
    opacity: float = 0.5,
) -> dict[str, Path]:
    """Write ``<stem>_classes.png``, ``<stem>_color.png`` and, given the image, the overlay."""
    out_dir = Path(out_dir)
    colors = colorize(classes)
    written = {"classes": out_dir / f"{stem}_classes.png", "color": out_dir / f"{stem}_color.png"}
    save_class_map(written["classes"], classes)
    save_rgb(written["color"], colors)
    if image is not None:
        written["overlay"] = out_dir / f"{stem}_overlay.png"
        save_rgb(written["overlay"], overlay(image, colors, opacity))
    return written
