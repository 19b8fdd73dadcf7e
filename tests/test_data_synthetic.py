"""The synthetic generators: deterministic, fast, and built so that fusion is needed."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from geminifusion.data import (
    SYNTHETIC_CLASSES,
    DeLiVER,
    build_dataset,
    check_dataset,
    generate_synthetic_dataset,
    generate_synthetic_deliver,
)
from test_data_helpers import snapshot


def class_stats(root, names):
    """Mean colour (3,) and mean 8-bit depth of every class over the given samples."""
    colour = {k: [] for k in range(len(SYNTHETIC_CLASSES))}
    depth = {k: [] for k in range(len(SYNTHETIC_CLASSES))}
    for name in names:
        rgb = np.array(Image.open(root / "rgb" / name), np.float64)
        d = np.array(Image.open(root / "depth" / name), np.float64)
        label = np.array(Image.open(root / "masks" / name))
        for k in np.unique(label):
            colour[k].append(rgb[label == k].mean(0))
            depth[k].append(d[label == k].mean())
    return (
        {k: np.mean(v, 0) for k, v in colour.items() if v},
        {k: float(np.mean(v)) for k, v in depth.items() if v},
    )


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    start = time.perf_counter()
    summary = generate_synthetic_dataset(root, num=120, size=(120, 160), seed=0, val_fraction=0.25)
    return root, summary, time.perf_counter() - start


def test_generation_is_fast_and_split_like_the_reference(synth):
    root, summary, seconds = synth
    assert seconds < 15.0, f"120 samples of 120x160 took {seconds:.1f} s"
    assert (summary.num_train, summary.num_val) == (90, 30)
    train = (root / "train.txt").read_bytes()
    assert not train.endswith(b"\n")  # like the reference NYUDv2 lists
    lines = train.decode().split("\n")
    assert len(lines) == 90 and lines[0] == "rgb/000000.png\tmasks/000000.png\tdepth/000000.png"
    assert (root / "val.txt").read_text().split("\n")[0].startswith("rgb/000090.png\t")
    meta = json.loads((root / "classes.json").read_text())
    assert tuple(meta["classes"]) == SYNTHETIC_CLASSES
    assert Image.open(root / "depth" / "000000.png").mode == "L"
    assert Image.open(root / "rgb" / "000000.png").size == (160, 120)


def test_depth_only_and_colour_only_classes_exist(synth):
    root, _, _ = synth
    names = [f"{i:06d}.png" for i in range(40)]
    colour, depth = class_stats(root, names)
    assert sorted(colour) == list(range(len(SYNTHETIC_CLASSES)))  # every class drawn
    depth_only, colour_only = [], []
    for a in range(1, 7):
        for b in range(a + 1, 7):
            same_colour = np.abs(colour[a] - colour[b]).max() < 12
            same_depth = abs(depth[a] - depth[b]) < 8
            if same_colour and abs(depth[a] - depth[b]) > 30:
                depth_only.append((a, b))
            if same_depth and np.abs(colour[a] - colour[b]).max() > 80:
                colour_only.append((a, b))
    names = SYNTHETIC_CLASSES
    assert len(depth_only) == 6, [(names[a], names[b]) for a, b in depth_only]
    assert len(colour_only) == 3, [(names[a], names[b]) for a, b in colour_only]
    # The wall differs from every object in both colour and depth.
    assert all(abs(depth[0] - depth[k]) > 30 for k in range(1, 7))


def test_same_seed_same_bytes_other_seed_other_scenes(tmp_path):
    a = generate_synthetic_dataset(tmp_path / "a", num=6, size=(24, 32), seed=5).root
    b = generate_synthetic_dataset(tmp_path / "b", num=6, size=(24, 32), seed=5).root
    c = generate_synthetic_dataset(tmp_path / "c", num=6, size=(24, 32), seed=6).root

    def contents(root):
        return {k.replace(str(root), ""): v[1] for k, v in snapshot(root).items()}

    assert contents(a) == contents(b)
    differ = [k for k, v in contents(c).items() if contents(a)[k] != v]
    assert any("rgb/" in k for k in differ) and any("masks/" in k for k in differ)


def test_generated_folder_reads_back_and_checks_clean(tmp_path):
    generate_synthetic_dataset(tmp_path, num=5, size=(32, 48), val_fraction=0.4)
    val = build_dataset("synthetic", tmp_path, "val")
    assert len(val) == 2 and val.class_names == SYNTHETIC_CLASSES and val.num_classes == 7
    assert check_dataset(val, progress=False).ok
    with pytest.raises(ValueError, match="not empty"):
        generate_synthetic_dataset(tmp_path, num=2)
    generate_synthetic_dataset(tmp_path, num=2, overwrite=True)


def test_deliver_variant_needs_the_extra_sensors(tmp_path):
    summary = generate_synthetic_deliver(tmp_path, num=8, size=(48, 64), seed=1)
    assert (summary.num_train, summary.num_val) == (6, 2)
    train = DeLiVER(tmp_path, "train", conditions=("sun", "night"))
    assert {s.condition for s in train.samples} == {"sun", "night"}
    assert check_dataset(train, progress=False).ok
    assert len(DeLiVER(tmp_path, "val", conditions=("night",))) == 1
    # Pedestrian (3), Cars (9) and Pole (4): equal in RGB and depth, apart in event or LiDAR.
    stats = {k: {m: [] for m in ("rgb", "depth", "event", "lidar")} for k in (3, 9, 4)}
    for i in range(len(train)):
        arrays, label = train.load(i)
        if train.samples[i].condition != "sun":
            continue
        for k in stats:
            for m, arr in arrays.items():
                values = arr[..., 0][label == k]
                if m == "lidar":
                    values = arr[::2, :, 0][label[::2] == k]  # LiDAR lives on even rows
                if values.size:
                    stats[k][m].append(values.mean())
    mean = {k: {m: np.mean(v) for m, v in ms.items()} for k, ms in stats.items()}
    assert (
        abs(mean[3]["rgb"] - mean[9]["rgb"]) < 0.03 and abs(mean[9]["rgb"] - mean[4]["rgb"]) < 0.03
    )
    assert abs(mean[3]["depth"] - mean[9]["depth"]) < 0.01
    assert mean[3]["event"] - mean[9]["event"] > 0.3  # pedestrians move, cars do not
    assert mean[9]["lidar"] - mean[4]["lidar"] > 0.5  # cars reflect, poles less
    assert abs(mean[3]["lidar"] - mean[9]["lidar"]) < 0.05
