"""Writing files safely: the one atomic writer, and the rule of what a command may write where.

Atomic writes
    A file is written to a temporary file in the same folder, flushed and synced to disk, then
    renamed over its destination, and the folder is synced: a crash, a kill or a full disk
    leaves the old file or the new one, never a torn or empty one, and the temporary file is
    removed when the write fails (:func:`atomic_write`, :func:`write_bytes`, :func:`write_text`,
    :func:`write_json`). Logs that grow line by line (:class:`AppendFile`) are created through
    the same writer and appended one whole line per system call. An operating-system error (no
    space left, a read-only disk, a path that is a file, permission denied) becomes a
    :class:`WriteError`: one line naming the path and the reason (:func:`describe_os_error` does
    the same for any ``OSError``).

Whose files are these?
    Every folder a command writes into holds a small manifest, ``.geminifusion.json``, written
    atomically *before* the files it lists::

        {"format": "geminifusion-output", "version": 1, "kind": "predict",
         "files": {"a_classes.png": "predict", "a_color.png": "predict", "data/": "eval"}}

    ``kind`` is the command that owns the folder (``train``, ``eval``, ``predict``, ``demo``,
    ``synth``; null for a folder of the user's into which single files were written); ``files``
    maps each name it wrote (relative, ``/`` for a sub-folder it filled, which has its own
    manifest) to the command that wrote it. The rule, for every command:

    * the destination is checked before any work starts (:meth:`OutputFolder.open`,
      :func:`claim_file`): a command writes only into a folder that is new, empty, or its own
      (its manifest, or a recogniser such as "a model folder's config.json");
    * it never replaces a file its manifest does not list (:meth:`OutputFolder.claim`), and
      never writes into or over its own inputs (:func:`check_apart`);
    * ``--overwrite`` / ``--force`` replace or remove only files the manifest lists
      (:meth:`OutputFolder.remove`); nothing else is ever deleted.

    A command with one output file (``export``, ``benchmark``, ``convert`` to a checkpoint)
    calls ``claim_file(path, "export", replace=args.force, inputs=[source])`` before its work
    and ``write_file(path, write, "export")`` (or ``write_file_bytes``) to write it: an existing
    file is replaced only with ``replace=True`` and only when the manifest of its folder says
    geminifusion wrote it; the write records it there.

This module sits below every other one (data, weights and engine all write files) and imports
nothing from the package.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

MANIFEST = ".geminifusion.json"
MANIFEST_FORMAT = "geminifusion-output"
MANIFEST_VERSION = 1

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
    errno.ENOENT: "no such file or folder",
}


_VERBS = {"writing": "write", "creating": "create", "removing": "remove", "opening": "open"}


class WriteError(OSError):
    """A file could not be written; the message names the path and the reason in one line."""


class OutputError(ValueError):
    """A destination a command must not write to (not its own, or its own input), named."""


def os_reason(err: OSError) -> str:
    """A short human reason for an operating-system error."""
    return _REASONS.get(err.errno, err.strerror or type(err).__name__)


def describe_os_error(err: OSError) -> str:
    """One line for any ``OSError``: the reason and the path(s) it names."""
    if isinstance(err, WriteError) or not (err.errno or err.filename):
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    names = [n for n in (err.filename, err.filename2) if n is not None]
    where = " -> ".join(os.fsdecode(n) if isinstance(n, bytes) else str(n) for n in names)
    return f"{os_reason(err)}: {where}" if where else os_reason(err)


def write_error(err: OSError, path: str | os.PathLike, action: str = "writing") -> WriteError:
    """``err`` as a :class:`WriteError` that names ``path``."""
    if isinstance(err, WriteError):
        return err
    if err.errno in (errno.ENOTDIR, errno.EEXIST):  # "... while writing x" reads wrong here
        verb, _, rest = action.partition(" ")
        what = f"{_VERBS.get(verb, verb)} {rest + ' ' if rest else ''}{path}"
        failed = WriteError(f"cannot {what}: {os_reason(err)}")
        failed.errno = err.errno
        return failed
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


def atomic_write(
    path: str | os.PathLike, write: Callable[[BinaryIO], object], *, sync: bool = True
) -> Path:
    """Write ``path`` through ``write(file)`` so that it is either complete or untouched.

    Args:
        path: the destination; its folder is created when missing.
        write: writes the whole content into the open binary file it is given.
        sync: flush to the disk before the rename (turn off only for many small files that
            can be written again, such as a generated dataset: the rename stays atomic).

    Raises:
        WriteError: the operating system refused (the message names ``path``).
    """
    path = Path(path)
    make_folder(path.parent)
    if path.is_dir():
        raise WriteError(f"{path} is a folder; cannot write a file there")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        if hasattr(os, "fchmod"):  # as a plain open() would create it, not mkstemp's 0600
            os.fchmod(fd, _file_mode(path))
    except OSError as err:
        raise write_error(err, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        # torch.save reports a failed write as an opaque RuntimeError from its zip writer: look
        # at the disk while the partial file still fills it.
        full = isinstance(err, RuntimeError) and _disk_full(path.parent)
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(err, path) from None
        if full:
            raise WriteError(f"no space left on device while writing {path}") from None
        raise
    if sync:
        _sync_folder(path.parent)
    return path


def write_bytes(path: str | os.PathLike, data: bytes, *, sync: bool = True) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda f: f.write(data), sync=sync)


def write_text(path: str | os.PathLike, text: str, *, sync: bool = True) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return write_bytes(path, text.encode("utf-8"), sync=sync)


def write_json(path: str | os.PathLike, value: object) -> Path:
    """Atomically write ``value`` as indented JSON (with a final newline)."""
    return write_text(path, json.dumps(value, indent=2) + "\n")


def check_writable(folder: str | os.PathLike, probe_bytes: int = 4096) -> Path:
    """Fail now, not after an hour of work, when ``folder`` cannot take new files.

    Creates the folder if needed and writes (``probe_bytes``, so that a full disk shows) and
    removes a small probe file.
    """
    folder = make_folder(folder)
    probe = None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        try:
            os.write(fd, b"\0" * probe_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise write_error(err, folder, "writing into") from None
    finally:
        if probe is not None:
            Path(probe).unlink(missing_ok=True)
    return folder


def check_could_write(folder: str | os.PathLike) -> None:
    """:func:`check_writable` for a folder that may not exist yet, leaving nothing behind: the
    folders it has to create for the probe are removed again."""
    folder = Path(folder)
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        check_writable(folder)
    finally:
        for created in missing:  # deepest first
            with contextlib.suppress(OSError):
                created.rmdir()


def check_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """A :class:`WriteError` when ``folder``'s disk has less than ``needed`` bytes free."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        raise WriteError(
            f"not enough space left on device for {what} in {folder}: {_size(free)} free, "
            f"about {_size(needed)} needed"
        )


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def _file_mode(path: Path) -> int:
    """The mode a replaced file keeps, or the one a new file gets under the current umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0o22)
        os.umask(mask)
        return 0o666 & ~mask


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


# ---------------------------------------------------------------------------------- logs


class AppendFile:
    """A log that grows by whole lines (``train.log``, ``metrics.jsonl``).

    Created through the atomic writer when missing; each line is appended with one system
    call, so a kill leaves at most the last line torn, and a torn last line is ended before the
    next one is added. A failed append is a :class:`WriteError` naming the file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            write_bytes(self.path, b"")
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            size = os.fstat(self._fd).st_size
        except OSError as err:
            raise write_error(err, self.path, "opening") from None
        if size and not self._ends_with_newline():
            self._append(b"\n")

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as err:
            raise write_error(err, self.path) from None

    def write_line(self, text: str) -> None:
        """Append ``text`` and a newline."""
        self._append((text + "\n").encode("utf-8"))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ------------------------------------------------------------------------------ ownership


def _manifest_data(kind: str | None, files: dict[str, str]) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "kind": kind,
        "files": dict(sorted(files.items())),
    }


def read_manifest(folder: str | os.PathLike) -> tuple[str | None, dict[str, str]] | None:
    """``(kind, files)`` of a folder's manifest; None when it has none (or an unreadable one)."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return None
    files = data.get("files")
    kind = data.get("kind")
    if not isinstance(files, dict) or not (kind is None or isinstance(kind, str)):
        return None
    return kind, {str(k): str(v) for k, v in files.items()}


def _is_own_temp(name: str, within: str, owned: Iterable[str]) -> bool:
    """A temporary file of the atomic writer for a listed name (left by a kill), or a probe."""
    if name.startswith(".write-check."):
        return True
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    return any(
        n.startswith(within)
        and "/" not in n[len(within) :]
        and name.startswith(f".{n[len(within) :]}.")
        for n in owned
    )


def foreign_files(folder: str | os.PathLike, limit: int = 8) -> list[str]:
    """Files under ``folder`` that geminifusion did not write (no manifest lists them).

    At most ``limit`` names, relative to ``folder``; a sub-folder with a manifest of its own is
    judged by that manifest.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: list[str] = []
    manifest = read_manifest(folder)
    _walk_foreign(folder, set(manifest[1]) if manifest else None, "", "", found, limit)
    return found


def _walk_foreign(
    directory: Path, owned: set[str] | None, within: str, shown: str, found: list, limit: int
) -> None:
    """Collect foreign files of ``directory``; ``owned`` is the nearest manifest's list, whose
    folder is ``directory`` minus ``within``."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        found.append(f"{shown or '.'} (cannot be listed)")
        return
    for entry in entries:
        if len(found) >= limit:
            return
        name = within + entry.name
        if entry.is_dir(follow_symlinks=False):
            sub = read_manifest(entry.path)
            if sub is not None:
                _walk_foreign(
                    Path(entry.path), set(sub[1]), "", f"{shown}{entry.name}/", found, limit
                )
            elif owned is None or name + "/" not in owned:
                _walk_foreign(
                    Path(entry.path), owned, name + "/", f"{shown}{entry.name}/", found, limit
                )
            continue
        if owned is not None:
            if name in owned or (not within and entry.name == MANIFEST):
                continue
            if _is_own_temp(entry.name, within, owned):
                continue
        found.append(shown + entry.name)


def adopt_complete_sets(
    suffixes: Sequence[str], prefixes: Sequence[str] = ("",)
) -> Callable[[Path], list[str] | None]:
    """An ``adopt`` for :meth:`OutputFolder.open`: a folder written before manifests existed is
    recognised when every file in it is ``<prefix><stem><suffix>`` and every such stem has all
    of ``suffixes`` (``a_classes.png``, ``a_color.png``, ``a_overlay.png``): a complete set of
    one command's outputs, not a folder of the user's that happens to share a name."""

    def adopt(folder: Path) -> list[str] | None:
        names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        stems: dict[str, set[str]] = {}
        for name in names:
            suffix = next((x for x in suffixes if name.endswith(x)), None)
            if suffix is None or not name.startswith(tuple(prefixes)):
                return None
            stems.setdefault(name[: -len(suffix)], set()).add(suffix)
        if not stems or any(found != set(suffixes) for found in stems.values()):
            return None
        return names

    return adopt


def _listing(names: Sequence[str], more: bool) -> str:
    return ", ".join(names) + (", ..." if more else "")


@dataclass
class OutputFolder:
    """A folder a command writes into: new, empty, or already its own.

    Use :meth:`open` before any work, :meth:`claim` (or the ``write_*`` methods) for every file,
    and :meth:`remove` for ``--overwrite``. With ``record=False`` no manifest is written and
    ownership comes from ``adopt`` alone (model folders: their ``config.json`` says so).
    """

    path: Path
    kind: str
    files: dict[str, str]
    record: bool = True
    option: str = "--out"
    _ensured: bool = field(default=False, repr=False)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        kind: str,
        *,
        option: str = "--out",
        adopt: Callable[[Path], Iterable[str] | None] | None = None,
        record: bool = True,
        hint: str = "choose a new or empty folder",
    ) -> OutputFolder:
        """Check ``path`` and take it as ``kind``'s folder (created when missing).

        Raises:
            OutputError: ``path`` is a file, holds another command's output, or holds files
                geminifusion did not write (named).
            WriteError: the folder cannot be created or written to.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise OutputError(f"{option} {path} is a file, not a folder; {hint}")
        files: dict[str, str] = {}
        manifest = read_manifest(path) if path.is_dir() else None
        if manifest is not None and manifest[0] not in (kind, None):
            raise OutputError(
                f"{option} {path} holds the output of `geminifusion {manifest[0]}`; "
                f"`geminifusion {kind}` writes into a folder of its own: {hint}"
            )
        if manifest is not None and manifest[0] == kind:
            files = dict(manifest[1])
        else:
            adopted = adopt(path) if adopt is not None and path.is_dir() else None
            if adopted is not None:
                files = {**(manifest[1] if manifest else {}), **{n: kind for n in adopted}}
            else:
                foreign = foreign_files(path, limit=6)
                if foreign:
                    raise OutputError(
                        f"{option} {path} holds files geminifusion did not write "
                        f"({_listing(foreign[:5], len(foreign) > 5)}); it writes only into a "
                        f"new or empty folder or one it wrote before: {hint}"
                    )
                if manifest is not None:
                    files = dict(manifest[1])
        check_could_write(path)
        folder = cls(path, kind, files, record, option)
        if path.is_dir():
            folder._remove_torn()
        return folder

    def ensure(self) -> Path:
        """Create the folder and write its manifest, before the first file goes in: a command
        that fails before it writes anything leaves nothing behind."""
        if not self._ensured:
            make_folder(self.path)
            if self.record:
                self._save()
            self._ensured = True
        return self.path

    def owns(self, name: str) -> bool:
        """Whether the manifest lists ``name`` as this command's."""
        return self.files.get(name) == self.kind

    def _taken(self, name: str) -> bool:
        """Whether something not ours is in the way of ``name``."""
        target = self.path / name.rstrip("/")
        if name in self.files or not (target.exists() or target.is_symlink()):
            return False
        if name.endswith("/") and target.is_dir() and read_manifest(target) is not None:
            return bool(foreign_files(target, limit=1))
        return True

    def claim(self, *names: str) -> list[Path]:
        """Declare the files about to be written (relative names; ``dir/`` for a sub-folder).

        Raises:
            OutputError: one of them exists and the manifest does not list it (nothing is
                written then).
        """
        taken = [n for n in names if self._taken(n)]
        if taken:
            raise OutputError(
                f"{self.path}: {_listing(taken[:5], len(taken) > 5)} "
                f"{'was' if len(taken) == 1 else 'were'} not written by geminifusion and "
                f"would be replaced; move {'it' if len(taken) == 1 else 'them'} away or "
                f"choose another {self.option}"
            )
        new = [n for n in names if self.files.get(n) != self.kind]
        for name in new:
            self.files[name] = self.kind
        if any(n.endswith("/") for n in names):  # another writer fills it: the folder is ours now
            self.ensure()
        elif new and self.record and self._ensured:
            self._save()
        return [self.path / n.rstrip("/") for n in names]

    def atomic_write(self, name: str, write: Callable[[BinaryIO], object]) -> Path:
        self.claim(name)
        self.ensure()
        return atomic_write(self.path / name, write)

    def write_bytes(self, name: str, data: bytes) -> Path:
        return self.atomic_write(name, lambda f: f.write(data))

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, value: object) -> Path:
        return self.write_text(name, json.dumps(value, indent=2) + "\n")

    def remove(self, names: Iterable[str] | None = None) -> list[str]:
        """Delete what this command wrote here (every listed name, or ``names``).

        A listed sub-folder is emptied through its own manifest; folders left empty are
        removed; nothing the manifest does not list is ever touched. Returns what was removed.
        """
        targets = [n for n, by in self.files.items() if by == self.kind]
        if names is not None:
            wanted = set(names)
            targets = [n for n in targets if n in wanted]
        removed = []
        for name in targets:
            target = self.path / name.rstrip("/")
            try:
                if name.endswith("/"):
                    if target.is_dir() and not target.is_symlink():
                        sub = read_manifest(target)
                        if sub is not None:
                            inner = OutputFolder(target, str(sub[0]), dict(sub[1]), True, "")
                            inner.remove()
                            inner._drop_if_empty()
                elif target.is_file() or target.is_symlink():
                    target.unlink()
            except OSError as err:
                raise write_error(err, target, "removing") from None
            del self.files[name]
            removed.append(name)
            self._prune(target.parent)
        if removed and self.record:
            self._save()
        return removed

    def _drop_if_empty(self) -> None:
        """Remove the manifest and the folder when nothing else is left in it."""
        remaining = [p.name for p in self.path.iterdir() if p.name != MANIFEST]
        if not remaining and not any(by != self.kind for by in self.files.values()):
            (self.path / MANIFEST).unlink(missing_ok=True)
            self.path.rmdir()

    def _prune(self, folder: Path) -> None:
        """Remove ``folder`` and its parents up to (not including) ours while they are empty."""
        while folder != self.path and self.path in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def _remove_torn(self) -> None:
        """Temporary files of listed names that a kill left behind."""
        for name in list(self.files):
            target = self.path / name.rstrip("/")
            if name.endswith("/") or not target.parent.is_dir():
                continue
            for torn in target.parent.glob(f".{glob_escape(target.name)}.*.tmp"):
                torn.unlink(missing_ok=True)

    def _save(self) -> None:
        write_json(self.path / MANIFEST, _manifest_data(self.kind, self.files))


def glob_escape(name: str) -> str:
    """``name`` with the characters glob treats specially escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


# ---------------------------------------------------------------------------- single files


def check_apart(
    output: str | os.PathLike, inputs: Iterable[str | os.PathLike], option: str = "--out"
) -> None:
    """Refuse an output that is one of ``inputs``, lies inside an input folder, or is the
    folder of an input file (its outputs would land among the inputs)."""
    out = Path(output).resolve()
    for source in inputs:
        src = Path(source).resolve()
        if out == src:
            raise OutputError(f"{option} {output} is also an input ({source}); write elsewhere")
        if src.is_dir() and src in out.parents:
            raise OutputError(
                f"{option} {output} lies inside the input folder {source}; write elsewhere"
            )
        if src.is_file() and out == src.parent:
            raise OutputError(
                f"{option} {output} is the folder of the input {source}: the outputs would land "
                "among the inputs; write elsewhere"
            )


def claim_file(
    path: str | os.PathLike,
    command: str,
    *,
    replace: bool = False,
    option: str = "OUT",
    replace_flag: str = "--force",
    inputs: Iterable[str | os.PathLike] = (),
) -> Path:
    """Check, before any work, that ``command`` may write the single file ``path``.

    Refused: a folder at ``path``; a path that is one of ``inputs`` or inside an input folder;
    an existing file without ``replace``, or with it when the manifest of its folder does not
    say geminifusion wrote it. The folder must be writable.
    """
    path = Path(path)
    check_apart(path, inputs, option)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give the file to write")
    if path.exists() or path.is_symlink():
        if not replace:
            raise OutputError(f"{option} {path} exists; pass {replace_flag} to replace it")
        manifest = read_manifest(path.parent)
        if manifest is None or path.name not in manifest[1]:
            raise OutputError(
                f"{option} {path} was not written by geminifusion, so it is not replaced even "
                f"with {replace_flag}; move it away or choose another name"
            )
    check_could_write(path.parent)
    return path


def write_file(path: str | os.PathLike, write: Callable[[BinaryIO], object], command: str) -> Path:
    """Atomically write a single-file output and record it in its folder's manifest."""
    path = Path(path)
    make_folder(path.parent)
    manifest = read_manifest(path.parent)
    kind, files = manifest if manifest is not None else (None, {})
    if files.get(path.name) != command:
        files = {**files, path.name: command}
        write_json(path.parent / MANIFEST, _manifest_data(kind, files))
    return atomic_write(path, write)


def write_file_bytes(path: str | os.PathLike, data: bytes, command: str) -> Path:
    """:func:`write_file` for bytes already in memory."""
    return write_file(path, lambda f: f.write(data), command)
