"""The optional OpenMMLab pieces the plug-in uses when they are installed, imported lazily.

Nothing here imports MMDetection3D or MMEngine at module load: without them the plug-in is
plain PyTorch, and these helpers say so (``None``, ``False``) instead of raising.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any


def mmdet3d_models() -> Any:
    """``mmdet3d.registry.MODELS``, or ``None`` when MMDetection3D is missing or broken."""
    if importlib.util.find_spec("mmdet3d") is None:
        return None
    try:
        from mmdet3d.registry import MODELS
    except Exception as err:  # a broken mmcv build must not break this package
        warnings.warn(
            f"mmdet3d is installed but failed to import ({err!r}); its registry is not used",
            stacklevel=3,
        )
        return None
    return MODELS


def has_mmengine() -> bool:
    return importlib.util.find_spec("mmengine") is not None


def apply_init_cfg(module: Any, init_cfg: Any) -> None:
    """Initialise ``module`` as MMEngine's ``BaseModule.init_weights`` does with ``init_cfg``."""
    from mmengine.model import initialize

    initialize(module, init_cfg)
