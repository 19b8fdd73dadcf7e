"""Reading weight files safely, and writing checkpoints through the one atomic writer.

Every checkpoint is read with ``torch.load(..., weights_only=True)``: tensors, plain containers
and numbers, nothing that can run code. The one extra type allowed is the NumPy scalar the
paper's training script pickles its best score as. Safetensors files are read without pickle.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch

from geminifusion.files import atomic_write, write_file

UNSAFE = "not a checkpoint this package can read safely (it may contain code)"
_UNREADABLE = "not a readable PyTorch checkpoint"


def _numpy_allowlist() -> list:
    # The reference pickles ``best_val`` as a NumPy 1.x float64 scalar.
    scalar = getattr(np, "_core", np.core).multiarray.scalar
    return [np.dtype, np.dtypes.Float64DType, (scalar, "numpy.core.multiarray.scalar")]


def _existing_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a {what} file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A PyTorch checkpoint, loaded on the CPU with ``weights_only=True``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a checkpoint, is damaged, or holds objects that could
            run code when unpickled (never loaded).
    """
    path = _existing_file(path, "checkpoint")
    try:
        with torch.serialization.safe_globals(_numpy_allowlist()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: not the user's
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err).lower()
        # A pickle (or torch's zip of one) holding a class or function, or instructions the
        # safe loader refuses: it could run code when unpickled, so it is never loaded
        # (whatever torch's message suggests). Bytes that are no pickle at all are just junk.
        refused = "weights only load failed" in text and _looks_pickled(path)
        if refused or "unsupported global" in text:
            raise ValueError(f"{path}: {UNSAFE}") from None
        raise ValueError(f"{path}: {_UNREADABLE} (damaged, or not a PyTorch file)") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from None
    except Exception as err:  # torch raises several types for damaged files
        reason = _short_reason(err)
        detail = f": {reason}" if reason else ""
        raise ValueError(
            f"{path}: {_UNREADABLE} (damaged, truncated, or not a PyTorch file{detail})"
        ) from None


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU (``ValueError`` if damaged)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _existing_file(path, "weights")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({_first_line(err)})") from None


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from a file (``ValueError`` naming the file when it is not one)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def save_checkpoint(obj: object, path: str | os.PathLike, *, command: str | None = None) -> Path:
    """``torch.save`` through the atomic writer (complete or untouched, never torn).

    ``command``: a single-file output of that command, recorded in its folder's manifest
    (see :func:`geminifusion.files.claim_file`).
    """
    if command is not None:
        return write_file(path, lambda f: torch.save(obj, f), command)
    return atomic_write(path, lambda f: torch.save(obj, f))


def _looks_pickled(path: Path) -> bool:
    """A zip archive (torch's format) or a pickle stream of protocol 2 or later."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head == b"PK" or (len(head) == 2 and head[0] == 0x80 and head[1] >= 2)


def _short_reason(err: Exception) -> str:
    """The first sentence of a loader's error, unless it is noise or advice to load unsafely."""
    text = _first_line(err)
    text = text.split(". ")[0].strip().rstrip(".")
    noise = text.isdigit() or text == type(err).__name__ or text.startswith("[enforce fail")
    if noise or "weights_only" in text or len(text) > 160:
        return ""
    return text


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
