"""Writing files safely: the one atomic writer every file of this package goes through.

A file is written to a temporary file in the same folder, flushed and synced to disk, then
renamed over its destination, and the folder is synced: a crash, a kill or a full disk leaves
the old file or the new one, never a torn or empty one, and the temporary file is removed when
the write fails. An operating-system error (no space left, a read-only disk, a path that is a
file, permission denied) becomes a :class:`WriteError`: one line naming the path and the reason.

This module sits below every other one (data, weights and engine all write files) and imports
nothing from the package.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# What to tell a user for the errors a full, read-only or wrongly named destination gives.
_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "the path is a folder",
    errno.EEXIST: "a file is in the way",
    errno.ENAMETOOLONG: "the name is too long",
}


class WriteError(OSError):
    """A file could not be written; the message names the path and the reason in one line."""


def os_reason(err: OSError) -> str:
    """A short human reason for an operating-system error."""
    return _REASONS.get(err.errno, err.strerror or type(err).__name__)


def write_error(err: OSError, path: str | os.PathLike, action: str = "writing") -> WriteError:
    """``err`` as a :class:`WriteError` that names ``path``."""
    if isinstance(err, WriteError):
        return err
    failed = WriteError(f"{os_reason(err)} while {action} {path}")
    failed.errno = err.errno
    return failed


def make_folder(path: str | os.PathLike) -> Path:
    """``mkdir -p``, with a one-line :class:`WriteError` when it cannot be done."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WriteError(f"{path} exists and is not a folder") from None
    except OSError as err:
        raise write_error(err, path, "creating the folder") from None
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` through ``write(file)`` so that it is either complete or untouched.

    Args:
        path: the destination; its folder is created when missing.
        write: writes the whole content into the open binary file it is given.

    Raises:
        WriteError: the operating system refused (the message names ``path``).
    """
    path = Path(path)
    make_folder(path.parent)
    if path.is_dir():
        raise WriteError(f"{path} is a folder; cannot write a file there")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_error(err, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(err, path) from None
        if isinstance(err, RuntimeError) and _disk_full(path.parent):
            # torch.save reports a failed write as an opaque RuntimeError from its zip writer.
            raise WriteError(f"no space left on device while writing {path}") from None
        raise
    _sync_folder(path.parent)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: object) -> Path:
    """Atomically write ``value`` as indented JSON (with a final newline)."""
    return write_text(path, json.dumps(value, indent=2) + "\n")


def check_writable(folder: str | os.PathLike) -> Path:
    """Fail now, not after an hour of work, when ``folder`` cannot take new files.

    Creates the folder if needed and writes and removes a small probe file.
    """
    folder = make_folder(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise write_error(err, folder, "writing into") from None
    return folder


def _disk_full(folder: Path) -> bool:
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return stats.f_bavail * stats.f_frsize < 1 << 20


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (not possible on every platform; the rename is atomic)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
