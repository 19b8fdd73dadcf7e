"""Reading the user's image files exactly as stored.

Every reader opens the file read-only, decodes it fully (so a truncated file fails here, not
inside a DataLoader worker) and checks the pixel format the file really has, as PIL reports it,
instead of guessing. A mismatch between a file and the format the user declared is an error that
names the file: silently rescaling a 16-bit depth map by 1/255 would train on garbage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# How a modality's file is turned into a float32 H x W x 3 array in [0, 1].
#   rgb:      8-bit colour, /255 (ImageNet mean/std is applied later, by the dataset)
#   png8:     8-bit map (1, 3 or 4 channels), /255: the reference's depth, event and LiDAR
#   png16_mm: 16-bit single-channel millimetres, metres / depth_max_m, clipped to [0, 1]
#   hha:      3-channel 8-bit HHA encoding, /255
MODALITY_FORMATS: tuple[str, ...] = ("rgb", "png8", "png16_mm", "hha")
DEPTH_FORMATS: tuple[str, ...] = ("png8", "png16_mm", "hha")

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}


class DataError(ValueError):
    """A problem with the user's data; the message names the file (when there is one).

    A ``ValueError`` so that the command line prints it as a clean message.
    """

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


def open_image(path: str | Path) -> tuple[Image.Image, int]:
    """Open and fully decode an image, read-only.

    Returns:
        The decoded image and the bits per channel stored in the file. PIL silently reduces a
        48-bit RGB PNG to 8-bit ``RGB``; the stored depth is read from the decoder's raw mode
        before decoding, so such a file still reports 16.
    """
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            bits = _stored_bits(img)
            img.load()
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except IsADirectoryError:
        raise DataError("is a folder, not an image file", path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise DataError(
            f"cannot decode image, the file is corrupt or truncated ({err})", path
        ) from None
    except Image.DecompressionBombError as err:
        raise DataError(f"image too large to decode safely ({err})", path) from None
    return img, bits


def _stored_bits(img: Image.Image) -> int:
    if img.mode in _SIXTEEN_BIT_MODES:
        return 16
    if img.mode in ("I", "F"):
        return 32
    for tile in getattr(img, "tile", None) or ():
        raw = tile[3] if len(tile) > 3 else None
        raw = raw[0] if isinstance(raw, tuple) and raw else raw
        if isinstance(raw, str) and ";16" in raw:
            return 16
    return 8


def _channels(img: Image.Image) -> int:
    return len(img.getbands())


def read_rgb(path: str | Path) -> np.ndarray:
    """An 8-bit colour image as float32 H x W x 3 in [0, 1] (grey is repeated, alpha dropped)."""
    img, bits = open_image(path)
    if bits != 8:
        raise DataError(f"{bits}-bit image ({img.mode}); a colour image must be 8-bit", path)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_8bit_map(path: str | Path, what: str = "png8") -> np.ndarray:
    """An 8-bit map (depth, event, LiDAR...) as float32 H x W x 3, /255, no mean/std.

    A 1-channel map is repeated to 3 channels and a 4-channel image keeps its first 3, as the
    reference does; a palette image gives its indices, as ``numpy.array(PIL image)`` does.
    """
    img, bits = open_image(path)
    if bits != 8:
        hint = " (use depth_format='png16_mm' for 16-bit millimetre depth)" if bits == 16 else ""
        raise DataError(
            f"{bits}-bit image ({img.mode}) read as '{what}', which is 8-bit{hint}", path
        )
    if img.mode == "1":
        img = img.convert("L")
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] < 3:
        arr = arr[..., :1]
    arr = np.broadcast_to(arr[..., :3], (*arr.shape[:2], 3))
    return arr.astype(np.float32) / 255.0


def read_depth_mm(path: str | Path, depth_max_m: float) -> np.ndarray:
    """A 16-bit millimetre depth map as float32 H x W x 3: metres / depth_max_m, in [0, 1]."""
    if depth_max_m <= 0:
        raise ValueError(f"depth_max_m must be positive, got {depth_max_m}")
    img, bits = open_image(path)
    if bits == 8:
        raise DataError(
            f"8-bit image ({img.mode}) read as 'png16_mm', which expects a 16-bit millimetre "
            "depth map (use depth_format='png8' or 'hha' for 8-bit depth)",
            path,
        )
    if _channels(img) != 1 or img.mode == "F":
        raise DataError(
            f"{img.mode} image read as 'png16_mm', which expects one 16-bit integer channel", path
        )
    metres = np.asarray(img).astype(np.float32) / 1000.0
    scaled = np.clip(metres / float(depth_max_m), 0.0, 1.0)
    return np.repeat(scaled[..., None], 3, axis=2)


def read_hha(path: str | Path) -> np.ndarray:
    """A 3-channel 8-bit HHA image as float32 H x W x 3, /255."""
    img, bits = open_image(path)
    if bits != 8 or _channels(img) < 3:
        raise DataError(
            f"{bits}-bit {img.mode} image read as 'hha', which expects 3 channels of 8 bits "
            "(use depth_format='png8' for 1-channel 8-bit depth, 'png16_mm' for 16-bit)",
            path,
        )
    return np.asarray(img, dtype=np.float32)[..., :3] / 255.0


def default_format(modality: str, depth_format: str = "png8") -> str:
    """How a modality's files are read unless said otherwise: ``rgb`` as a colour image,
    ``depth`` in ``depth_format``, any other sensor as an 8-bit map."""
    if modality == "rgb":
        return "rgb"
    return depth_format if modality == "depth" else "png8"


def index_folder(folder: str | Path) -> dict[str, str]:
    """stem -> path of the image files in one folder (any image extension, no duplicates)."""
    folder = Path(folder)
    index: dict[str, str] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if entry.stem in index:
            raise DataError(
                f"two files with the same stem: {index[entry.stem]} and {entry}", folder
            )
        index[entry.stem] = str(entry)
    return index


def read_modality(path: str | Path, fmt: str, depth_max_m: float = 10.0) -> np.ndarray:
    """Read one modality file in the declared format (see ``MODALITY_FORMATS``)."""
    if fmt == "rgb":
        return read_rgb(path)
    if fmt == "png8":
        return read_8bit_map(path)
    if fmt == "png16_mm":
        return read_depth_mm(path, depth_max_m)
    if fmt == "hha":
        return read_hha(path)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(MODALITY_FORMATS)}")


def read_label(
    path: str | Path, *, eight_bit: bool = False, first_channel: bool = False
) -> np.ndarray:
    """A label map as stored, int64 H x W (a palette image gives its indices).

    Args:
        eight_bit: require an 8-bit file (SUN RGB-D and DeLiVER labels are read as uint8).
        first_channel: take the first channel of a multi-channel file (DeLiVER's semantic PNGs);
            otherwise a multi-channel label is an error, since colour-coded labels need converting.
    """
    img, bits = open_image(path)
    if eight_bit and bits != 8:
        raise DataError(f"{bits}-bit label ({img.mode}); this dataset's labels are 8-bit", path)
    if img.mode == "F":
        raise DataError("floating-point label image; labels must be integer class indices", path)
    arr = np.asarray(img)
    if arr.ndim == 3:
        if not first_channel:
            raise DataError(
                f"label has {arr.shape[2]} channels ({img.mode}); labels must be single-channel "
                "class indices (convert colour-coded labels first)",
                path,
            )
        arr = arr[..., 0]
    return arr.astype(np.int64)


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file, reading only its header."""
    try:
        with open(path, "rb") as f, Image.open(f) as img:
            return img.height, img.width
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image header ({err})", path) from None
