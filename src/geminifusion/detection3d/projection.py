"""Where each LiDAR point lands in the augmented camera image, and the image features found there.

A detector trains on augmented data: the point cloud went through rotation, scaling, translation
and bird's-eye flips, and the image through resizing, cropping and a flip, independently. To
find a point's pixel, the 3D augmentations are undone (back to the sensor frame the calibration
speaks of), the point is projected with the homogeneous ``lidar2img`` matrix and divided by its
depth, and the image augmentations are replayed on the pixel (scale, then crop, then flip).

The per-sample ``img_meta`` keys read here are MMDetection3D's (all optional except the matrix):

========================== ==================================================================
``lidar2img``              4x4 (or 3x3, 3x4) point-to-pixel matrix of the original image;
                           ``depth2img`` / ``cam2img`` for ``coord_type`` DEPTH / CAMERA.
``transformation_3d_flow`` Order of the 3D augmentations: ``"R"``, ``"S"``, ``"T"``, ``"HF"``,
                           ``"VF"``; nothing is undone without it.
``pcd_rotation``           3x3 matrix ``R``; the augmentation did ``xyz @ R``.
``pcd_scale_factor``       Scalar ``s``; the augmentation did ``xyz * s``.
``pcd_trans``              3-vector ``t``; the augmentation did ``xyz + t``.
``pcd_horizontal_flip``    Whether the BEV horizontal flip ran (LiDAR: ``y -> -y``).
``pcd_vertical_flip``      Whether the BEV vertical flip ran (LiDAR: ``x -> -x``).
``scale_factor``           Image resize ``(w_scale, h_scale)`` (a scalar means both).
``img_crop_offset``        Crop offset ``(x, y)`` in resized pixels.
``flip``                   Whether the image was flipped; ``flip_direction`` (default
                           ``"horizontal"``) says about which axis.
``img_shape``              ``(h, w)`` after resize and crop, before padding: the flip axis and
                           the "inside the image" test.
``input_shape``            ``(h, w)`` of the padded batch the feature maps were computed from
                           (``pad_shape``, then ``img_shape``, when absent).
========================== ==================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PROJECTION_KEYS = {"LIDAR": "lidar2img", "DEPTH": "depth2img", "CAMERA": "cam2img"}

# The axis a bird's-eye-view flip negates, per coordinate system: (horizontal, vertical).
FLIP_AXES = {"LIDAR": (1, 0), "DEPTH": (0, 1), "CAMERA": (0, 2)}


def _tensor(value: Any, like: Tensor) -> Tensor:
    """``value`` (tensor, array, list or number) as a tensor of ``like``'s dtype and device."""
    if isinstance(value, Tensor):
        return value.to(dtype=like.dtype, device=like.device)
    return torch.as_tensor(
        np.asarray(value, dtype=np.float64), dtype=like.dtype, device=like.device
    )


def _coord_type(coord_type: str) -> str:
    key = coord_type.upper()
    if key not in PROJECTION_KEYS:
        raise ValueError(f"coord_type must be one of {sorted(PROJECTION_KEYS)}, got {coord_type!r}")
    return key


def projection_matrix(img_meta: Mapping[str, Any], coord_type: str, like: Tensor) -> Tensor:
    """The sample's 4x4 point-to-pixel matrix; 3x3 and 3x4 matrices are padded with the identity."""
    key = PROJECTION_KEYS[_coord_type(coord_type)]
    if key not in img_meta:
        raise KeyError(f"img_meta has no {key!r}, needed to project {coord_type} points")
    mat = _tensor(img_meta[key], like)
    rows, cols = mat.shape[-2:]
    if mat.dim() != 2 or (rows, cols) not in ((3, 3), (3, 4), (4, 4)):
        raise ValueError(f"{key} must be 3x3, 3x4 or 4x4, got shape {tuple(mat.shape)}")
    if rows == 3:
        full = torch.eye(4, dtype=mat.dtype, device=mat.device)
        full[:3, :cols] = mat
        mat = full
    return mat


def undo_3d_augmentation(
    points: Tensor, img_meta: Mapping[str, Any], coord_type: str = "LIDAR"
) -> Tensor:
    """Coordinates ``(N, 3)`` of augmented points back in the frame of the calibration.

    The augmentations listed in ``transformation_3d_flow`` are inverted in reverse order.
    """
    coord_type = _coord_type(coord_type)
    xyz = points[:, :3]
    for op in reversed(list(img_meta.get("transformation_3d_flow", []))):
        if op == "R" and "pcd_rotation" in img_meta:
            # The inverse matrix (not the transpose), as the reference does: the stored matrix
            # may carry rounding and must be undone exactly as it was applied.
            xyz = xyz @ torch.linalg.inv(_tensor(img_meta["pcd_rotation"], xyz))
        elif op == "S" and "pcd_scale_factor" in img_meta:
            xyz = xyz / float(img_meta["pcd_scale_factor"])
        elif op == "T" and "pcd_trans" in img_meta:
            xyz = xyz - _tensor(img_meta["pcd_trans"], xyz).reshape(-1, 3)
        elif op in ("HF", "VF"):
            flag = "pcd_horizontal_flip" if op == "HF" else "pcd_vertical_flip"
            if img_meta.get(flag, False):
                sign = torch.ones(3, dtype=xyz.dtype, device=xyz.device)
                sign[FLIP_AXES[coord_type][op == "VF"]] = -1
                xyz = xyz * sign
        elif op not in ("R", "S", "T"):
            raise ValueError(f"unknown 3D transformation {op!r} in transformation_3d_flow")
    return xyz


def project_points(xyz: Tensor, proj_mat: Tensor) -> tuple[Tensor, Tensor]:
    """Pixels ``(N, 2)`` and depths ``(N,)`` of points ``(N, 3)`` under a 4x4 projection.

    The pixel is the homogeneous product divided by its third row (the depth); points behind the
    camera (depth <= 0) get mirrored pixels, as in the reference: mask them with ``depth``.
    """
    homogeneous = torch.cat([xyz, xyz.new_ones(xyz.shape[0], 1)], dim=1)
    projected = homogeneous @ proj_mat.T
    depth = projected[:, 2]
    return projected[:, :2] / projected[:, 2:3], depth


def augment_pixels(pixels: Tensor, img_meta: Mapping[str, Any]) -> Tensor:
    """Pixels of the original image ``(N, 2)`` in the augmented image: resize, crop, then flip."""
    if "scale_factor" in img_meta:
        scale = _tensor(img_meta["scale_factor"], pixels).reshape(-1)
        pixels = pixels * (scale if scale.numel() == 1 else scale[:2])
    if "img_crop_offset" in img_meta:
        pixels = pixels - _tensor(img_meta["img_crop_offset"], pixels).reshape(-1)[:2]
    if img_meta.get("flip", False):
        height, width = img_meta["img_shape"][:2]
        direction = img_meta.get("flip_direction", "horizontal") or "horizontal"
        u, v = pixels.unbind(1)
        if direction in ("horizontal", "diagonal"):
            u = width - u
        if direction in ("vertical", "diagonal"):
            v = height - v
        pixels = torch.stack([u, v], dim=1)
    return pixels


def point_pixels(
    points: Tensor, img_meta: Mapping[str, Any], coord_type: str = "LIDAR"
) -> tuple[Tensor, Tensor]:
    """Augmented-image pixels ``(N, 2)`` and camera depths ``(N,)`` of augmented points."""
    xyz = undo_3d_augmentation(points, img_meta, coord_type)
    pixels, depth = project_points(xyz, projection_matrix(img_meta, coord_type, xyz))
    return augment_pixels(pixels, img_meta), depth


def padded_shape(img_meta: Mapping[str, Any]) -> tuple[int, int]:
    """``(h, w)`` of the padded input the feature maps cover."""
    for key in ("input_shape", "pad_shape", "img_shape"):
        if key in img_meta:
            height, width = img_meta[key][:2]
            return int(height), int(width)
    raise KeyError("img_meta has none of input_shape, pad_shape, img_shape")


def inside_image(pixels: Tensor, depth: Tensor, img_meta: Mapping[str, Any]) -> Tensor:
    """Points in front of the camera whose pixel lies inside ``img_shape`` (not the padding)."""
    height, width = img_meta["img_shape"][:2]
    u, v = pixels.unbind(1)
    return (depth > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)


def sample_features(
    feature_maps: Sequence[Tensor],
    pixels: Tensor,
    input_shape: tuple[int, int],
    *,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> Tensor:
    """Features ``(N, sum C)`` of each map ``(C, h, w)`` at input pixels ``(N, 2)``.

    Each map covers the whole padded input (``input_shape`` pixels) whatever its stride, so one
    normalised grid serves every level. Pixel ``(u, v)`` is a continuous coordinate: with
    ``align_corners=False`` the centre of input pixel ``i`` is at ``i + 0.5``.
    """
    height, width = input_shape
    scale = pixels.new_tensor([2.0 / width, 2.0 / height])
    grid = (pixels * scale - 1).view(1, 1, -1, 2)
    sampled = [
        F.grid_sample(
            fmap.unsqueeze(0),
            grid.to(fmap.dtype),
            mode=mode,
            padding_mode=padding_mode,
            align_corners=align_corners,
        ).view(fmap.shape[0], -1)
        for fmap in feature_maps
    ]
    return torch.cat(sampled, dim=0).T
