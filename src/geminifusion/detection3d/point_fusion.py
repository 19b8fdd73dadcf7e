"""Point-image fusion layers for LiDAR + camera detectors, MMDetection3D's call shape.

Both layers take ``(img_feats, pts, pts_feats, img_metas)`` and return one feature per point:

1. each image level goes through a 3x3 lateral conv to ``mid_channels``;
2. every point samples every level at its pixel (see :mod:`.projection`), the levels are
   concatenated, and ``a = BN(Linear(.))`` of that is the image feature of the point;
3. ``b = BN(Linear(pts_feats))`` is its point feature;
4. the two are combined: :class:`SumPointFusion` (MVX-Net's ``PointFusion``) returns
   ``ReLU(a + b)``; :class:`GeminiPointFusion` runs the GeminiFusion layer on the pair
   ``(a, b)`` of every point, then returns ``ReLU(softmax(alpha)_0 a' + softmax(alpha)_1 b')``.

Without a camera (``img_feats=None``, or a sample whose meta has ``img_absent=True``) the points
of that sample read zero image features, as a point outside the image does under zero padding,
so ``a = BN(Linear(0))`` and the output keeps its channels.

Parameter names follow the reference (``lateral_convs.{i}.conv``, ``img_transform.{0,1}``,
``pts_transform.{0,1}``, ``alpha``), so a reference checkpoint maps by the few rules of
:func:`geminifusion.detection3d.checkpoint.convert_reference_state_dict`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geminifusion.detection3d.mm import apply_init_cfg, has_mmengine, mmdet3d_models
from geminifusion.detection3d.projection import (
    inside_image,
    padded_shape,
    point_pixels,
    sample_features,
)
from geminifusion.fusion import GeminiFusion

ABSENT_KEY = "img_absent"  # img_meta flag: this sample's camera failed (its image is a blank)


def images_present(img_metas: Sequence[Mapping] | None, count: int) -> list[bool]:
    """Whether each of ``count`` samples has its image (not flagged :data:`ABSENT_KEY`)."""
    if img_metas is None:
        return [True] * count
    return [not meta.get(ABSENT_KEY, False) for meta in img_metas]


def _batch_norm(channels: int) -> nn.BatchNorm1d:
    # The reference's normalisation of both pre-fusion transforms.
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


def _lateral_conv(in_channels: int, out_channels: int, act_cfg: Mapping | None) -> nn.Sequential:
    """A 3x3 conv named ``conv`` (the key MMCV's ``ConvModule`` gives it), ReLU if asked."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, 3, padding=1)
    )
    if act_cfg is not None:
        if act_cfg.get("type") != "ReLU":
            raise NotImplementedError(f"only act_cfg=dict(type='ReLU') is supported, got {act_cfg}")
        layers["activate"] = nn.ReLU()
    return nn.Sequential(layers)


class PointImageFusion(nn.Module):
    """Shared part of the point-image fusion layers: sampling and the pre-fusion transforms.

    Args:
        img_channels: channels of each image level (an int repeats for every level).
        pts_channels: channels of the incoming point features.
        mid_channels: channels after each lateral conv.
        out_channels: channels of the output point features.
        img_levels: which entries of ``img_feats`` are used (an int means that one level).
        coord_type: ``"LIDAR"``, ``"DEPTH"`` or ``"CAMERA"``: which matrix and flip axes apply.
        conv_cfg, norm_cfg: MMCV lateral conv options; only ``None`` (plain conv) is supported
            (MMDetection3D's ``PointFusion`` takes them).
        act_cfg: ``None`` (the reference) or ``dict(type="ReLU")`` after each lateral conv.
        init_cfg: MMEngine's ``init_cfg``, applied by :meth:`init_weights` (which MMEngine's
            runner calls through the detector) with MMEngine's ``initialize``; needs MMEngine.
            ``None`` keeps PyTorch's default initialisation.
        activate_out: ReLU on the output.
        fuse_out: an extra ``Linear -> BN -> ReLU`` on the output.
        dropout_ratio: dropout of the image feature during training.
        aligned: bilinear (``True``) or nearest sampling.
        align_corners: ``grid_sample``'s convention (MVX-Net's KITTI config uses ``False``).
        padding_mode: ``grid_sample``'s value outside the feature maps.
        lateral_conv: whether to use the lateral convs at all.
        mask_invalid: zero the sampled image features of points behind the camera or outside
            ``img_shape``. Off by default, as in the reference, where such points sample the
            mirrored pixel or the padding (zeros beyond the padded input).
    """

    def __init__(
        self,
        img_channels: int | Sequence[int],
        pts_channels: int,
        mid_channels: int,
        out_channels: int,
        img_levels: int | Sequence[int] = 3,
        coord_type: str = "LIDAR",
        conv_cfg: Mapping | None = None,
        norm_cfg: Mapping | None = None,
        act_cfg: Mapping | None = None,
        init_cfg: Any = None,
        activate_out: bool = True,
        fuse_out: bool = False,
        dropout_ratio: float = 0.0,
        aligned: bool = True,
        align_corners: bool = True,
        padding_mode: str = "zeros",
        lateral_conv: bool = True,
        mask_invalid: bool = False,
    ) -> None:
        super().__init__()
        if conv_cfg is not None or norm_cfg is not None:
            raise NotImplementedError(
                "lateral convs with conv_cfg/norm_cfg are not supported here; MMDetection3D's "
                "PointFusion takes them (type='PointFusion' with mmdet3d installed)"
            )
        if init_cfg is not None and not has_mmengine():
            raise ValueError(
                f"init_cfg={init_cfg!r} needs MMEngine, which interprets it; install mmengine "
                "or leave init_cfg=None (PyTorch's default initialisation)"
            )
        self.init_cfg = init_cfg
        levels = [img_levels] if isinstance(img_levels, int) else list(img_levels)
        channels = (
            [img_channels] * len(levels) if isinstance(img_channels, int) else list(img_channels)
        )
        if len(channels) != len(levels):
            raise ValueError(f"{len(channels)} img_channels for {len(levels)} img_levels")
        self.img_levels = levels
        self.img_channels = channels
        self.pts_channels = pts_channels
        self.mid_channels = mid_channels
        self.out_channels = out_channels
        self.coord_type = coord_type.upper()
        self.activate_out = activate_out
        self.dropout_ratio = dropout_ratio
        self.aligned = aligned
        self.align_corners = align_corners
        self.padding_mode = padding_mode
        self.mask_invalid = mask_invalid

        self.lateral_convs: nn.ModuleList | None = None
        if lateral_conv:
            self.lateral_convs = nn.ModuleList(
                _lateral_conv(c, mid_channels, act_cfg) for c in channels
            )
            sampled = mid_channels * len(channels)
        else:
            sampled = sum(channels)
        self.sampled_channels = sampled
        self.img_transform = nn.Sequential(
            nn.Linear(sampled, out_channels), _batch_norm(out_channels)
        )
        self.pts_transform = nn.Sequential(
            nn.Linear(pts_channels, out_channels), _batch_norm(out_channels)
        )
        self.fuse_conv: nn.Sequential | None = None
        if fuse_out:
            self.fuse_conv = nn.Sequential(
                nn.Linear(mid_channels, out_channels), _batch_norm(out_channels), nn.ReLU()
            )

    def init_weights(self) -> None:
        """Apply ``init_cfg`` (MMEngine's ``BaseModule.init_weights`` contract)."""
        if self.init_cfg is not None:
            apply_init_cfg(self, self.init_cfg)

    def sample_image(
        self,
        img_feats: Sequence[Tensor],
        pts: Sequence[Tensor],
        img_metas: Sequence[Mapping],
        img_present: Sequence[bool] | None = None,
    ) -> Tensor:
        """Image features of every point of the batch, ``(sum N_i, channels x levels)``.

        Points of a sample without its image (``img_present[i]`` false; by default read from
        the metas, see :func:`images_present`) get zeros.
        """
        if len(pts) != len(img_metas):
            raise ValueError(f"{len(pts)} point clouds but {len(img_metas)} img_metas")
        if img_present is None:
            img_present = images_present(img_metas, len(pts))
        if not any(img_present):
            return img_feats[0].new_zeros((sum(len(p) for p in pts), self.sampled_channels))
        maps = [img_feats[level] for level in self.img_levels]
        if self.lateral_convs is not None:
            maps = [conv(fmap) for conv, fmap in zip(self.lateral_convs, maps, strict=True)]
        mode = "bilinear" if self.aligned else "nearest"
        per_sample = []
        for i, (points, meta) in enumerate(zip(pts, img_metas, strict=True)):
            if not img_present[i]:
                per_sample.append(maps[0].new_zeros((len(points), self.sampled_channels)))
                continue
            pixels, depth = point_pixels(points, meta, self.coord_type)
            feats = sample_features(
                [fmap[i] for fmap in maps],
                pixels,
                padded_shape(meta),
                mode=mode,
                padding_mode=self.padding_mode,
                align_corners=self.align_corners,
            )
            if self.mask_invalid:
                feats = feats * inside_image(pixels, depth, meta).unsqueeze(1).to(feats.dtype)
            per_sample.append(feats)
        return torch.cat(per_sample, dim=0)

    def pre_fuse(
        self,
        img_feats: Sequence[Tensor] | None,
        pts: Sequence[Tensor] | None,
        pts_feats: Tensor,
        img_metas: Sequence[Mapping] | None,
        img_present: Sequence[bool] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The image feature ``a`` and the point feature ``b`` of every point, ``(N, C)`` each."""
        if img_feats is None:  # no camera at all: every point reads zeros
            sampled = pts_feats.new_zeros((pts_feats.shape[0], self.sampled_channels))
        else:
            if pts is None or img_metas is None:
                raise ValueError("fusing image features needs points and img_metas")
            sampled = self.sample_image(img_feats, pts, img_metas, img_present)
        img_pre_fuse = self.img_transform(sampled)
        if self.training and self.dropout_ratio > 0:
            img_pre_fuse = F.dropout(img_pre_fuse, self.dropout_ratio)
        return img_pre_fuse, self.pts_transform(pts_feats)

    def combine(self, img_pre_fuse: Tensor, pts_pre_fuse: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        img_feats: Sequence[Tensor] | None,
        pts: Sequence[Tensor] | None,
        pts_feats: Tensor,
        img_metas: Sequence[Mapping] | None,
        img_present: Sequence[bool] | None = None,
    ) -> Tensor:
        """Fused per-point features.

        Args:
            img_feats: image feature maps ``(B, C_l, H_l, W_l)``, indexed by ``img_levels``;
                ``None`` when there is no camera (every point reads zero image features).
            pts: the ``B`` point clouds ``(N_i, >=3)``, augmented, in the order of ``pts_feats``.
            pts_feats: ``(sum N_i, pts_channels)`` features of the concatenated points.
            img_metas: the ``B`` per-sample meta dicts (keys in :mod:`.projection`, and
                :data:`ABSENT_KEY`).
            img_present: per sample, whether its image is used (default: from ``img_metas``).

        Returns:
            ``(sum N_i, out_channels)``.
        """
        out = self.combine(*self.pre_fuse(img_feats, pts, pts_feats, img_metas, img_present))
        if self.activate_out:
            out = F.relu(out)
        if self.fuse_conv is not None:
            out = self.fuse_conv(out)
        return out


class SumPointFusion(PointImageFusion):
    """MVX-Net's ``PointFusion``: the image and point features are added."""

    def combine(self, img_pre_fuse: Tensor, pts_pre_fuse: Tensor) -> Tensor:
        return img_pre_fuse + pts_pre_fuse


class GeminiPointFusion(PointImageFusion):
    """GeminiFusion between the image and point feature of each point (Jia et al., 2024).

    Stream 0 is the image feature, stream 1 the point feature; :class:`GeminiFusion` runs both
    directions (8 heads, as the reference) on all points of the batch at once, and a learned
    two-way softmax ``alpha`` mixes the fused streams. Takes the arguments of
    :class:`PointImageFusion`, plus ``num_heads``; ``mid_channels`` must equal ``out_channels``.
    """

    def __init__(self, *args: Any, num_heads: int = 8, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.mid_channels != self.out_channels:
            raise ValueError(
                f"GeminiPointFusion attends in mid_channels={self.mid_channels} over features of "
                f"out_channels={self.out_channels}: they must be equal"
            )
        self.fusion = GeminiFusion(self.mid_channels, num_heads)
        self.alpha = nn.Parameter(torch.ones(2))

    def combine(self, img_pre_fuse: Tensor, pts_pre_fuse: Tensor) -> Tensor:
        fused = self.fusion(torch.stack([img_pre_fuse, pts_pre_fuse]))
        weight = torch.softmax(self.alpha, dim=0)
        return weight[0] * fused[0] + weight[1] * fused[1]


FUSION_LAYERS: dict[str, type[PointImageFusion]] = {
    "GeminiPointFusion": GeminiPointFusion,
    "Gemini_PointFusion": GeminiPointFusion,  # the reference's name
    "SumPointFusion": SumPointFusion,
}


def build_fusion_layer(cfg: Mapping[str, Any] | nn.Module) -> nn.Module:
    """A fusion layer from a config dict whose ``type`` names one of :data:`FUSION_LAYERS`.

    Other names (MMDetection3D's ``PointFusion``, a user's registered layer) are built by
    MMDetection3D's registry when it is installed: ``PointFusion`` is always MMDetection3D's
    class, never a stand-in. An unknown name is a ``ValueError`` naming the known ones.
    """
    if isinstance(cfg, nn.Module):
        return cfg
    kwargs = dict(cfg)
    name = kwargs.pop("type", "GeminiPointFusion")
    if name in FUSION_LAYERS:
        return FUSION_LAYERS[name](**kwargs)
    registry = mmdet3d_models()
    if registry is not None and registry.get(name) is not None:
        return registry.build(dict(kwargs, type=name))
    where = (
        "or a name in mmdet3d.registry.MODELS, such as 'PointFusion'"
        if registry is not None
        else "('PointFusion' is MMDetection3D's layer: install mmdet3d, or use 'SumPointFusion', "
        "the same sum in plain PyTorch)"
    )
    raise ValueError(f"unknown fusion layer {name!r}; known: {sorted(FUSION_LAYERS)} {where}")
