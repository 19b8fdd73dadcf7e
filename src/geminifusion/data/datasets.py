"""Datasets: where each layout keeps its files and how its labels are decoded.

Every dataset returns, per sample, a dict with one float tensor (3 x H x W) per modality (keyed by
modality name, in ``dataset.modalities`` order), ``"label"`` (int64 H x W, 255 = ignore) and
``"paths"`` (modality / ``"label"`` -> path string); DeLiVER adds ``"condition"``. The colour
image (``"rgb"``) is ImageNet-normalised; every other modality is only divided by 255 (or scaled
to [0, 1] by its depth format), as in the reference.

Files are listed and checked for existence when the dataset is built, and each sample is decoded
and checked (sizes, label values) when read, so a bad file fails with its name. Nothing under
``root`` is ever written.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from geminifusion.data.io import (
    DEPTH_FORMATS,
    MODALITY_FORMATS,
    DataError,
    default_format,
    index_folder,
    read_label,
    read_modality,
)
from geminifusion.data.transforms import (
    IGNORE_INDEX,
    RGB_KEY,
    EvalTransform,
    TrainTransform,
    normalize_rgb,
    sample_seed,
)

NYUDV2_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # fmt: skip
# SUN RGB-D's 37 classes are NYUDv2's first 37, in the same order.
SUNRGBD_CLASSES: tuple[str, ...] = NYUDV2_CLASSES[:37]
DELIVER_CLASSES: tuple[str, ...] = (
    "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk",
    "Vegetation", "Cars", "Wall", "TrafficSign", "Sky", "Ground", "Bridge", "RailTrack",
    "GroundRail", "TrafficLight", "Static", "Dynamic", "Water", "Terrain", "TwoWheeler", "Bus",
    "Truck",
)  # fmt: skip
DELIVER_CONDITIONS: tuple[str, ...] = ("cloud", "fog", "night", "rain", "sun")
DELIVER_MODALITIES: tuple[str, ...] = ("rgb", "depth", "event", "lidar")

# Keys of a sample dict that are not modalities.
RESERVED_KEYS = ("label", "paths", "condition")

Transform = Callable[[dict[str, Tensor], Tensor, torch.Generator], tuple[dict[str, Tensor], Tensor]]


@dataclass(frozen=True)
class SampleFiles:
    """The files of one sample: modality names and ``"label"`` -> path."""

    paths: dict[str, str]
    condition: str | None = None


def check_modalities(
    modalities: Sequence[str], known: Sequence[str] | None, where: str
) -> tuple[str, ...]:
    """Validate a user's modality selection against the ones a layout provides."""
    if isinstance(modalities, str):
        modalities = (modalities,)
    modalities = tuple(modalities)
    if not modalities:
        raise DataError(f"no modalities selected for {where}")
    if len(set(modalities)) != len(modalities):
        raise DataError(f"modality listed twice in {modalities}")
    for m in modalities:
        if m in RESERVED_KEYS:
            raise DataError(f"'{m}' cannot be a modality name (reserved key of a sample)")
        if known is not None and m not in known:
            raise DataError(f"unknown modality '{m}' for {where}; available: {', '.join(known)}")
    return modalities


def _raise_missing(missing: list[tuple[str, str]]) -> None:
    """One error for all missing files: the first is named, a few more are listed."""
    if not missing:
        return
    path, where = missing[0]
    more = ""
    if len(missing) > 1:
        shown = "".join(f"\n  {p}" for p, _ in missing[1:6])
        rest = f"\n  ... and {len(missing) - 6} more" if len(missing) > 6 else ""
        more = f"; {len(missing) - 1} more files of this split are missing:{shown}{rest}"
    raise DataError(f"file not found ({where}){more}", path)


def _resize_nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # Index rule of torch's "nearest" (floor(dst * in / out)), which the reference uses.
    h, w = arr.shape[:2]
    rows = np.minimum((np.arange(size[0]) * (h / size[0])).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(size[1]) * (w / size[1])).astype(np.int64), w - 1)
    return arr[rows][:, cols]


def read_class_names(root: str | Path) -> tuple[str, ...] | None:
    """Class names from ``root/classes.json`` (a list, or ``{"classes": [...]}``), if present."""
    path = Path(root) / "classes.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot parse class list ({err})", path) from None
    names = data.get("classes") if isinstance(data, dict) else data
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError('expected a list of class names or {"classes": [...]}', path)
    return tuple(names)


class SegmentationDataset(Dataset):
    """Common reading, checking and transforming; subclasses only list files and decode labels.

    Random transforms draw from a ``torch.Generator`` seeded with
    ``sample_seed(seed, epoch, index)``: a sample's augmentation depends only on those three
    numbers, not on the worker that loads it. Call ``set_epoch(epoch)`` before each epoch (with
    ``persistent_workers=True`` the workers keep the epoch they started with).
    """

    name = "dataset"
    ignore_index = IGNORE_INDEX
    label_rule = "labels are stored as class indices, 255 = ignore"
    # Evaluation resize used by build_dataset (None: keep the stored size).
    eval_short_side: int | None = None
    eval_resize_label = False

    def __init__(
        self,
        samples: Sequence[SampleFiles],
        modalities: Sequence[str],
        formats: Mapping[str, str],
        class_names: Sequence[str],
        *,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        seed: int = 0,
        depth_max_m: float = 10.0,
        strict_labels: bool = True,
        resize_nearest: Sequence[str] = (),
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.samples = list(samples)
        self.modalities = tuple(modalities)
        self.formats = {m: formats[m] for m in self.modalities}
        for m, fmt in self.formats.items():
            if fmt not in MODALITY_FORMATS:
                raise ValueError(f"unknown format {fmt!r} for '{m}'; expected {MODALITY_FORMATS}")
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.depth_max_m = float(depth_max_m)
        self.strict_labels = strict_labels
        self.resize_nearest = tuple(resize_nearest)
        if not self.samples:
            raise DataError(f"split '{split}' is empty: no samples found", self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose augmentations the next samples get."""
        self.epoch = int(epoch)

    def read_stored_label(self, path: str) -> np.ndarray:
        """The label file's values as stored."""
        return read_label(path)

    def decode_label(self, stored: np.ndarray) -> np.ndarray:
        """Stored values -> class indices 0..K-1 and 255 (ignore)."""
        return stored

    def load(self, index: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Read and check one sample, before any transform.

        Returns:
            float32 H x W x 3 arrays in [0, 1] per modality, and the decoded int64 label. With
            ``strict_labels=False`` (NYUDv2) values >= num_classes other than 255 are kept here;
            ``__getitem__`` turns them into 255.
        """
        files = self.samples[index]
        arrays = {
            m: read_modality(files.paths[m], self.formats[m], self.depth_max_m)
            for m in self.modalities
        }
        label_path = files.paths["label"]
        stored = self.read_stored_label(label_path)
        label = self.decode_label(stored)
        if RGB_KEY in arrays:
            ref_name, ref_path, ref_size = RGB_KEY, files.paths[RGB_KEY], arrays[RGB_KEY].shape[:2]
        else:
            ref_name, ref_path, ref_size = "label", label_path, label.shape
        for m, arr in arrays.items():
            if arr.shape[:2] == ref_size:
                continue
            if m in self.resize_nearest:
                arrays[m] = _resize_nearest(arr, ref_size)
                continue
            raise DataError(
                f"{m} image is {arr.shape[0]}x{arr.shape[1]} but the {ref_name} image "
                f"{ref_path} is {ref_size[0]}x{ref_size[1]}; a sample's inputs must be aligned",
                files.paths[m],
            )
        if label.shape != ref_size:
            raise DataError(
                f"label is {label.shape[0]}x{label.shape[1]} but the {ref_name} image "
                f"{ref_path} is {ref_size[0]}x{ref_size[1]}",
                label_path,
            )
        if self.strict_labels:
            bad = (label >= self.num_classes) & (label != IGNORE_INDEX)
            if bad.any():
                values = np.unique(stored[bad])
                shown = ", ".join(str(v) for v in values[:8]) + (" ..." if len(values) > 8 else "")
                raise DataError(
                    f"{int(bad.sum())} pixel(s) have stored label values [{shown}] outside the "
                    f"{self.num_classes} classes and not ignored ({self.label_rule})",
                    label_path,
                )
        return arrays, label

    def __getitem__(self, index: int) -> dict:
        files = self.samples[index]
        arrays, label = self.load(index)
        label = np.where((label >= self.num_classes) & (label != IGNORE_INDEX), IGNORE_INDEX, label)
        images = {
            m: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
            for m, a in arrays.items()
        }
        label_t = torch.from_numpy(label.astype(np.int64))
        if self.transform is not None:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
            images, label_t = self.transform(images, label_t, g)
        if RGB_KEY in images:
            images[RGB_KEY] = normalize_rgb(images[RGB_KEY])
        sample: dict = {m: images[m] for m in self.modalities}
        sample["label"] = label_t
        sample["paths"] = dict(files.paths)
        if files.condition is not None:
            sample["condition"] = files.condition
        return sample

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root='{self.root}', split='{self.split}', "
            f"modalities={self.modalities}, samples={len(self)}, num_classes={self.num_classes}, "
            f"transform={self.transform!r})"
        )


def read_split_list(path: str | Path, columns: int = 3) -> list[tuple[int, list[str]]]:
    """(line number, tab-separated fields) of a reference split list; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError("split list not found (pass split_file= to use another list)", path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"split list is not UTF-8 text ({err})", path) from None
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != columns:
            raise DataError(
                f"line {number}: expected {columns} tab-separated paths (image, label, depth), "
                f"found {len(fields)}: {line!r}",
                path,
            )
        rows.append((number, fields))
    return rows


class NYUDv2(SegmentationDataset):
    """NYUDv2 as the reference reads it: ``rgb/``, ``depth/``, ``masks/`` and split lists.

    The split list ``root/<split>.txt`` (or ``split_file``) has one sample per line,
    ``image<TAB>label<TAB>depth``, paths relative to ``root``. Labels are used as stored:
    0..39 are classes, 255 is ignored, and any other value (the reference skips >= 40 when
    scoring) becomes 255 too; ``check_dataset`` reports such values as a warning.
    """

    name = "nyudv2"
    known_modalities: tuple[str, ...] = ("rgb", "depth")
    columns = {"rgb": 0, "label": 1, "depth": 2}
    default_classes: tuple[str, ...] = NYUDV2_CLASSES
    label_rule = "NYUDv2 labels are used as stored: 0..39 classes, 255 ignored"
    default_strict = False

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        modalities: Sequence[str] = ("rgb", "depth"),
        *,
        split_file: str | Path | None = None,
        depth_format: str = "png8",
        depth_max_m: float = 10.0,
        class_names: Sequence[str] | None = None,
        strict_labels: bool | None = None,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        root = Path(root)
        split = split or "train"
        modalities = check_modalities(modalities, self.known_modalities, self.name)
        if depth_format not in DEPTH_FORMATS:
            raise ValueError(f"unknown depth_format {depth_format!r}; expected {DEPTH_FORMATS}")
        list_path = Path(split_file) if split_file is not None else root / f"{split}.txt"
        samples, missing = [], []
        for number, fields in read_split_list(list_path):
            paths = {}
            for key in (*modalities, "label"):
                path = root / fields[self.columns[key]]
                paths[key] = str(path)
                if not os.path.isfile(path):
                    missing.append((str(path), f"line {number} of {list_path}"))
            samples.append(SampleFiles(paths))
        _raise_missing(missing)
        if not samples:
            raise DataError(f"split '{split}' is empty: the split list has no samples", list_path)
        super().__init__(
            samples,
            modalities,
            {"rgb": "rgb", "depth": depth_format},
            class_names if class_names is not None else self.default_classes,
            root=root,
            split=split,
            transform=transform,
            seed=seed,
            depth_max_m=depth_max_m,
            strict_labels=self.default_strict if strict_labels is None else strict_labels,
        )


class SUNRGBD(NYUDv2):
    """SUN RGB-D in the DFormer layout: ``RGB/*.jpg``, ``Depth/*.png``, ``labels/*.png``.

    Same split-list format as NYUDv2 (``train.txt``, ``test.txt``). Labels are read as 8-bit and
    shifted by -1 with uint8 wrap-around: 0 (unlabelled) becomes 255, 1..37 become 0..36.
    """

    name = "sunrgbd"
    default_classes = SUNRGBD_CLASSES
    label_rule = "SUN RGB-D labels are stored as 1..37, with 0 = unlabelled"
    default_strict = True

    def read_stored_label(self, path: str) -> np.ndarray:
        return read_label(path, eight_bit=True)

    def decode_label(self, stored: np.ndarray) -> np.ndarray:
        return (stored.astype(np.uint8) - np.uint8(1)).astype(np.int64)


class SyntheticDataset(NYUDv2):
    """A folder written by ``generate_synthetic_dataset``: NYUDv2 layout, 8-bit depth.

    Class names come from its ``classes.json``; every label value must be a class or 255.
    """

    name = "synthetic"
    label_rule = "synthetic labels are class indices, 255 = ignore"
    default_strict = True

    def __init__(self, root: str | Path, split: str | None = "train", **kwargs) -> None:
        names = read_class_names(root)
        if names is None:
            raise DataError("no classes.json: not a folder written by `geminifusion synth`", root)
        kwargs.setdefault("class_names", names)
        super().__init__(root, split, **kwargs)


class DeLiVER(SegmentationDataset):
    """DeLiVER: ``<folder>/<condition>/<split>/<sequence>/<frame>_<suffix>.png``.

    Folders and suffixes: ``img`` ``_rgb``; depth from ``hha`` (as the reference; ``depth_dir``
    picks ``depth`` instead) ``_depth``; ``event`` ``_event`` (resized to the RGB size,
    nearest); ``lidar`` ``_lidar``; ``semantic`` ``_semantic``. The label is the first channel of
    the semantic PNG as uint8, 255 set to 0, then minus 1 with wrap-around: 0 becomes 255
    (ignored), 1..25 become classes 0..24. Samples are sorted by path, as the reference does.
    """

    name = "deliver"
    label_rule = "DeLiVER labels are stored as 1..25 in the first channel, with 0 = unlabelled"
    eval_short_side = 1024
    eval_resize_label = True
    suffixes = {"rgb": "rgb", "depth": "depth", "event": "event", "lidar": "lidar"}

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        modalities: Sequence[str] = DELIVER_MODALITIES,
        *,
        conditions: Sequence[str] = DELIVER_CONDITIONS,
        depth_format: str = "png8",
        depth_dir: str = "hha",
        depth_max_m: float = 10.0,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        root = Path(root)
        split = split or "train"
        modalities = check_modalities(modalities, DELIVER_MODALITIES, self.name)
        conditions = (conditions,) if isinstance(conditions, str) else tuple(conditions)
        for c in conditions:
            if c not in DELIVER_CONDITIONS:
                raise DataError(
                    f"unknown condition '{c}'; available: {', '.join(DELIVER_CONDITIONS)}"
                )
        if depth_format not in DEPTH_FORMATS:
            raise ValueError(f"unknown depth_format {depth_format!r}; expected {DEPTH_FORMATS}")
        folders = {"rgb": "img", "depth": depth_dir, "event": "event", "lidar": "lidar"}
        labels = sorted(
            str(p)
            for c in conditions
            for p in (root / "semantic" / c / split).glob("*/*_semantic.png")
        )
        samples, missing = [], []
        for label_path in labels:
            rel = Path(label_path).relative_to(root / "semantic")
            condition = rel.parts[0]
            frame = rel.name[: -len("_semantic.png")]
            paths = {}
            for m in modalities:
                path = root / folders[m] / rel.parent / f"{frame}_{self.suffixes[m]}.png"
                paths[m] = str(path)
                if not os.path.isfile(path):
                    missing.append((str(path), f"the {m} file of {label_path}"))
            paths["label"] = label_path
            samples.append(SampleFiles(paths, condition))
        _raise_missing(missing)
        if not samples:
            where = root / "semantic" / f"{{{','.join(conditions)}}}" / split / "*"
            raise DataError(f"split '{split}' is empty: no *_semantic.png files in {where}", root)
        formats = {"rgb": "rgb", "depth": depth_format, "event": "png8", "lidar": "png8"}
        super().__init__(
            samples,
            modalities,
            formats,
            DELIVER_CLASSES,
            root=root,
            split=split,
            transform=transform,
            seed=seed,
            depth_max_m=depth_max_m,
            resize_nearest=("event",),
        )
        self.conditions = conditions

    def read_stored_label(self, path: str) -> np.ndarray:
        return read_label(path, eight_bit=True, first_channel=True)

    def decode_label(self, stored: np.ndarray) -> np.ndarray:
        raw = stored.astype(np.uint8)
        raw[raw == 255] = 0
        return (raw - np.uint8(1)).astype(np.int64)


class FolderDataset(SegmentationDataset):
    """Your own sensors: ``root/<modality>/<stem>.<ext>`` and ``root/labels/<stem>.<ext>``.

    Files are matched by stem (any image extension). ``split`` names a list file
    ``root/<split>.txt`` with one stem per line; ``None`` or ``"all"`` uses every label file.
    ``modalities=None`` takes every sub-folder except ``labels``, ``rgb`` first. Formats: ``rgb``
    is a colour image, ``depth`` follows ``depth_format``, any other modality is an 8-bit map
    unless ``formats`` says otherwise. Labels are class indices (255 = ignore); with
    ``reduce_zero_label`` they are stored as 1..K with 0 = unlabelled (shifted like SUN RGB-D).
    Class names come from ``class_names``, ``root/classes.json``, or ``num_classes`` (class_0..).
    Without a split list, an image that has no label is an error naming it, unless
    ``allow_unlabelled`` (then it is left out, with a warning, and listed in ``skipped``).
    """

    name = "folder"
    skipped: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        modalities: Sequence[str] | None = None,
        *,
        split_file: str | Path | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        formats: Mapping[str, str] | None = None,
        depth_format: str = "png8",
        depth_max_m: float = 10.0,
        reduce_zero_label: bool = False,
        label_dir: str = "labels",
        allow_unlabelled: bool = False,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError("dataset folder not found", root)
        available = sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir() and p.name != label_dir and not p.name.startswith(".")
        )
        available = sorted(available, key=lambda n: n != RGB_KEY)
        if modalities is None:
            modalities = tuple(available)
        modalities = check_modalities(modalities, available, f"folder {root}")
        if not (root / label_dir).is_dir():
            hint = ""
            if (root / "masks").is_dir() and any(root.glob("*.txt")):
                hint = " (masks/ and split lists: the NYUDv2 layout, --dataset nyudv2)"
            raise DataError(f"no '{label_dir}' folder with the label images{hint}", root)
        if depth_format not in DEPTH_FORMATS:
            raise ValueError(f"unknown depth_format {depth_format!r}; expected {DEPTH_FORMATS}")
        indexes = {key: index_folder(root / key) for key in (*modalities, label_dir)}
        if split_file is not None or split not in (None, "all"):
            list_path = Path(split_file) if split_file is not None else root / f"{split}.txt"
            if not list_path.is_file():
                raise DataError(f"split list for split '{split}' not found", list_path)
            lines = list_path.read_bytes().decode("utf-8").splitlines()
            stems = [(n, s.strip()) for n, s in enumerate(lines, 1) if s.strip()]
            if not stems:
                raise DataError(f"split '{split}' is empty: the list names no samples", list_path)
        else:
            list_path = None
            stems = [(0, s) for s in indexes[label_dir]]
            self.skipped = _unlabelled(indexes, modalities, label_dir, root, allow_unlabelled)
        samples, missing = [], []
        for number, stem in stems:
            paths = {}
            for key in (*modalities, label_dir):
                name = "label" if key == label_dir else key
                if stem in indexes[key]:
                    paths[name] = indexes[key][stem]
                else:
                    where = (
                        f"line {number} of {list_path}"
                        if list_path
                        else f"to match the label {indexes[label_dir][stem]}"
                    )
                    missing.append((str(root / key / f"{stem}.*"), where))
            samples.append(SampleFiles(paths))
        _raise_missing(missing)
        formats = dict(formats or {})
        for m in modalities:
            formats.setdefault(m, default_format(m, depth_format))
        if class_names is None:
            class_names = read_class_names(root)
        if class_names is None:
            if num_classes is None:
                raise DataError("give num_classes (or class_names, or a classes.json file)", root)
            class_names = tuple(f"class_{i}" for i in range(num_classes))
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(f"num_classes={num_classes} but {len(class_names)} class names")
        self.reduce_zero_label = reduce_zero_label
        if reduce_zero_label:
            self.label_rule = "labels are stored as 1..K with 0 = unlabelled (reduce_zero_label)"
        super().__init__(
            samples,
            modalities,
            formats,
            class_names,
            root=root,
            split=split or "all",
            transform=transform,
            seed=seed,
            depth_max_m=depth_max_m,
        )

    def read_stored_label(self, path: str) -> np.ndarray:
        return read_label(path, eight_bit=self.reduce_zero_label)

    def decode_label(self, stored: np.ndarray) -> np.ndarray:
        if not self.reduce_zero_label:
            return stored
        return (stored.astype(np.uint8) - np.uint8(1)).astype(np.int64)


def _unlabelled(
    indexes: Mapping[str, Mapping[str, str]],
    modalities: Sequence[str],
    label_dir: str,
    root: Path,
    allow: bool,
) -> tuple[str, ...]:
    """The input images of a folder dataset without a label (an error unless ``allow``)."""
    labelled = set(indexes[label_dir])
    lacking = sorted(
        {path for m in modalities for stem, path in indexes[m].items() if stem not in labelled}
    )
    if not lacking:
        return ()
    shown = ", ".join(lacking[:5]) + (f", ... ({len(lacking)} in all)" if len(lacking) > 5 else "")
    message = (
        f"{len(lacking)} image(s) have no label in {root / label_dir} (matched by file name "
        f"without extension): {shown}"
    )
    if not allow:
        raise DataError(
            f"{message}; add their labels, or leave them out with allow_unlabelled=True "
            "(check-data --allow-unlabelled; train/eval: --set "
            "dataset_options.allow_unlabelled=true)",
            root,
        )
    from geminifusion.data.sanity import DataWarning

    warnings.warn(f"{root}: {message}; left out (allow_unlabelled)", DataWarning, stacklevel=4)
    return tuple(lacking)


DATASETS: dict[str, type[SegmentationDataset]] = {
    "nyudv2": NYUDv2,
    "sunrgbd": SUNRGBD,
    "deliver": DeLiVER,
    "folder": FolderDataset,
    "synthetic": SyntheticDataset,
}


def build_dataset(
    name: str,
    root: str | Path,
    split: str | None,
    modalities: Sequence[str] | None = None,
    train: bool = False,
    crop_size: tuple[int, int] | None = None,
    seed: int = 0,
    *,
    scale_range: tuple[float, float] = (0.5, 2.0),
    eval_short_side: int | None | str = "default",
    check_layout: bool = True,
    **kwargs,
) -> SegmentationDataset:
    """Build a dataset by name with the training or evaluation transforms.

    Args:
        name: one of ``DATASETS`` (nyudv2, sunrgbd, deliver, folder, synthetic).
        root: the dataset folder (read only).
        split: e.g. "train", "val", "test" (folder: a list file name, or None for all).
        modalities: which inputs, in which order; None for the dataset's default.
        train: use ``TrainTransform(crop_size, scale_range)``; otherwise ``EvalTransform``.
        crop_size: (H, W) training crop; required when ``train``.
        seed: base seed of the augmentations (see ``sample_seed``).
        eval_short_side: evaluation resize of the shorter side; "default" is the dataset's own
            (DeLiVER 1024, resizing the label too, as the reference; others none).
        check_layout: warn (``DataWarning``) when the folder looks like another dataset's
            layout or most label pixels of a few samples are ignored.
        **kwargs: passed to the dataset class (depth_format, conditions, num_classes, ...).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    cls = DATASETS[name]
    if modalities is not None:
        kwargs["modalities"] = tuple(modalities)
    dataset = cls(root, split, seed=seed, **kwargs)
    if check_layout:
        from geminifusion.data.sanity import warn_if_unlike

        warn_if_unlike(dataset)
    if train:
        if crop_size is None:
            raise ValueError("crop_size (H, W) is required for a training dataset")
        dataset.transform = TrainTransform(tuple(crop_size), scale_range)
    else:
        short = cls.eval_short_side if eval_short_side == "default" else eval_short_side
        if short is not None:
            dataset.transform = EvalTransform(int(short), resize_label=cls.eval_resize_label)
    return dataset
