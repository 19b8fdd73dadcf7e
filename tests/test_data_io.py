"""Decoding files as stored: depth formats, channel handling, and clear errors on mismatch."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from geminifusion.data.io import (
    DataError,
    read_8bit_map,
    read_depth_mm,
    read_hha,
    read_label,
    read_modality,
    read_rgb,
)
from test_data_helpers import save


def png48(path, rgb16: np.ndarray):
    """A 16-bit-per-channel RGB PNG, written by hand (PIL cannot write one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    h, w, _ = rgb16.shape
    rows = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


def test_png8_depth_is_divided_by_255_and_repeated(tmp_path):
    depth = np.zeros((4, 5), np.uint8)
    depth[1, 2] = 51
    out = read_modality(save(tmp_path / "d.png", depth), "png8")
    assert out.shape == (4, 5, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[1, 2], [0.2, 0.2, 0.2], rtol=1e-6)
    assert out[0, 0].tolist() == [0.0, 0.0, 0.0]


def test_png16_mm_depth_is_metres_over_depth_max(tmp_path):
    depth = np.array([[0, 2500, 12000]], np.uint16)
    path = save(tmp_path / "d16.png", depth)
    assert Image.open(path).mode.startswith("I")
    out = read_depth_mm(path, depth_max_m=10.0)
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.25, 1.0], rtol=1e-6)  # 12 m clipped to 1
    assert (out[..., 0] == out[..., 2]).all()
    np.testing.assert_allclose(read_depth_mm(path, depth_max_m=5.0)[0, 1, 0], 0.5, rtol=1e-6)


def test_hha_keeps_its_three_channels(tmp_path):
    hha = np.zeros((2, 3, 3), np.uint8)
    hha[0, 0] = [255, 51, 0]
    out = read_modality(save(tmp_path / "h.png", hha), "hha")
    np.testing.assert_allclose(out[0, 0], [1.0, 0.2, 0.0], rtol=1e-6)


def test_channels_grey_repeated_and_alpha_dropped(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 7
    np.testing.assert_allclose(read_8bit_map(save(tmp_path / "a.png", rgba))[0, 0], [1, 0, 0])
    np.testing.assert_allclose(read_rgb(tmp_path / "a.png")[0, 0], [1, 0, 0])
    grey = np.full((2, 2), 102, np.uint8)
    np.testing.assert_allclose(read_rgb(save(tmp_path / "g.png", grey))[1, 1], [0.4] * 3, rtol=1e-6)


def test_16bit_file_read_as_png8_names_the_file(tmp_path):
    path = save(tmp_path / "deep.png", np.full((3, 3), 4000, np.uint16))
    with pytest.raises(DataError, match="16-bit.*png16_mm") as err:
        read_modality(path, "png8")
    assert str(path) in str(err.value)


def test_8bit_file_read_as_png16_mm_names_the_file(tmp_path):
    path = save(tmp_path / "shallow.png", np.full((3, 3), 40, np.uint8))
    with pytest.raises(DataError, match="8-bit.*png16_mm") as err:
        read_modality(path, "png16_mm")
    assert str(path) in str(err.value)


def test_one_channel_file_read_as_hha_is_an_error(tmp_path):
    path = save(tmp_path / "grey.png", np.full((3, 3), 40, np.uint8))
    with pytest.raises(DataError, match="hha") as err:
        read_hha(path)
    assert str(path) in str(err.value)


def test_48bit_rgb_is_not_silently_reduced(tmp_path):
    path = png48(tmp_path / "rgb48.png", np.full((2, 3, 3), 40000, np.uint16))
    assert Image.open(path).mode == "RGB"  # what PIL reports: the trap this guards against
    with pytest.raises(DataError, match="16-bit") as err:
        read_rgb(path)
    assert str(path) in str(err.value)
    with pytest.raises(DataError, match="16-bit"):
        read_8bit_map(path)


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_png_names_the_file(tmp_path, keep):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    good = save(tmp_path / "good.png", noise)
    data = good.read_bytes()
    bad = tmp_path / "cut.png"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        read_rgb(bad)
    assert str(bad) in str(err.value)


def test_junk_and_missing_files(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="corrupt") as err:
        read_8bit_map(junk)
    assert str(junk) in str(err.value)
    with pytest.raises(DataError, match="file not found"):
        read_rgb(tmp_path / "absent.png")


def test_label_reading(tmp_path):
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[..., 0] = 7
    path = save(tmp_path / "sem.png", colour)
    with pytest.raises(DataError, match="single-channel"):
        read_label(path)
    assert read_label(path, first_channel=True).tolist() == [[7, 7], [7, 7]]
    wide = save(tmp_path / "l16.png", np.full((2, 2), 300, np.uint16))
    assert read_label(wide)[0, 0] == 300 and read_label(wide).dtype == np.int64
    with pytest.raises(DataError, match="8-bit"):
        read_label(wide, eight_bit=True)
    palette = Image.fromarray(np.array([[3, 4]], np.uint8)).convert("P")
    palette.putpalette([v for i in range(256) for v in (i, 0, 0)])
    palette.save(tmp_path / "p.png")
    assert read_label(tmp_path / "p.png").tolist() == [[3, 4]]
