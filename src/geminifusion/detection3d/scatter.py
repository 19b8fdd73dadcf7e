"""Dynamic voxelisation and point-to-voxel reductions in plain PyTorch.

MMCV ships these as compiled operators (``dynamic_voxelize``, ``DynamicScatter``), CUDA-only for
the scatter. Here the voxels of a batch are the sorted unique rows of the point coordinates
(``torch.unique(..., return_inverse=True)`` on one int64 key per row), and the reductions are
``scatter_reduce``. The voxel order matches MMCV's (lexicographic in ``(batch, z, y, x)``), so
the voxel features line up row for row with those of the compiled operator.

Points with any negative coordinate (outside the voxel range) belong to no voxel: they are left
out of every reduction and receive zeros when voxel features are gathered back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

REDUCTIONS = {"max": "amax", "mean": "mean", "sum": "sum"}


@dataclass(frozen=True)
class VoxelAssignment:
    """Which voxel each point belongs to; computed once, reused by every reduction of a batch.

    Attributes:
        coors: ``(V, D)`` unique voxel coordinates, sorted lexicographically, the input dtype.
        inverse: ``(N,)`` voxel index of each point, ``-1`` for points outside the range.
    """

    coors: Tensor
    inverse: Tensor

    @property
    def num_voxels(self) -> int:
        return self.coors.shape[0]

    @property
    def valid(self) -> Tensor:
        """``(N,)`` whether each point belongs to a voxel."""
        return self.inverse >= 0


def assign_voxels(coors: Tensor) -> VoxelAssignment:
    """Group points by their integer voxel coordinates ``(N, D)`` (e.g. ``(batch, z, y, x)``)."""
    if coors.dim() != 2:
        raise ValueError(f"coors must be (N, D), got shape {tuple(coors.shape)}")
    valid = (coors >= 0).all(dim=1)
    kept = coors[valid].long()
    inverse = torch.full((coors.shape[0],), -1, dtype=torch.long, device=coors.device)
    if kept.shape[0] == 0:
        return VoxelAssignment(coors.new_empty((0, coors.shape[1])), inverse)
    # Row-major key over the occupied extent: sorting keys sorts rows lexicographically.
    extent = kept.amax(dim=0) + 1
    strides = torch.ones_like(extent)
    for d in range(coors.shape[1] - 2, -1, -1):
        strides[d] = strides[d + 1] * extent[d + 1]
    keys = (kept * strides).sum(dim=1)
    unique_keys, kept_inverse = torch.unique(keys, sorted=True, return_inverse=True)
    voxel_coors = kept.new_empty((unique_keys.shape[0], coors.shape[1]))
    voxel_coors[kept_inverse] = kept  # every point of a voxel writes the same row
    inverse[valid] = kept_inverse
    return VoxelAssignment(voxel_coors.to(coors.dtype), inverse)


def scatter_to_voxels(feats: Tensor, assignment: VoxelAssignment, reduce: str = "max") -> Tensor:
    """Reduce point features ``(N, C)`` to voxel features ``(V, C)`` (``max``, ``mean``, ``sum``).

    The gradient of ``max`` is shared equally among tied points (MMCV's gives it to one of them).
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {sorted(REDUCTIONS)}, got {reduce!r}")
    valid = assignment.valid
    index = assignment.inverse[valid].unsqueeze(1).expand(-1, feats.shape[1])
    out = feats.new_zeros((assignment.num_voxels, feats.shape[1]))
    return out.scatter_reduce(0, index, feats[valid], REDUCTIONS[reduce], include_self=False)


def gather_from_voxels(voxel_feats: Tensor, assignment: VoxelAssignment) -> Tensor:
    """Each point's voxel feature ``(N, C)``; zeros for points outside the range."""
    if assignment.num_voxels == 0:
        return voxel_feats.new_zeros((assignment.inverse.shape[0], voxel_feats.shape[1]))
    out = voxel_feats[assignment.inverse.clamp(min=0)]
    if not bool(assignment.valid.all()):
        out = torch.where(assignment.valid.unsqueeze(1), out, out.new_zeros(()))
    return out


def dynamic_scatter(feats: Tensor, coors: Tensor, reduce: str = "max") -> tuple[Tensor, Tensor]:
    """MMCV ``DynamicScatter``'s call: ``(voxel_feats (V, C), voxel_coors (V, D))``."""
    assignment = assign_voxels(coors)
    return scatter_to_voxels(feats, assignment, reduce), assignment.coors


def dynamic_voxelize(
    points: Tensor, voxel_size: Sequence[float], point_cloud_range: Sequence[float]
) -> Tensor:
    """Voxel coordinates ``(N, 3)`` in ``(z, y, x)`` order, int32; ``-1`` rows outside the range.

    The grid is ``round((max - min) / size)`` voxels per axis and voxel ``i`` holds
    ``[min + i * size, min + (i + 1) * size)``, as in MMCV's dynamic voxelisation.
    """
    size = points.new_tensor(voxel_size, dtype=torch.float64)
    low = points.new_tensor(point_cloud_range[:3], dtype=torch.float64)
    high = points.new_tensor(point_cloud_range[3:], dtype=torch.float64)
    grid = torch.round((high - low) / size).long()
    index = torch.floor((points[:, :3].double() - low) / size).long()
    inside = ((index >= 0) & (index < grid)).all(dim=1, keepdim=True)
    index = torch.where(inside, index, torch.full_like(index, -1))
    return index.flip(1).to(torch.int32)
