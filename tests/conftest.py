"""Shared fixtures: where the reference files are, and a skip when they are absent."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (model_helpers, ...) import by name

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("GEMINIFUSION_REFERENCE", REPO.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference`` (or ``$GEMINIFUSION_REFERENCE``); skips the test when absent."""
    if not (REFERENCE / "README.md").is_file():
        pytest.skip(
            f"reference fixtures not found at {REFERENCE}: parity not checked "
            "(set GEMINIFUSION_REFERENCE to the folder that holds the paper's reference files)"
        )
    return REFERENCE


def pytest_configure(config):
    config.addinivalue_line("markers", "threads(n): run the test with n torch threads (default 2)")


@pytest.fixture(autouse=True)
def _threads(request):
    """2 threads, as the reference outputs were made with; ``@pytest.mark.threads(n)`` changes it.

    Tests of tiny tensors take one thread: waking a pool costs more than their arithmetic.
    """
    marker = request.node.get_closest_marker("threads")
    previous = torch.get_num_threads()
    torch.set_num_threads(marker.args[0] if marker else 2)
    yield
    torch.set_num_threads(previous)
