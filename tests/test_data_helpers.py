"""Builders of tiny datasets in each layout, shared by the data tests (no tests here)."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def save(path: Path, array: np.ndarray) -> Path:
    """Write an image; uint16 2-D arrays become 16-bit PNGs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return path


def pattern(h: int, w: int, seed: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, (h, w)).astype(np.uint8)


def make_nyu(root: Path, n: int = 3, h: int = 8, w: int = 12, split: str = "train") -> Path:
    """rgb/, depth/ (8-bit), masks/ (classes 0..39 and a few 255) and a split list."""
    lines = []
    for i in range(n):
        name = f"{i:06d}.png"
        save(root / "rgb" / name, np.stack([pattern(h, w, i * 3 + c) for c in range(3)], -1))
        save(root / "depth" / name, pattern(h, w, 100 + i))
        mask = pattern(h, w, 200 + i, high=40)
        mask[0, 0] = 255
        save(root / "masks" / name, mask)
        lines.append(f"rgb/{name}\tmasks/{name}\tdepth/{name}")
    (root / f"{split}.txt").write_text("\n".join(lines))
    return root


def make_sun(root: Path, n: int = 2, h: int = 8, w: int = 12, split: str = "test") -> Path:
    """RGB/*.jpg, Depth/*.png, labels/*.png (stored 0..37) and a split list with a final newline."""
    lines = []
    for i in range(n):
        rgb = np.full((h, w, 3), 128, np.uint8)
        Image.fromarray(rgb).save(_mkdir(root / "RGB") / f"{split}_{i}.jpg", quality=95)
        save(root / "Depth" / f"{split}_{i}.png", pattern(h, w, 10 + i))
        save(root / "labels" / f"{split}_{i}.png", pattern(h, w, 20 + i, high=38))
        lines.append(f"RGB/{split}_{i}.jpg\tlabels/{split}_{i}.png\tDepth/{split}_{i}.png\n")
    (root / f"{split}.txt").write_text("".join(lines))
    return root


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def deliver_path(root: Path, folder: str, cond: str, split: str, frame: str, suffix: str) -> Path:
    return root / folder / cond / split / "MAP_1_point1" / f"{frame}_{suffix}.png"


def make_deliver(
    root: Path, frames: dict[str, list[str]] | None = None, split: str = "train", h: int = 8,
    w: int = 12,
) -> Path:  # fmt: skip
    """Every modality for each (condition, frame); semantic stored ids 0..25 in channel 0."""
    frames = frames or {"sun": ["000001", "000000"], "night": ["000002"]}
    for cond, names in frames.items():
        for k, frame in enumerate(names):
            seed = zlib.crc32(f"{cond}/{frame}".encode()) % 1000

            def put(folder: str, suffix: str, array: np.ndarray, c=cond, f=frame) -> None:
                save(deliver_path(root, folder, c, split, f, suffix), array)

            put("img", "rgb", np.stack([pattern(h, w, seed + c) for c in range(3)], -1))
            put("hha", "depth", np.stack([pattern(h, w, seed + 3 + c) for c in range(3)], -1))
            put("depth", "depth", pattern(h, w, seed + 6))
            put("event", "event", pattern(h, w, seed + 7))
            put("lidar", "lidar", pattern(h, w, seed + 8))
            ids = pattern(h, w, seed + 9 + k, high=26)
            put("semantic", "semantic", np.stack([ids, ids, np.zeros_like(ids)], -1))
    return root


def make_folder(root: Path, stems: tuple[str, ...] = ("a", "b", "c"), h: int = 6, w: int = 8):
    """rgb/ (png and jpg), thermal/ (8-bit), labels/ (0..2 and 255)."""
    for i, stem in enumerate(stems):
        ext = ".jpg" if i % 2 else ".png"
        rgb = Image.fromarray(np.full((h, w, 3), 90, np.uint8))
        rgb.save(_mkdir(root / "rgb") / f"{stem}{ext}")
        save(root / "thermal" / f"{stem}.png", pattern(h, w, 30 + i))
        label = pattern(h, w, 40 + i, high=3)
        label[-1, -1] = 255
        save(root / "labels" / f"{stem}.png", label)
    return root


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """(mtime_ns, sha1) of every file under root, to prove nothing was written."""
    return {
        str(p): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
