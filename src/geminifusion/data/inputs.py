"""Inputs for prediction: image files, folders matched by file name, or a split list.

A dataset needs labels; prediction does not. :func:`collect_samples` pairs the files of each
modality (``name -> path`` per sample) and :func:`read_sample` decodes one sample into the
tensors a model takes, with the same readers and formats as the datasets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from geminifusion.data.datasets import read_split_list
from geminifusion.data.io import DataError, default_format, index_folder, read_modality
from geminifusion.data.transforms import RGB_KEY, normalize_rgb

# The columns of a reference split list (image, label, depth).
SPLIT_LIST_COLUMNS = {"rgb": 0, "depth": 2}


def _flag(modality: str) -> str:
    return f"--{modality}" if modality in ("rgb", "depth") else f"--input {modality}=PATH"


def collect_samples(
    modalities: Sequence[str],
    paths: Mapping[str, str],
    split_list: Path | None = None,
    root: Path | None = None,
) -> list[tuple[str, dict[str, str]]]:
    """``(name, modality -> file)`` per sample, from files, folders (matched by stem) or a list.

    Args:
        modalities: the model's inputs, in order.
        paths: a file per modality (one sample) or a folder per modality (matched by file name
            without extension).
        split_list: a reference split list instead of ``paths`` (RGB and depth columns).
        root: the folder the list's paths are relative to (default: the list's folder).
    """
    if split_list is not None:
        if paths:
            raise ValueError("give either --list or image paths, not both")
        base = root if root is not None else split_list.parent
        if not base.is_dir():
            raise FileNotFoundError(f"--root: folder not found: {base}")
        extra = [m for m in modalities if m not in SPLIT_LIST_COLUMNS]
        if extra:
            raise ValueError(f"a split list names rgb and depth only; the model also takes {extra}")
        samples = []
        for _, fields in read_split_list(split_list):
            files = {m: str(base / fields[SPLIT_LIST_COLUMNS[m]]) for m in modalities}
            samples.append((Path(fields[0]).stem, files))
        missing = [f for _, s in samples for f in s.values() if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} files of {split_list} missing: {missing[0]}")
        return samples

    absent = [m for m in modalities if m not in paths]
    if absent:
        flags = ", ".join(_flag(m) for m in absent)
        raise ValueError(f"the model takes {list(modalities)}: give {flags} (or --list)")
    unused = [m for m in paths if m not in modalities]
    if unused:
        raise ValueError(f"the model does not take {unused}; it takes {list(modalities)}")
    for m in modalities:
        if not Path(paths[m]).exists():
            raise FileNotFoundError(f"{_flag(m).split()[0]}: not found: {paths[m]}")
    kinds = {Path(paths[m]).is_dir() for m in modalities}
    if kinds == {False}:
        return [(Path(paths[modalities[0]]).stem, {m: paths[m] for m in modalities})]
    if kinds != {True}:
        raise ValueError("give every input as a file, or every input as a folder")
    indexes = {m: index_folder(paths[m]) for m in modalities}
    first = indexes[modalities[0]]
    if not first:
        raise FileNotFoundError(f"no images in {paths[modalities[0]]}")
    for m in modalities[1:]:
        lacking = sorted(set(first) - set(indexes[m]))
        if lacking:
            raise FileNotFoundError(
                f"{len(lacking)} images of {paths[modalities[0]]} have no match in {paths[m]} "
                f"(matched by file name without extension), e.g. {lacking[0]}"
            )
    return [(stem, {m: indexes[m][stem] for m in modalities}) for stem in first]


def read_sample(
    files: Mapping[str, str], depth_format: str = "png8", depth_max_m: float = 10.0
) -> tuple[dict[str, torch.Tensor], np.ndarray | None]:
    """One sample's model inputs (``1 x 3 x H x W`` each, RGB normalised) and its RGB image.

    Returns:
        The tensors by modality, and the colour image as ``H x W x 3`` uint8 (None without RGB),
        for drawing the prediction over it.
    """
    tensors, rgb_image = {}, None
    first: tuple[str, tuple[int, ...]] | None = None
    for name, path in files.items():
        array = read_modality(path, default_format(name, depth_format), depth_max_m)
        if first is None:
            first = (name, array.shape[:2])
        elif array.shape[:2] != first[1]:
            raise DataError(
                f"{name} image is {array.shape[0]}x{array.shape[1]} but the {first[0]} image "
                f"is {first[1][0]}x{first[1][1]}; the inputs must be aligned",
                path,
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        if name == RGB_KEY:
            rgb_image = np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)
            tensor = normalize_rgb(tensor)
        tensors[name] = tensor[None]
    return tensors, rgb_image
