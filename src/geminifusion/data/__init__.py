"""Multimodal segmentation data: datasets, joint transforms, checks and synthetic scenes.

Typical use::

    from geminifusion.data import build_dataset, check_dataset

    train = build_dataset("nyudv2", "data/nyudv2", "train", train=True, crop_size=(480, 640))
    report = check_dataset(train)
    print(report.summary())
"""

from geminifusion.data.checks import DataReport, check_dataset
from geminifusion.data.datasets import (
    DATASETS,
    DELIVER_CLASSES,
    DELIVER_CONDITIONS,
    NYUDV2_CLASSES,
    SUNRGBD,
    SUNRGBD_CLASSES,
    DeLiVER,
    FolderDataset,
    NYUDv2,
    SegmentationDataset,
    SyntheticDataset,
    build_dataset,
)
from geminifusion.data.io import DEPTH_FORMATS, DataError
from geminifusion.data.synthetic import (
    SYNTHETIC_CLASSES,
    generate_synthetic_dataset,
    generate_synthetic_deliver,
)
from geminifusion.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    sample_seed,
)

__all__ = [
    "DATASETS",
    "DELIVER_CLASSES",
    "DELIVER_CONDITIONS",
    "DEPTH_FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NYUDV2_CLASSES",
    "SUNRGBD",
    "SUNRGBD_CLASSES",
    "SYNTHETIC_CLASSES",
    "DataError",
    "DataReport",
    "DeLiVER",
    "EvalTransform",
    "FolderDataset",
    "NYUDv2",
    "SegmentationDataset",
    "SyntheticDataset",
    "TrainTransform",
    "build_dataset",
    "check_dataset",
    "generate_synthetic_dataset",
    "generate_synthetic_deliver",
    "sample_seed",
]
