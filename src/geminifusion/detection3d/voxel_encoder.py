"""A dynamic voxel feature encoder (DV-SECOND's ``DynamicVFE``) that fuses the image per point.

Each point is decorated with its offsets to the mean of its voxel and to the voxel centre, then
goes through ``Linear -> BN -> ReLU`` layers; after a layer, the per-voxel max is gathered back
to the points and concatenated to their features before the next one. With a fusion layer,
MVX-Net fuses image features after the last layer only; the GeminiFusion reference fuses after
every layer (``fuse_every_layer=True``, the default here): intermediate fusions keep the layer's
width, the last one takes the ``fusion_layer`` config as given.

Without images (``img_feats=None``: LiDAR-only data, a failed camera) the fusion layers still
run, on zero image features (see :mod:`.point_fusion`), so the encoder's output channels never
depend on the camera; ``camera_dropout`` trains for that by dropping each sample's image with a
given probability. (MMDetection3D's ``DynamicVFE`` skips its fusion instead, and its output then
loses the fusion's channels.)

The voxel grouping is computed once per batch with :func:`.scatter.assign_voxels` and reused by
all reductions (MMCV recomputes it in each CUDA ``DynamicScatter``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from geminifusion.detection3d.checkpoint import stock_fusion_key
from geminifusion.detection3d.point_fusion import (
    PointImageFusion,
    build_fusion_layer,
    images_present,
)
from geminifusion.detection3d.scatter import (
    VoxelAssignment,
    assign_voxels,
    gather_from_voxels,
    scatter_to_voxels,
)


def _norm_layer(norm_cfg: Mapping[str, Any] | None, channels: int) -> nn.BatchNorm1d:
    cfg = dict(norm_cfg or {"type": "BN1d", "eps": 1e-3, "momentum": 0.01})
    kind = cfg.pop("type", "BN1d")
    cfg.pop("requires_grad", None)
    if kind not in ("BN1d", "BN"):
        raise NotImplementedError(f"only BN1d norm layers are supported, got {kind!r}")
    return nn.BatchNorm1d(channels, **cfg)


class GeminiDynamicVFE(nn.Module):
    """Dynamic VFE with point-image fusion, MMDetection3D's ``DynamicVFE`` arguments and calls.

    Args:
        in_channels: raw point channels (x, y, z, intensity, ...).
        feat_channels: output channels of each layer.
        with_distance: append the point's distance to the origin.
        with_cluster_center: append the offset to the mean of the points of its voxel.
        with_voxel_center: append the offset to the centre of its voxel.
        voxel_size: ``(x, y, z)`` size of a voxel.
        point_cloud_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` of the grid.
        norm_cfg: ``dict(type="BN1d", eps=..., momentum=...)``.
        mode: per-voxel reduction between layers and at the output, ``"max"`` or ``"avg"``.
        fusion_layer: config of the fusion (``type`` one of
            :data:`~geminifusion.detection3d.point_fusion.FUSION_LAYERS`, or a name in
            MMDetection3D's registry), or ``None``. It describes the fusion after the last
            layer: its ``pts_channels``, when given, must be ``feat_channels[-1]``. Earlier
            fusions (``fuse_every_layer``) take the same config at their layer's width
            (``pts_channels = mid_channels = out_channels =`` that width).
        return_point_feats: return the last layer's point features instead of voxel features.
        fuse_every_layer: fuse after every layer (the GeminiFusion reference) or after the last
            one only (MVX-Net).
        camera_dropout: in training, the probability that a sample's image is dropped (its
            points read zero image features in every fusion), so the detector learns to work
            with a failed camera. ``0`` (the default, as the reference) never drops.

    A stock MVX-Net state dict (``fusion_layer.<name>`` keys) loads too: its fusion keys are
    renamed to the last slot, ``fusion_layer.<last>.<name>``, on the way in (see
    :func:`~geminifusion.detection3d.checkpoint.load_mvxnet_weights`).
    """

    def __init__(
        self,
        in_channels: int = 4,
        feat_channels: Sequence[int] = (64, 64),
        with_distance: bool = False,
        with_cluster_center: bool = False,
        with_voxel_center: bool = False,
        voxel_size: Sequence[float] = (0.2, 0.2, 4),
        point_cloud_range: Sequence[float] = (0, -40, -3, 70.4, 40, 1),
        norm_cfg: Mapping[str, Any] | None = None,
        mode: str = "max",
        fusion_layer: Mapping[str, Any] | None = None,
        return_point_feats: bool = False,
        fuse_every_layer: bool = True,
        camera_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in ("max", "avg"):
            raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
        if not feat_channels:
            raise ValueError("feat_channels must name at least one layer")
        if not 0 <= camera_dropout <= 1:
            raise ValueError(f"camera_dropout is a probability, got {camera_dropout}")
        if camera_dropout and fusion_layer is None:
            raise ValueError("camera_dropout needs a fusion_layer")
        given = None if fusion_layer is None else fusion_layer.get("pts_channels")
        if given is not None and given != feat_channels[-1]:
            raise ValueError(
                f"fusion_layer.pts_channels={given} contradicts the {feat_channels[-1]} "
                f"channels the last VFE layer gives it (feat_channels={list(feat_channels)})"
            )
        self.camera_dropout = float(camera_dropout)
        self.raw_channels = in_channels
        in_channels += 3 * with_cluster_center + 3 * with_voxel_center + with_distance
        self.in_channels = in_channels
        self.with_distance = with_distance
        self.with_cluster_center = with_cluster_center
        self.with_voxel_center = with_voxel_center
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.point_cloud_range = tuple(float(v) for v in point_cloud_range)
        self.reduce = "max" if mode == "max" else "mean"
        self.return_point_feats = return_point_feats

        widths = [in_channels, *feat_channels]
        self.vfe_layers = nn.ModuleList(
            nn.Sequential(
                nn.Linear(widths[i] * (2 if i > 0 else 1), widths[i + 1], bias=False),
                _norm_layer(norm_cfg, widths[i + 1]),
                nn.ReLU(),
            )
            for i in range(len(feat_channels))
        )
        # ``fusion_layer`` (singular) holds one module per VFE layer (None where none fuses), the
        # reference's attribute name, so checkpoint keys line up.
        self.fusion_layer = nn.ModuleList()
        self.out_channels = widths[-1]
        for i, width in enumerate(feat_channels):
            last = i == len(feat_channels) - 1
            if fusion_layer is None or not (last or fuse_every_layer):
                self.fusion_layer.append(nn.Identity())
                continue
            cfg = dict(fusion_layer)
            cfg["pts_channels"] = width
            if not last:  # intermediate fusions keep the layer's width
                cfg["mid_channels"] = cfg["out_channels"] = width
            self.fusion_layer.append(build_fusion_layer(cfg))
        foreign = [
            type(m).__name__
            for m in self.fusion_layer
            if not isinstance(m, (nn.Identity, PointImageFusion))
        ]
        if camera_dropout and foreign:
            raise ValueError(f"camera_dropout needs this package's fusion layers, not {foreign}")
        if fusion_layer is not None:
            self.out_channels = int(fusion_layer.get("out_channels", self.out_channels))
        self._register_load_state_dict_pre_hook(self._rename_stock_fusion, with_module=True)

    @staticmethod
    def _rename_stock_fusion(module: GeminiDynamicVFE, state_dict, prefix, *args) -> None:
        # A stock DynamicVFE's single fusion is the last slot here (same shapes).
        last = len(module.fusion_layer) - 1
        if isinstance(module.fusion_layer[last], nn.Identity):
            return
        for key in [k for k in state_dict if k.startswith(prefix)]:
            renamed = stock_fusion_key(key, prefix, last)
            if renamed is not None and renamed not in state_dict:
                state_dict[renamed] = state_dict.pop(key)

    def init_weights(self) -> None:
        """Initialise the fusion layers from their ``init_cfg`` (MMEngine calls this)."""
        for fusion in self.fusion_layer:
            if hasattr(fusion, "init_weights"):
                fusion.init_weights()

    def images_used(
        self, img_feats: Sequence[Tensor] | None, img_metas: Sequence[Mapping] | None, count: int
    ) -> list[bool] | None:
        """Per sample, whether the fusions read its image; ``None`` when there are no images.

        A sample's image is unused when its meta marks it absent or, in training, when camera
        dropout drops it (drawn once per forward, shared by every fusion layer).
        """
        if img_feats is None:
            return None
        present = images_present(img_metas, count)
        if self.training and self.camera_dropout > 0:
            kept = (torch.rand(count) >= self.camera_dropout).tolist()  # torch's global RNG
            present = [p and k for p, k in zip(present, kept, strict=True)]
        return present

    def decorate(self, features: Tensor, coors: Tensor, voxels: VoxelAssignment) -> Tensor:
        """Raw point features plus the requested offsets and distance, ``(N, in_channels)``."""
        parts = [features]
        xyz = features[:, :3]
        if self.with_cluster_center:
            mean = gather_from_voxels(scatter_to_voxels(xyz, voxels, "mean"), voxels)
            parts.append(xyz - mean)
        if self.with_voxel_center:
            size = xyz.new_tensor(self.voxel_size)
            low = xyz.new_tensor(self.point_cloud_range[:3])
            index = coors[:, [3, 2, 1]].to(xyz.dtype)  # (b, z, y, x) -> (x, y, z)
            parts.append(xyz - (index * size + size / 2 + low))
        if self.with_distance:
            parts.append(xyz.norm(dim=1, keepdim=True))
        return torch.cat(parts, dim=1)

    def forward_points(
        self,
        features: Tensor,
        coors: Tensor,
        points: Sequence[Tensor] | None = None,
        img_feats: Sequence[Tensor] | None = None,
        img_metas: Sequence[Mapping] | None = None,
    ) -> tuple[Tensor, Tensor, VoxelAssignment]:
        """Point features ``(N, C)``, voxel features ``(V, C)`` and the point-voxel grouping."""
        if features.shape[1] != self.raw_channels:
            raise ValueError(f"expected {self.raw_channels} point channels, got {features.shape}")
        voxels = assign_voxels(coors)
        fuses = any(not isinstance(fusion, nn.Identity) for fusion in self.fusion_layer)
        if fuses and img_feats is not None and (points is None or img_metas is None):
            raise ValueError("fusing image features needs points and img_metas")
        present = self.images_used(img_feats, img_metas, 0 if points is None else len(points))
        x = self.decorate(features, coors, voxels)
        for i, (layer, fusion) in enumerate(zip(self.vfe_layers, self.fusion_layer, strict=True)):
            point_feats = layer(x)
            if isinstance(fusion, PointImageFusion):
                point_feats = fusion(img_feats, points, point_feats, img_metas, present)
            elif not isinstance(fusion, nn.Identity):  # e.g. MMDetection3D's PointFusion
                if present is None or not all(present):
                    raise ValueError(
                        f"{type(fusion).__name__} cannot fuse without an image; SumPointFusion "
                        "(the same sum) and GeminiPointFusion can"
                    )
                point_feats = fusion(img_feats, points, point_feats, img_metas)
            voxel_feats = scatter_to_voxels(point_feats, voxels, self.reduce)
            if i < len(self.vfe_layers) - 1:
                x = torch.cat([point_feats, gather_from_voxels(voxel_feats, voxels)], dim=1)
        return point_feats, voxel_feats, voxels

    def forward(
        self,
        features: Tensor,
        coors: Tensor,
        points: Sequence[Tensor] | None = None,
        img_feats: Sequence[Tensor] | None = None,
        img_metas: Sequence[Mapping] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Encode the points of a batch.

        Args:
            features: ``(N, in_channels)`` points of all samples, concatenated.
            coors: ``(N, 4)`` voxel coordinates ``(batch, z, y, x)``; rows with a negative entry
                are outside the grid.
            points: the per-sample point clouds whose concatenation is ``features``.
            img_feats: image feature maps ``(B, C, H, W)``; ``None`` fuses zero image features.
            img_metas: per-sample meta dicts (keys in :mod:`.projection`).

        Returns:
            ``(voxel_feats (V, C), voxel_coors (V, 4))``, or the ``(N, C)`` point features when
            ``return_point_feats``.
        """
        point_feats, voxel_feats, voxels = self.forward_points(
            features, coors, points, img_feats, img_metas
        )
        if self.return_point_feats:
            return point_feats
        return voxel_feats, voxels.coors
