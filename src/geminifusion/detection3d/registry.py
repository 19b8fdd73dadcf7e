"""Registration of the fusion modules in MMDetection3D's model registry, when it is installed.

``import geminifusion.detection3d`` calls :func:`register_mmdet3d_modules`; an MMDetection3D
config then names the modules by ``type`` after ``custom_imports`` imports this package. The
reference fork's names are registered too, so its own config also builds these modules.
Without MMDetection3D installed nothing here imports it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from geminifusion.detection3d.mm import mmdet3d_models
from geminifusion.detection3d.point_fusion import GeminiPointFusion, SumPointFusion
from geminifusion.detection3d.voxel_encoder import GeminiDynamicVFE

MMDET3D_NAMES: dict[str, type[nn.Module]] = {
    "GeminiPointFusion": GeminiPointFusion,
    "GeminiDynamicVFE": GeminiDynamicVFE,
    "SumPointFusion": SumPointFusion,  # MVX-Net's sum, able to run without images
    "Gemini_PointFusion": GeminiPointFusion,  # the reference fork's names
    "DynamicVFE_modified": GeminiDynamicVFE,
}


def register_mmdet3d_modules(registry: Any = None) -> bool:
    """Add :data:`MMDET3D_NAMES` to ``registry`` (default: ``mmdet3d.registry.MODELS``).

    Names already taken are left alone, so importing twice (or next to the reference fork) is
    harmless, and MMDetection3D's own modules (``PointFusion``, ``DynamicVFE``) are never
    replaced. Returns whether a registry was found.
    """
    if registry is None:
        registry = mmdet3d_models()
        if registry is None:
            return False
    for name, module in MMDET3D_NAMES.items():
        if name not in registry.module_dict:
            registry.register_module(name=name, module=module)
    return True
