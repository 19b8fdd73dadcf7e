"""Each layout read back from tiny files, values checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from geminifusion.data import (
    DELIVER_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NYUDV2_CLASSES,
    SUNRGBD_CLASSES,
    DeLiVER,
    FolderDataset,
    NYUDv2,
    build_dataset,
    generate_synthetic_dataset,
)
from geminifusion.data.datasets import SUNRGBD, read_split_list
from test_data_helpers import (
    deliver_path,
    make_deliver,
    make_folder,
    make_nyu,
    make_sun,
    save,
)


def test_nyudv2_values_as_stored(tmp_path):
    root = make_nyu(tmp_path)
    mask = np.array(Image.open(root / "masks" / "000001.png"))
    mask[2, 3], mask[2, 4] = 45, 255
    save(root / "masks" / "000001.png", mask)
    ds = NYUDv2(root, "train")
    assert ds.modalities == ("rgb", "depth") and len(ds) == 3
    assert ds.num_classes == 40 and ds.class_names == NYUDV2_CLASSES and ds.ignore_index == 255
    s = ds[1]
    assert list(s) == ["rgb", "depth", "label", "paths"]
    rgb8 = np.array(Image.open(root / "rgb" / "000001.png"))
    expected = (rgb8[4, 5, 1] / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert s["rgb"].shape == (3, 8, 12) and s["rgb"].dtype == torch.float32
    assert s["rgb"][1, 4, 5].item() == pytest.approx(expected, abs=1e-5)
    depth8 = np.array(Image.open(root / "depth" / "000001.png"))
    assert s["depth"][:, 4, 5].tolist() == pytest.approx([depth8[4, 5] / 255] * 3, abs=1e-6)
    assert s["label"].dtype == torch.int64
    assert s["label"][2, 3] == 255 and s["label"][2, 4] == 255  # 45: not a class -> ignored
    assert s["label"][5, 6] == mask[5, 6] < 40
    assert s["paths"] == {
        "rgb": str(root / "rgb" / "000001.png"),
        "depth": str(root / "depth" / "000001.png"),
        "label": str(root / "masks" / "000001.png"),
    }


def test_modality_order_is_the_users(tmp_path):
    ds = NYUDv2(make_nyu(tmp_path), "train", modalities=("depth", "rgb"))
    assert ds.modalities == ("depth", "rgb") and list(ds[0])[:2] == ["depth", "rgb"]
    only = NYUDv2(tmp_path, "train", modalities=("depth",))
    assert list(only[0]) == ["depth", "label", "paths"]


@pytest.mark.parametrize(
    ("subdir", "split", "count", "first"),
    [
        ("nyudv2", "train", 795, "rgb/000003.png\tmasks/000003.png\tdepth/000003.png"),
        ("nyudv2", "val", 654, "rgb/000001.png\tmasks/000001.png\tdepth/000001.png"),
        ("sun", "train", 5285, "RGB/train_0.jpg\tlabels/train_0.png\tDepth/train_0.png"),
        ("sun", "test", 5050, "RGB/test_0.jpg\tlabels/test_0.png\tDepth/test_0.png"),
    ],
)
def test_reference_split_lists_parse_line_by_line(subdir, split, count, first, reference_dir):
    path = reference_dir / "splits" / subdir / f"{split}.txt"
    rows = read_split_list(path)
    lines = path.read_text().splitlines()
    assert len(rows) == len(lines) == count
    assert "\t".join(rows[0][1]) == first
    for (number, fields), line in zip(rows, lines, strict=True):
        assert fields == line.split("\t") and lines[number - 1] == line
    assert path.read_bytes().endswith(b"\n") == (subdir == "sun")


def test_nyudv2_reads_the_reference_val_list(tmp_path, reference_dir):
    rows = read_split_list(reference_dir / "splits" / "nyudv2" / "val.txt")[:5]
    for _, (rgb, label, depth) in rows:
        save(tmp_path / rgb, np.zeros((4, 6, 3), np.uint8))
        save(tmp_path / label, np.ones((4, 6), np.uint8))
        save(tmp_path / depth, np.zeros((4, 6), np.uint8))
    lst = tmp_path / "five.txt"
    lst.write_bytes(
        b"\n".join((reference_dir / "splits/nyudv2/val.txt").read_bytes().split(b"\n")[:5])
    )
    ds = NYUDv2(tmp_path, "val", split_file=lst)
    assert [s.paths["rgb"] for s in ds.samples] == [str(tmp_path / r[1][0]) for r in rows]


def test_sunrgbd_label_shift(tmp_path):
    root = make_sun(tmp_path)
    stored = np.zeros((8, 12), np.uint8)
    stored[0, :4] = [0, 1, 37, 5]
    save(root / "labels" / "test_0.png", stored)
    ds = SUNRGBD(root, "test")
    assert ds.num_classes == 37 and ds.class_names == SUNRGBD_CLASSES
    assert ds.class_names[-1] == "bag" and NYUDV2_CLASSES[:37] == SUNRGBD_CLASSES
    label = ds[0]["label"]
    assert label[0, :4].tolist() == [255, 0, 36, 4]  # 0 (unlabelled) -> 255 = ignored
    assert ds[0]["rgb"].shape == (3, 8, 12)  # the JPEG
    assert ds[0]["paths"]["rgb"].endswith("test_0.jpg")


def test_deliver_layout_labels_event_and_conditions(tmp_path):
    root = make_deliver(tmp_path)
    sem = np.zeros((8, 12, 3), np.uint8)
    sem[0, :4, 0] = [0, 1, 25, 255]
    sem[0, :4, 1] = 9  # other channels are not the label
    save(deliver_path(root, "semantic", "sun", "train", "000000", "semantic"), sem)
    event = np.zeros((4, 6), np.uint8)
    event[1, 2] = 255  # half size: resized to 8 x 12 nearest -> rows 2-3, cols 4-5
    save(deliver_path(root, "event", "sun", "train", "000000", "event"), event)
    ds = DeLiVER(root, "train")
    assert ds.modalities == ("rgb", "depth", "event", "lidar") and ds.num_classes == 25
    assert ds.class_names == DELIVER_CLASSES and ds.class_names[0] == "Building"
    assert ds.class_names[-1] == "Truck"
    # Sorted by path, as the reference: night before sun, frame 000000 before 000001.
    assert [s.condition for s in ds.samples] == ["night", "sun", "sun"]
    s = ds[1]
    assert s["condition"] == "sun"
    assert s["paths"]["depth"].endswith("hha/sun/train/MAP_1_point1/000000_depth.png")
    assert s["label"][0, :4].tolist() == [255, 0, 24, 255]
    assert s["event"].shape == (3, 8, 12)
    hot = (s["event"][0] == 1.0).nonzero().tolist()
    assert hot == [[2, 4], [2, 5], [3, 4], [3, 5]]
    hha = np.array(Image.open(s["paths"]["depth"]))
    assert s["depth"][:, 3, 3].tolist() == pytest.approx((hha[3, 3] / 255).tolist(), abs=1e-6)
    sun = DeLiVER(root, "train", ("lidar", "rgb"), conditions=("sun",), depth_dir="depth")
    assert len(sun) == 2 and list(sun[0])[:2] == ["lidar", "rgb"]
    assert {s.condition for s in sun.samples} == {"sun"}
    depth = DeLiVER(root, "train", ("depth",), depth_dir="depth")
    assert "/depth/" in depth[0]["paths"]["depth"]


def test_folder_dataset_matches_stems_across_extensions(tmp_path):
    root = make_folder(tmp_path)
    ds = FolderDataset(root, None, num_classes=3)
    assert ds.modalities == ("rgb", "thermal") and len(ds) == 3
    assert ds.class_names == ("class_0", "class_1", "class_2")
    s = ds[1]
    assert s["paths"]["rgb"].endswith("b.jpg") and s["paths"]["thermal"].endswith("b.png")
    thermal = np.array(Image.open(root / "thermal" / "b.png"))
    assert s["thermal"][2, 1, 1].item() == pytest.approx(thermal[1, 1] / 255, abs=1e-6)
    assert s["label"][-1, -1] == 255
    (root / "val.txt").write_text("c\n\na\n")
    val = FolderDataset(root, "val", ("thermal",), class_names=("x", "y", "z"))
    assert [p.paths["label"][-5:] for p in val.samples] == ["c.png", "a.png"]
    assert val.class_names == ("x", "y", "z") and list(val[0])[0] == "thermal"


def test_folder_reduce_zero_label_and_classes_json(tmp_path):
    root = make_folder(tmp_path, stems=("a",))
    save(root / "labels" / "a.png", np.array([[0, 1, 3, 2, 1, 1, 1, 1]] * 6, np.uint8))
    (root / "classes.json").write_text('{"classes": ["road", "car", "tree"]}')
    ds = FolderDataset(root, reduce_zero_label=True)
    assert ds.class_names == ("road", "car", "tree")
    assert ds[0]["label"][0, :4].tolist() == [255, 0, 2, 1]


def test_build_dataset_every_name_and_default_collate(tmp_path):
    generate_synthetic_dataset(tmp_path / "syn", num=4, size=(24, 32), val_fraction=0.5)
    cases = {
        "nyudv2": (make_nyu(tmp_path / "nyu"), "train", {}),
        "sunrgbd": (make_sun(tmp_path / "sun"), "test", {}),
        "deliver": (make_deliver(tmp_path / "del"), "train", {"eval_short_side": None}),
        "folder": (make_folder(tmp_path / "fol"), None, {"num_classes": 3}),
        "synthetic": (tmp_path / "syn", "val", {}),
    }
    for name, (root, split, kw) in cases.items():
        ds = build_dataset(name, root, split, **kw)
        assert ds.name == name and len(ds) >= 2
        batch = next(iter(DataLoader(ds, batch_size=2)))
        for m in ds.modalities:
            assert batch[m].shape[:2] == (2, 3) and batch[m].dtype == torch.float32
        assert batch["label"].dtype == torch.int64 and batch["label"].dim() == 3
        assert set(batch["paths"]) == {*ds.modalities, "label"}
        assert all(isinstance(p, str) for p in batch["paths"]["label"])
    train = build_dataset("nyudv2", tmp_path / "nyu", "train", ["rgb"], True, (6, 6), seed=1)
    assert train.modalities == ("rgb",) and train[0]["rgb"].shape == (3, 6, 6)
    with pytest.raises(ValueError, match="crop_size"):
        build_dataset("nyudv2", tmp_path / "nyu", "train", train=True)
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("cityscapes", tmp_path, "train")


def test_deliver_eval_resizes_to_short_side_and_multiple_of_32(tmp_path):
    root = make_deliver(tmp_path, {"fog": ["000000"]}, split="val", h=20, w=30)
    ds = build_dataset("deliver", root, "val", conditions=["fog"], eval_short_side=40)
    s = ds[0]
    assert s["rgb"].shape == (3, 64, 64) and s["label"].shape == (64, 64)  # 40x60 -> 64x64
    full = build_dataset("deliver", root, "val", conditions=["fog"])
    assert full[0]["lidar"].shape == (3, 1024, 1536)  # the reference's 1024 short side
    nyu = build_dataset("nyudv2", make_nyu(tmp_path / "nyu", split="val"), "val")
    assert nyu[0]["label"].shape == (8, 12)  # evaluation keeps the label's resolution
