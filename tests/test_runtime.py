"""keep_freed_memory: large blocks stay in glibc's heap instead of going back to the kernel."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys

import pytest

from geminifusion import cli, runtime

# How many more bytes glibc serves with mmap (mallinfo2().hblkhd) once a 64 MiB tensor exists.
_PROBE = """
import ctypes, sys, torch
from geminifusion import runtime
names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
applied = runtime.keep_freed_memory() if sys.argv[1] == "keep" else False
again = runtime.keep_freed_memory() if applied else False
before = libc.mallinfo2().hblkhd
x = torch.ones(16 * 2**20)
print(applied, again, libc.mallinfo2().hblkhd - before)
"""


def _has_mallinfo2() -> bool:
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2  # noqa: B018
    except (OSError, AttributeError):
        return False
    return sys.platform.startswith("linux")


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2) on Linux")
def test_large_tensors_come_from_the_heap_once_kept():
    def probe(mode: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
        )
        return out.stdout.split()

    default = probe("default")
    kept = probe("keep")
    assert int(default[2]) >= 64 * 2**20  # glibc's default: a 64 MiB block is mmapped
    assert kept[:2] == ["True", "True"]  # applied, and a second call is harmless
    assert int(kept[2]) == 0  # nothing more mmapped: the block lives in the reusable heap


def test_environment_can_turn_it_off(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setenv("GEMINIFUSION_KEEP_FREED_MEMORY", "0")
    assert runtime.configure_from_environment() is False
    monkeypatch.setenv("GEMINIFUSION_KEEP_FREED_MEMORY", "1")
    assert runtime.configure_from_environment() is True
    assert calls == [1]


def test_command_line_applies_it_at_start(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(runtime, "configure_from_environment", lambda: calls.append(1))
    assert cli.main([]) == 0
    assert calls == [1]
