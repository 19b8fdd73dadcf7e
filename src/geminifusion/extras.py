"""Optional packages: imported where they are used, with a one-line error naming the extra.

``pip install "geminifusion[export]"`` brings ONNX export and ONNX Runtime, and
``pip install "geminifusion[tensorboard]"`` the TensorBoard writer. Nothing else in the package
needs them, so ``import geminifusion`` never imports them.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# Import name -> the extra that installs it.
EXTRAS: dict[str, str] = {
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "tensorboard": "tensorboard",
}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message says which extra brings it."""


def missing_extra(name: str, purpose: str) -> MissingExtraError:
    extra = EXTRAS[name]
    return MissingExtraError(
        f'{purpose} needs the package {name!r}: pip install "geminifusion[{extra}]"'
    )


def require(name: str, purpose: str) -> ModuleType:
    """Import the optional package ``name``, or raise :class:`MissingExtraError`.

    Args:
        name: an import name listed in :data:`EXTRAS`.
        purpose: what needs it, for the message (``"ONNX export"``).
    """
    if importlib.util.find_spec(name) is None:
        raise missing_extra(name, purpose)
    return importlib.import_module(name)


def available(name: str) -> bool:
    """Whether the optional package ``name`` can be imported (without importing it)."""
    return importlib.util.find_spec(name) is not None
