"""Registration of the fusion modules in MMDetection3D's model registry, when it is installed.

``import geminifusion.detection3d`` calls :func:`register_mmdet3d_modules`; an MMDetection3D
config then names the modules by ``type`` after ``custom_imports`` imports this package. The
reference fork's names are registered too, so its own config also builds these modules.
Without MMDetection3D installed nothing here imports it.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

from torch import nn

from geminifusion.detection3d.point_fusion import GeminiPointFusion
from geminifusion.detection3d.voxel_encoder import GeminiDynamicVFE

MMDET3D_NAMES: dict[str, type[nn.Module]] = {
    "GeminiPointFusion": GeminiPointFusion,
    "GeminiDynamicVFE": GeminiDynamicVFE,
    "Gemini_PointFusion": GeminiPointFusion,  # the reference fork's names
    "DynamicVFE_modified": GeminiDynamicVFE,
}


def register_mmdet3d_modules(registry: Any = None) -> bool:
    """Add :data:`MMDET3D_NAMES` to ``registry`` (default: ``mmdet3d.registry.MODELS``).

    Names already taken are left alone, so importing twice (or next to the reference fork) is
    harmless. Returns whether a registry was found.
    """
    if registry is None:
        if importlib.util.find_spec("mmdet3d") is None:
            return False
        try:
            from mmdet3d.registry import MODELS as registry
        except Exception as err:  # a broken mmcv build must not break this package
            warnings.warn(
                f"mmdet3d is installed but failed to import ({err!r}); the "
                "GeminiFusion modules are not registered",
                stacklevel=2,
            )
            return False
    for name, module in MMDET3D_NAMES.items():
        if name not in registry.module_dict:
            registry.register_module(name=name, module=module)
    return True
