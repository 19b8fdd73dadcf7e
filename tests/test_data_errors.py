"""Bad input: each case raises a DataError that names the file, and check_dataset lists it."""

from __future__ import annotations

import numpy as np
import pytest

from geminifusion.data import (
    DataError,
    DeLiVER,
    FolderDataset,
    NYUDv2,
    build_dataset,
    check_dataset,
    generate_synthetic_dataset,
)
from geminifusion.data.datasets import SUNRGBD
from test_data_helpers import (
    deliver_path,
    make_deliver,
    make_folder,
    make_nyu,
    make_sun,
    save,
    snapshot,
)


def test_missing_file_named_in_split_list(tmp_path):
    root = make_nyu(tmp_path)
    (root / "depth" / "000001.png").unlink()
    with pytest.raises(DataError, match="file not found") as err:
        NYUDv2(root, "train")
    message = str(err.value)
    assert str(root / "depth" / "000001.png") in message and "line 2 of" in message
    assert NYUDv2(root, "train", modalities=("rgb",)).modalities == ("rgb",)  # depth not needed


def test_missing_files_in_other_layouts(tmp_path):
    sun = make_sun(tmp_path / "sun")
    (sun / "labels" / "test_1.png").unlink()
    with pytest.raises(DataError, match=r"labels/test_1\.png: file not found"):
        SUNRGBD(sun, "test")
    deliver = make_deliver(tmp_path / "del")
    lidar = deliver_path(deliver, "lidar", "night", "train", "000002", "lidar")
    lidar.unlink()
    with pytest.raises(DataError, match="file not found") as err:
        DeLiVER(deliver, "train")
    assert str(lidar) in str(err.value)
    assert len(DeLiVER(deliver, "train", ("rgb", "depth", "event"))) == 3
    folder = make_folder(tmp_path / "fol")
    (folder / "thermal" / "b.png").unlink()
    with pytest.raises(DataError, match=r"thermal/b\.\*: file not found"):
        FolderDataset(folder, num_classes=3)


def test_several_missing_files_are_listed_together(tmp_path):
    root = make_nyu(tmp_path, n=4)
    for i in range(4):
        (root / "masks" / f"{i:06d}.png").unlink()
    with pytest.raises(DataError, match="3 more files of this split are missing") as err:
        NYUDv2(root, "train")
    assert all(f"masks/{i:06d}.png" in str(err.value) for i in range(4))


def test_modality_size_differs_from_rgb(tmp_path):
    root = make_nyu(tmp_path)
    depth = save(root / "depth" / "000002.png", np.zeros((8, 11), np.uint8))
    ds = NYUDv2(root, "train")
    with pytest.raises(DataError, match=r"depth image is 8x11 but the rgb image .* is 8x12") as err:
        ds[2]
    assert str(err.value).startswith(str(depth))
    label = save(root / "masks" / "000001.png", np.zeros((7, 12), np.uint8))
    with pytest.raises(DataError, match="label is 7x12") as err:
        ds[1]
    assert str(err.value).startswith(str(label))


@pytest.mark.parametrize("layout", ["sunrgbd", "deliver", "folder", "synthetic"])
def test_label_value_outside_the_classes(tmp_path, layout):
    if layout == "sunrgbd":
        ds = SUNRGBD(make_sun(tmp_path), "test")
        bad, value = tmp_path / "labels" / "test_0.png", 38  # decodes to 37 with 37 classes
        save(bad, np.full((8, 12), value, np.uint8))
    elif layout == "deliver":
        ds = DeLiVER(make_deliver(tmp_path), "train")
        bad, value = deliver_path(tmp_path, "semantic", "night", "train", "000002", "semantic"), 30
        save(bad, np.full((8, 12, 3), value, np.uint8))
    elif layout == "folder":
        ds = FolderDataset(make_folder(tmp_path), num_classes=3)
        bad, value = tmp_path / "labels" / "a.png", 7
        save(bad, np.full((6, 8), value, np.uint8))
    else:
        generate_synthetic_dataset(tmp_path, num=2, size=(16, 16), val_fraction=0.5)
        ds = build_dataset("synthetic", tmp_path, "train")
        bad, value = tmp_path / "masks" / "000000.png", 9
        save(bad, np.full((16, 16), value, np.uint8))
    index = next(i for i, s in enumerate(ds.samples) if s.paths["label"] == str(bad))
    with pytest.raises(DataError, match=rf"stored label values \[{value}\] outside") as err:
        ds[index]
    assert str(err.value).startswith(str(bad))
    report = check_dataset(ds, progress=False)
    assert not report.ok and len(report.errors) == 1 and str(bad) in report.errors[0]


def test_nyudv2_out_of_range_labels_only_warn(tmp_path):
    root = make_nyu(tmp_path)
    mask = np.zeros((8, 12), np.uint8)
    mask[0, :3] = [40, 200, 255]
    save(root / "masks" / "000000.png", mask)
    ds = NYUDv2(root, "train")
    assert ds[0]["label"][0, :3].tolist() == [255, 255, 255]
    report = check_dataset(ds, progress=False)
    assert report.ok and report.out_of_range_pixels == 2
    assert any("000000.png: 2 pixel(s) with values [40, 200]" in w for w in report.warnings)
    with pytest.raises(DataError, match=r"\[40, 200\]"):
        NYUDv2(root, "train", strict_labels=True)[0]


@pytest.mark.parametrize("damage", ["truncated", "junk"])
def test_corrupt_or_truncated_image(tmp_path, damage):
    root = make_nyu(tmp_path, h=40, w=60)
    path = root / "rgb" / "000001.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40] if damage == "truncated" else b"\x89PNG garbage")
    ds = NYUDv2(root, "train")
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        ds[1]
    assert str(err.value).startswith(str(path))
    report = check_dataset(ds, progress=False)
    assert report.num_samples == 3 and len(report.errors) == 1 and sum(report.sizes.values()) == 2


def test_empty_split(tmp_path):
    root = make_nyu(tmp_path)
    (root / "val.txt").write_text("")
    with pytest.raises(DataError, match="empty") as err:
        NYUDv2(root, "val")
    assert str(root / "val.txt") in str(err.value)
    with pytest.raises(DataError, match="split list not found") as err:
        NYUDv2(root, "test")
    assert str(root / "test.txt") in str(err.value)
    with pytest.raises(DataError, match="empty: no \\*_semantic.png"):
        DeLiVER(make_deliver(tmp_path / "del"), "test")
    folder = make_folder(tmp_path / "fol")
    (folder / "val.txt").write_text("\n\n")
    with pytest.raises(DataError, match="empty") as err:
        FolderDataset(folder, "val", num_classes=3)
    assert str(folder / "val.txt") in str(err.value)


def test_unknown_modality(tmp_path):
    with pytest.raises(DataError, match="unknown modality 'thermal'.*available: rgb, depth"):
        NYUDv2(make_nyu(tmp_path / "nyu"), "train", modalities=("rgb", "thermal"))
    with pytest.raises(DataError, match="unknown modality 'radar'"):
        DeLiVER(make_deliver(tmp_path / "del"), "train", ("rgb", "radar"))
    with pytest.raises(DataError, match="unknown modality 'depth'.*available: rgb, thermal"):
        FolderDataset(make_folder(tmp_path / "fol"), modalities=("rgb", "depth"), num_classes=3)
    with pytest.raises(DataError, match="reserved"):
        FolderDataset(tmp_path / "fol", modalities=("label",), num_classes=3)
    with pytest.raises(DataError, match="unknown condition 'snow'"):
        DeLiVER(tmp_path / "del", "train", conditions=("snow",))


def test_nothing_in_the_data_folder_is_written(tmp_path):
    roots = [make_nyu(tmp_path / "nyu"), make_deliver(tmp_path / "del")]
    roots.append(make_folder(tmp_path / "fol"))
    before = {str(r): snapshot(r) for r in roots}
    datasets = [
        build_dataset("nyudv2", roots[0], "train", train=True, crop_size=(6, 6)),
        build_dataset("deliver", roots[1], "train", eval_short_side=32),
        build_dataset("folder", roots[2], None, num_classes=3),
    ]
    for ds in datasets:
        for i in range(len(ds)):
            ds[i]
        assert check_dataset(ds, progress=False).ok
    assert {str(r): snapshot(r) for r in roots} == before


def test_check_report_summary(tmp_path):
    ds = NYUDv2(make_nyu(tmp_path, n=3), "train")
    report = check_dataset(ds, progress=False)
    assert report.ok and report.num_samples == 3 and report.sizes == {(8, 12): 3}
    assert report.class_pixels.sum() + report.ignored_pixels == 3 * 8 * 12
    assert report.ignored_pixels == 3
    text = report.summary()
    assert "samples   3 (modalities: rgb, depth)" in text and "8x12 (3)" in text
    assert "result    OK" in text
    save(tmp_path / "depth" / "000000.png", np.zeros((8, 12), np.uint8))
    report = check_dataset(ds, progress=False)
    assert any("depth is constant" in w for w in report.warnings)
