"""Does this data look like what it was declared to be? Warnings that name the likely cause.

A dataset read under another dataset's name often decodes without a single error: SUN RGB-D
labels read as NYUDv2 are all shifted by one class, NYUDv2 labels read as SUN RGB-D lose their
first class to the ignore value. These checks look at the folder names the split list uses and at
the share of ignored label pixels, and say what the data looks like instead. ``build_dataset``
warns (:class:`DataWarning`) from a few samples; ``check-data`` reports them over every sample.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from geminifusion.data.transforms import IGNORE_INDEX

# More than this share of ignored label pixels is reported.
IGNORED_LIMIT = 0.5
# Top folders of each split-list layout: (colour, label).
NYUDV2_FOLDERS = ("rgb", "masks")
SUNRGBD_FOLDERS = ("RGB", "labels")


class DataWarning(UserWarning):
    """Data that decodes but is probably not what it was declared to be."""


def _top_folder(path: str, root: Path) -> str | None:
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 else None


def layout_warnings(dataset) -> list[str]:
    """What the folder names of a split-list dataset say about its layout."""
    if dataset.name not in ("nyudv2", "sunrgbd", "synthetic") or not dataset.samples:
        return []
    paths = dataset.samples[0].paths
    root = Path(dataset.root)
    rgb = _top_folder(paths.get("rgb", ""), root) if "rgb" in paths else None
    label = _top_folder(paths["label"], root)
    where = f"{root}: the split list's files are under {rgb or '?'}/ and {label or '?'}/"
    if dataset.name == "sunrgbd" and (label == NYUDV2_FOLDERS[1] or rgb == NYUDV2_FOLDERS[0]):
        return [
            f"{where}, the NYUDv2 layout (rgb/, depth/, masks/), not SUN RGB-D's (RGB/, Depth/, "
            "labels/): --dataset sunrgbd reads labels as 1..37 with 0 = unlabelled, so the "
            "first class of NYUDv2-style labels becomes 'ignored'; use --dataset nyudv2 (or "
            "synthetic, for a folder written by `geminifusion synth`)"
        ]
    if dataset.name != "sunrgbd" and (label == SUNRGBD_FOLDERS[1] or rgb == SUNRGBD_FOLDERS[0]):
        return [
            f"{where}, the SUN RGB-D layout (RGB/, Depth/, labels/): its labels are stored as "
            f"1..37 with 0 = unlabelled, so --dataset {dataset.name} reads every label shifted "
            "by one class; use --dataset sunrgbd"
        ]
    return []


def ignored_warning(dataset, ignored: int, total: int) -> str | None:
    """A warning when more than half of the label pixels decode to the ignore value."""
    if not total or ignored / total <= IGNORED_LIMIT:
        return None
    return (
        f"{100.0 * ignored / total:.1f}% of the label pixels of {dataset.root} are ignored "
        f"({IGNORE_INDEX}) after decoding ({dataset.label_rule}): labels stored another way are "
        "probably being read under the wrong --dataset (or reduce_zero_label) setting"
    )


def sampled_ignored_share(dataset, count: int = 4) -> tuple[int, int]:
    """(ignored, total) label pixels over ``count`` evenly spaced samples (labels only)."""
    n = len(dataset.samples)
    ignored = total = 0
    for index in sorted({int(i) for i in np.linspace(0, n - 1, min(count, n))}):
        try:
            label = dataset.decode_label(
                dataset.read_stored_label(dataset.samples[index].paths["label"])
            )
        except Exception:  # noqa: BLE001 - a bad file is check-data's and the loader's business
            continue
        ignored += int((label == IGNORE_INDEX).sum())
        total += int(label.size)
    return ignored, total


def warn_if_unlike(dataset) -> None:
    """Warn (:class:`DataWarning`) when ``dataset`` looks like another layout or most of its
    label pixels are ignored; reads only a few labels."""
    messages = layout_warnings(dataset)
    extra = ignored_warning(dataset, *sampled_ignored_share(dataset))
    for message in messages + ([extra] if extra else []):
        warnings.warn(message, DataWarning, stacklevel=3)
