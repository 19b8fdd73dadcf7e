"""GeminiFusion for LiDAR + camera 3D detection: point-image fusion and a fusing voxel encoder.

Plain PyTorch modules with MMDetection3D's call shapes; they register themselves in its model
registry when MMDetection3D is installed (see :mod:`.registry`), and import nothing of it
otherwise. A synthetic CPU demonstration lives in :mod:`.demo` (``geminifusion demo3d``).
"""

from geminifusion.detection3d.checkpoint import (
    WeightsReport,
    convert_mvxnet_state_dict,
    convert_reference_state_dict,
    load_mvxnet_weights,
)
from geminifusion.detection3d.point_fusion import (
    FUSION_LAYERS,
    GeminiPointFusion,
    PointImageFusion,
    SumPointFusion,
    build_fusion_layer,
)
from geminifusion.detection3d.projection import point_pixels, sample_features
from geminifusion.detection3d.registry import register_mmdet3d_modules
from geminifusion.detection3d.scatter import (
    VoxelAssignment,
    assign_voxels,
    dynamic_scatter,
    dynamic_voxelize,
    gather_from_voxels,
    scatter_to_voxels,
)
from geminifusion.detection3d.voxel_encoder import GeminiDynamicVFE

register_mmdet3d_modules()

__all__ = [
    "FUSION_LAYERS",
    "GeminiDynamicVFE",
    "GeminiPointFusion",
    "PointImageFusion",
    "SumPointFusion",
    "VoxelAssignment",
    "WeightsReport",
    "assign_voxels",
    "build_fusion_layer",
    "convert_mvxnet_state_dict",
    "convert_reference_state_dict",
    "dynamic_scatter",
    "dynamic_voxelize",
    "gather_from_voxels",
    "load_mvxnet_weights",
    "point_pixels",
    "register_mmdet3d_modules",
    "sample_features",
    "scatter_to_voxels",
]
