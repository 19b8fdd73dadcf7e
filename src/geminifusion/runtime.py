"""Process-wide settings for fast CPU runs: the allocator's handling of large activations.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every block above its
mmap threshold (32 MiB at most) with fresh pages from the kernel and hands them back on free, so
a forward pass that makes such activations pays a page fault for every 4 KiB of them, every
time. A fused 480 x 640 forward makes many: its modalities travel as one stacked batch, and a
stride-4 Mix-FFN hidden map of two images is 39 MiB. Keeping freed blocks in the heap for reuse,
as jemalloc, tcmalloc and PyTorch's own CUDA caching allocator do, removes that cost (measured
in ``benchmarks/bench_model.py``); the price is that the process keeps its peak heap until it
exits.

The ``geminifusion`` command applies this at start-up (``GEMINIFUSION_KEEP_FREED_MEMORY=0``
turns it off); Python users call :func:`keep_freed_memory` once themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_OFF = frozenset({"0", "false", "no"})
_applied = False


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # glibc only: musl and others lack it
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Make glibc keep freed large blocks in its heap and reuse them, for the whole process.

    Large blocks then never go back to the kernel between forward passes (no mmap, no trimming
    of the heap top), so their pages are faulted in once instead of on every pass.

    Returns:
        Whether the setting is in force: False off Linux/glibc, where it does nothing.
    """
    global _applied
    if _applied:
        return True
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # The largest trim threshold mallopt takes (an int): up to 2 GiB of free heap top is kept.
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    _applied = ok
    return ok


def configure_from_environment() -> bool:
    """What the command line does at start-up: :func:`keep_freed_memory` unless turned off."""
    setting = os.environ.get("GEMINIFUSION_KEEP_FREED_MEMORY", "1").strip().lower()
    if setting in _OFF:
        return False
    return keep_freed_memory()
