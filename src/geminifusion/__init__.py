"""geminifusion: multimodal semantic segmentation with GeminiFusion (Jia et al., ICML 2024).

The names below are imported on first use, so ``import geminifusion.detection3d`` (or any one
module) does not load the rest of the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from geminifusion._version import __version__

# Public name -> the module that defines it.
_EXPORTS = {
    "VARIANTS": "geminifusion.backbones",
    "DeliverConfig": "geminifusion.backbones.deliver",
    "MiTConfig": "geminifusion.backbones.mit",
    "SwinConfig": "geminifusion.backbones.swin",
    "GeminiFusion": "geminifusion.fusion",
    "export_onnx": "geminifusion.export",
    "Segmentor": "geminifusion.segmentor",
    "build_segmentor": "geminifusion.segmentor",
    "ModelSource": "geminifusion.weights.load",
    "load_model": "geminifusion.weights.load",
    "from_pretrained": "geminifusion.weights.folder",
    "save_pretrained": "geminifusion.weights.folder",
    "load_pretrained_backbone": "geminifusion.weights.pretrained",
    "load_reference_checkpoint": "geminifusion.weights.reference",
    "to_reference_state_dict": "geminifusion.weights.reference",
}

__all__ = [
    "VARIANTS",
    "DeliverConfig",
    "GeminiFusion",
    "MiTConfig",
    "ModelSource",
    "Segmentor",
    "SwinConfig",
    "__version__",
    "build_segmentor",
    "export_onnx",
    "from_pretrained",
    "load_model",
    "load_pretrained_backbone",
    "load_reference_checkpoint",
    "save_pretrained",
    "to_reference_state_dict",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'geminifusion' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from geminifusion.backbones import VARIANTS
    from geminifusion.backbones.deliver import DeliverConfig
    from geminifusion.backbones.mit import MiTConfig
    from geminifusion.backbones.swin import SwinConfig
    from geminifusion.export import export_onnx
    from geminifusion.fusion import GeminiFusion
    from geminifusion.segmentor import Segmentor, build_segmentor
    from geminifusion.weights.folder import from_pretrained, save_pretrained
    from geminifusion.weights.load import ModelSource, load_model
    from geminifusion.weights.pretrained import load_pretrained_backbone
    from geminifusion.weights.reference import load_reference_checkpoint, to_reference_state_dict
