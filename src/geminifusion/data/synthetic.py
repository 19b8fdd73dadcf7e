"""Synthetic scenes that can only be segmented well by fusing modalities.

``generate_synthetic_dataset`` writes an NYUDv2-layout folder (rgb/, depth/ as 8-bit PNG, masks/,
tab-separated train.txt / val.txt, classes.json). Besides a background wall, six object classes
form a 2 x 3 grid of colour (red, blue) x distance (near, mid, far):

- classes with the same colour differ only in depth (red_near vs red_far),
- classes at the same distance differ only in colour (red_mid vs blue_mid),
- the rest differ in both.

Shape, size, position, brightness, texture and drawing order are drawn independently of the
class (objects are not painted far-to-near, so occlusion says nothing about depth). A model that
sees only RGB must guess among three distances and one that sees only depth between two colours,
while both together separate every class.

``generate_synthetic_deliver`` writes a small DeLiVER-layout folder whose object classes share
colour and depth and differ only in the event or the LiDAR image, for multi-sensor tests.

Everything is vectorised over a chunk of images with NumPy and drawn from one
``numpy.random.Generator``, so a seed gives byte-identical files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from geminifusion.files import OutputFolder, atomic_write, write_text

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "background", "red_near", "red_mid", "red_far", "blue_near", "blue_mid", "blue_far",
)  # fmt: skip
# Per class: base colour (RGB 0..255) and depth level (fraction of the 8-bit range).
_COLOURS = np.array(
    [[150, 142, 127], [200, 70, 55], [200, 70, 55], [200, 70, 55]]
    + [[55, 95, 200], [55, 95, 200], [55, 95, 200]],
    dtype=np.float32,
)
_LEVELS = np.array([0.87, 0.25, 0.45, 0.65, 0.25, 0.45, 0.65], dtype=np.float32)
_DELIVER_FILES = (  # folder, file suffix
    ("img", "rgb"), ("hha", "depth"), ("depth", "depth"), ("event", "event"), ("lidar", "lidar"),
    ("semantic", "semantic"),
)  # fmt: skip
_CHUNK = 64  # images rendered at once; bounds memory, and keeps sample i independent of num


@dataclass(frozen=True)
class SyntheticSummary:
    """What a generator wrote."""

    root: Path
    num_train: int
    num_val: int
    size: tuple[int, int]
    class_names: tuple[str, ...]


SYNTH_KIND = "synth"  # the manifest kind of a generated dataset folder


def _prepare(out_dir: str | Path, overwrite: bool, names: Sequence[str]) -> Path:
    """A new or empty folder, or (``overwrite``) an earlier generated set, emptied of its own
    files; ``names`` are claimed in its manifest before anything is written."""
    out = Path(out_dir)
    folder = OutputFolder.open(out, SYNTH_KIND, option="output folder", adopt=_earlier_set)
    if folder.files:
        if not overwrite:
            raise ValueError(
                f"{out}: folder is not empty (it holds an earlier synthetic set); choose a new "
                "folder, or replace that set with --overwrite (overwrite=True), which removes "
                "only the files it wrote"
            )
        folder.remove()
    folder.claim(*names)
    folder.ensure()
    return out


def _earlier_set(folder: Path) -> list[str] | None:
    """The files a generator wrote before folders carried a manifest: exactly the names it
    writes for the ``num`` scenes its ``classes.json`` (or ``synthetic_deliver.json``) records."""
    for marker in ("classes.json", "synthetic_deliver.json"):
        try:
            meta = json.loads((folder / marker).read_text(encoding="utf-8"))
            num = int(meta["generator"]["num"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if marker == "classes.json":
            names = [f"{k}/{i:06d}.png" for i in range(num) for k in ("rgb", "depth", "masks")]
            names += ["train.txt", "val.txt"]
        else:
            names = [
                p.relative_to(folder).as_posix()
                for top, suffix in _DELIVER_FILES
                for i in range(num)
                for p in folder.glob(f"{top}/*/*/seq00/{i:06d}_{suffix}.png")
            ]
        return [n for n in [*names, marker] if (folder / n).is_file()]
    return None


def _check_args(num: int, size: Sequence[int], val_fraction: float) -> tuple[int, int, int]:
    h, w = (int(s) for s in size)
    if num < 1 or h < 8 or w < 8:
        raise ValueError(f"need num >= 1 and a size of at least 8x8, got num={num}, size={size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    num_val = min(num - 1, round(num * val_fraction)) if num > 1 else 0
    return h, w, num_val


def _smooth_noise(rng: np.random.Generator, n: int, h: int, w: int, cell: int) -> np.ndarray:
    """Low-frequency noise (n, h, w), about N(0, 1): a coarse grid, bilinearly upsampled."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.standard_normal((n, gh, gw)).astype(np.float32)
    ys = np.linspace(0.0, gh - 1.001, h, dtype=np.float32)
    xs = np.linspace(0.0, gw - 1.001, w, dtype=np.float32)
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = (ys - y0)[None, :, None], (xs - x0)[None, None, :]
    rows = grid[:, y0] * (1 - fy) + grid[:, y0 + 1] * fy
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x0 + 1] * fx


def _shapes(
    rng: np.random.Generator, n: int, h: int, w: int, count: tuple[int, int], max_count: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Random rectangles and ellipses, layer by layer: (mask, dy, dx) each (n, h, w).

    dy, dx are the pixel's offsets from the shape's centre in units of its half-size, for
    shading. Images draw between count[0] and count[1] shapes; later layers cover earlier ones.
    """
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[None, :, None]
    xx = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, None, :]
    counts = rng.integers(count[0], count[1] + 1, n)
    for layer in range(max_count):
        cy, cx = rng.uniform(0.05, 0.95, (2, n, 1, 1)).astype(np.float32)
        ry = rng.uniform(0.10, 0.28, (n, 1, 1)).astype(np.float32)
        rx = rng.uniform(0.08, 0.22, (n, 1, 1)).astype(np.float32)
        is_rect = rng.random((n, 1, 1)) < 0.5
        dy, dx = (yy - cy) / ry, (xx - cx) / rx
        inside = np.where(is_rect, (np.abs(dy) <= 1) & (np.abs(dx) <= 1), dy**2 + dx**2 <= 1)
        yield inside & (layer < counts)[:, None, None], dy, dx


def render_scenes(
    rng: np.random.Generator, n: int, h: int, w: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n synthetic RGB-D scenes: rgb (n, h, w, 3), depth (n, h, w), label (n, h, w), all uint8."""
    yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[None, :, None]
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, None, :]
    layers = 6
    # Background: a dull wall, far away, gently sloping.
    slope = rng.uniform(-1.0, 1.0, (2, n, 1, 1)).astype(np.float32)
    depth = _LEVELS[0] + 0.05 * (slope[0] * yy + slope[1] * xx)
    # Per image, entry 0 is the wall and entry 1 + k the object of layer k; the colour image is
    # looked up from the index of the top layer, cheaper than blending 3 channels per layer.
    classes = np.zeros((n, layers + 1), np.int64)
    colours = np.empty((n, layers + 1, 3), np.float32)
    colours[:, 0] = _COLOURS[0] * rng.uniform(0.85, 1.15, (n, 1)).astype(np.float32)
    top = np.zeros((n, h, w), np.int64)
    for k, (inside, dy, dx) in enumerate(_shapes(rng, n, h, w, count=(3, 6), max_count=layers)):
        cls = rng.integers(1, len(SYNTHETIC_CLASSES), n)
        offset = rng.uniform(-0.03, 0.03, (n, 1, 1)).astype(np.float32)
        tilt = rng.uniform(-0.03, 0.03, (2, n, 1, 1)).astype(np.float32)
        bright = rng.uniform(0.8, 1.2, (n, 1)).astype(np.float32)
        tint = rng.uniform(-12.0, 12.0, (n, 3)).astype(np.float32)
        classes[:, k + 1] = cls
        colours[:, k + 1] = _COLOURS[cls] * bright + tint
        top[inside] = k + 1
        obj_depth = _LEVELS[cls][:, None, None] + offset + tilt[0] * dy + tilt[1] * dx
        depth = np.where(inside, obj_depth, depth)
    image = np.arange(n)[:, None, None]
    label = classes[image, top].astype(np.uint8)
    texture = 1.0 + 0.08 * _smooth_noise(rng, n, h, w, cell=16)
    rgb = colours[image, top] * texture[..., None]
    # Uniform pixel noise (cheaper to draw than Gaussian): std 6 grey levels, 0.012 in depth.
    rgb += 20.8 * (rng.random((n, h, w, 3), dtype=np.float32) - 0.5)
    depth = depth + 0.0416 * (rng.random((n, h, w), dtype=np.float32) - 0.5)
    rgb8 = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    depth8 = np.clip(np.rint(depth * 255.0), 0, 255).astype(np.uint8)
    return rgb8, depth8, label


def _save(array: np.ndarray, path: Path) -> None:
    # Atomic, without a sync per file: the set is synced once before its lists are written.
    image = Image.fromarray(array)
    atomic_write(path, lambda f: image.save(f, format="PNG", compress_level=1), sync=False)


def _finish(out: Path, texts: dict[str, str]) -> None:
    """Sync the images, then write the lists and the class file (the last marks it complete)."""
    if hasattr(os, "sync"):
        os.sync()
    for name, text in texts.items():
        write_text(out / name, text)


def generate_synthetic_dataset(
    out_dir: str | Path,
    num: int = 200,
    size: tuple[int, int] = (120, 160),
    seed: int = 0,
    val_fraction: float = 0.2,
    overwrite: bool = False,
) -> SyntheticSummary:
    """Write ``num`` synthetic RGB-D scenes in the NYUDv2 layout.

    The last ``round(num * val_fraction)`` samples form ``val.txt``, the others ``train.txt``
    (tab-separated ``rgb/N.png<TAB>masks/N.png<TAB>depth/N.png``, no newline after the last line,
    like the reference lists). ``classes.json`` names the classes and their colour and distance.
    Read it back with ``build_dataset("synthetic", out_dir, "train")``.
    """
    h, w, num_val = _check_args(num, size, val_fraction)
    images = [f"{k}/{i:06d}.png" for i in range(num) for k in ("rgb", "depth", "masks")]
    out = _prepare(out_dir, overwrite, [*images, "train.txt", "val.txt", "classes.json"])
    rng = np.random.default_rng(seed)
    lines = []
    for start in range(0, num, _CHUNK):
        n = min(_CHUNK, num - start)
        rgb, depth, label = render_scenes(rng, n, h, w)
        for j in range(n):
            name = f"{start + j:06d}.png"
            _save(rgb[j], out / "rgb" / name)
            _save(depth[j], out / "depth" / name)
            _save(label[j], out / "masks" / name)
            lines.append(f"rgb/{name}\tmasks/{name}\tdepth/{name}")
    num_train = num - num_val
    names = [n.split("_") for n in SYNTHETIC_CLASSES[1:]]
    meta = {
        "classes": list(SYNTHETIC_CLASSES),
        "colour": {"background": "beige", **{f"{c}_{d}": c for c, d in names}},
        "distance": {"background": "wall", **{f"{c}_{d}": d for c, d in names}},
        "depth_level": {
            n: round(float(v), 3) for n, v in zip(SYNTHETIC_CLASSES, _LEVELS, strict=True)
        },
        "generator": {"layout": "nyudv2", "num": num, "size": [h, w], "seed": seed},
    }
    _finish(
        out,
        {
            "train.txt": "\n".join(lines[:num_train]),
            "val.txt": "\n".join(lines[num_train:]),
            "classes.json": json.dumps(meta, indent=2) + "\n",
        },
    )
    return SyntheticSummary(out, num_train, num_val, (h, w), SYNTHETIC_CLASSES)


# DeLiVER variant. Class ids are DeLiVER's; the three object classes look identical in RGB and
# depth and differ only in the extra sensors:
#   Pedestrian vs Cars: only the event image (pedestrians move);
#   Cars vs Pole:       only the LiDAR image (reflectivity).
_DELIVER_IDS = {"Road": 6, "Building": 0, "Pedestrian": 3, "Cars": 9, "Pole": 4}
#                   colour            depth  moving  lidar
_DELIVER_LOOK = {
    0: ((150, 120, 90), 0.80, 0.0, 120.0),
    3: ((180, 60, 60), 0.35, 1.0, 220.0),
    9: ((180, 60, 60), 0.35, 0.0, 220.0),
    4: ((180, 60, 60), 0.35, 0.0, 40.0),
}


def render_deliver_scenes(
    rng: np.random.Generator, n: int, h: int, w: int, night: np.ndarray
) -> dict[str, np.ndarray]:
    """n DeLiVER-like scenes: rgb, hha (n,h,w,3), depth, event, lidar (n,h,w), semantic (n,h,w,3).

    ``semantic`` holds DeLiVER's stored ids (class + 1, 0 = unlabelled) in its first channel;
    the top two rows are left unlabelled. ``night`` (n,) darkens the RGB image.
    """
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[None, :, None]
    ids = np.full((n, h, w), _DELIVER_IDS["Road"], np.int64)
    depth = np.broadcast_to(0.95 - 0.35 * yy, (n, h, w)).astype(np.float32)
    colour = np.broadcast_to(np.float32([110, 110, 115]), (n, h, w, 3)).copy()
    moving = np.zeros((n, h, w), np.float32)
    lidar = np.full((n, h, w), 60.0, np.float32)
    classes = np.array(list(_DELIVER_LOOK))
    looks = list(_DELIVER_LOOK.values())
    look_colour = np.float32([c for c, _, _, _ in looks])
    look_depth, look_moving, look_lidar = (np.float32([lk[i] for lk in looks]) for i in (1, 2, 3))
    for inside, _, _ in _shapes(rng, n, h, w, count=(2, 4), max_count=4):
        pick = rng.integers(0, len(classes), n)
        sel = (slice(None), None, None)
        ids = np.where(inside, classes[pick][sel], ids)
        depth = np.where(inside, look_depth[pick][sel], depth)
        moving = np.where(inside, look_moving[pick][sel], moving)
        lidar = np.where(inside, look_lidar[pick][sel], lidar)
        colour = np.where(inside[..., None], look_colour[pick][:, None, None, :], colour)
    gain = np.where(night, 0.25, 1.0).astype(np.float32)[:, None, None, None]
    rgb = colour * gain + rng.normal(0.0, 5.0, (n, h, w, 3)).astype(np.float32)
    sparks = rng.random((n, h, w))
    event = np.where((moving > 0) & (sparks < 0.6), 200.0, 0.0) + np.where(sparks > 0.98, 90.0, 0.0)
    scan = (np.arange(h) % 2 == 0)[None, :, None]
    lidar = np.where(scan, lidar + rng.normal(0.0, 4.0, (n, h, w)), 0.0)
    depth8 = np.clip(np.rint(depth * 255.0), 0, 255)
    hha = np.stack([depth8, np.broadcast_to(255.0 * yy, (n, h, w)), np.full((n, h, w), 128.0)], -1)
    semantic = np.zeros((n, h, w, 3), np.float32)
    semantic[..., 0] = ids + 1
    semantic[:, :2, :, 0] = 0
    as8 = {
        "rgb": rgb,
        "hha": hha,
        "depth": depth8,
        "event": event,
        "lidar": lidar,
        "semantic": semantic,
    }
    return {k: np.clip(np.rint(v), 0, 255).astype(np.uint8) for k, v in as8.items()}


def generate_synthetic_deliver(
    out_dir: str | Path,
    num: int = 12,
    size: tuple[int, int] = (64, 96),
    seed: int = 0,
    conditions: Sequence[str] = ("sun", "night"),
    val_fraction: float = 0.25,
    overwrite: bool = False,
) -> SyntheticSummary:
    """Write ``num`` small multi-sensor scenes in the DeLiVER layout (train and val splits).

    Files: ``img`` ``_rgb``, ``hha`` ``_depth`` (3 channels), ``depth`` ``_depth`` (1 channel),
    ``event`` ``_event``, ``lidar`` ``_lidar`` and ``semantic`` ``_semantic``, under
    ``<condition>/<split>/seq00/``; sample i gets condition ``conditions[i % len]``.
    """
    h, w, num_val = _check_args(num, size, val_fraction)
    conditions = tuple(conditions)
    if not conditions:
        raise ValueError("need at least one condition")
    num_train = num - num_val
    files = {
        "rgb": ("img", "rgb"),
        "hha": ("hha", "depth"),
        "depth": ("depth", "depth"),
        "event": ("event", "event"),
        "lidar": ("lidar", "lidar"),
        "semantic": ("semantic", "semantic"),
    }

    def image_name(i: int, folder: str, suffix: str) -> str:
        split = "train" if i < num_train else "val"
        return f"{folder}/{conditions[i % len(conditions)]}/{split}/seq00/{i:06d}_{suffix}.png"

    images = [image_name(i, *where) for i in range(num) for where in files.values()]
    out = _prepare(out_dir, overwrite, [*images, "synthetic_deliver.json"])
    rng = np.random.default_rng(seed)
    for start in range(0, num, _CHUNK):
        n = min(_CHUNK, num - start)
        index = np.arange(start, start + n)
        night = np.array([conditions[i % len(conditions)] == "night" for i in index])
        scenes = render_deliver_scenes(rng, n, h, w, night)
        for j, i in enumerate(index):
            for key, where in files.items():
                _save(scenes[key][j], out / image_name(int(i), *where))
    meta = {
        "classes_used": {name: i for name, i in _DELIVER_IDS.items()},
        "note": "Pedestrian and Cars differ only in event; Cars and Pole only in lidar",
        "generator": {"layout": "deliver", "num": num, "size": [h, w], "seed": seed},
    }
    _finish(out, {"synthetic_deliver.json": json.dumps(meta, indent=2) + "\n"})
    return SyntheticSummary(out, num_train, num_val, (h, w), tuple(_DELIVER_IDS))
