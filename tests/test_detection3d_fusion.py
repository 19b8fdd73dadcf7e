"""GeminiPointFusion equals a per-point form written from the definition, in float64.

The plain twin below has the reference's parameter layout (two ``nn.MultiheadAttention``, an MLP
judger, ``nn.Embedding`` noises), projects and interpolates each point by hand, and attends one
point at a time over its two slots. Its state dict goes through the checkpoint converter into
the fast layer, so the test checks the layer and the key mapping together.
"""

import importlib.util
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geminifusion.detection3d import (
    GeminiPointFusion,
    SumPointFusion,
    build_fusion_layer,
    convert_reference_state_dict,
)

F64 = torch.float64
LEVELS = [(1, 5), (2, 3), (4, 4)]  # (stride, channels) of three image levels
INPUT = (32, 48)  # padded input (h, w)


pytestmark = pytest.mark.threads(1)  # tiny tensors: pool wake-ups would dominate


class Judger(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2 * dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class PlainPointFusion(nn.Module):
    """The definition, one point at a time (reference parameter names)."""

    def __init__(self, pts_channels: int, dim: int, heads: int) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(c, dim, 3, padding=1))) for _, c in LEVELS
        )
        self.img_transform = nn.Sequential(
            nn.Linear(dim * len(LEVELS), dim), nn.BatchNorm1d(dim, eps=1e-3)
        )
        self.pts_transform = nn.Sequential(
            nn.Linear(pts_channels, dim), nn.BatchNorm1d(dim, eps=1e-3)
        )
        self.cross_attn_0_to_1 = nn.MultiheadAttention(dim, heads)
        self.cross_attn_1_to_0 = nn.MultiheadAttention(dim, heads)
        self.relation_judger = nn.Sequential(Judger(dim), nn.Softmax(dim=-1))
        self.k_noise = nn.Embedding(2, dim)
        self.v_noise = nn.Embedding(2, dim)
        self.alpha = nn.Parameter(torch.ones(2))

    @staticmethod
    def pixel(point: torch.Tensor, meta: dict) -> tuple[float, float]:
        x, y, z = (point[:3] - torch.as_tensor(meta["pcd_trans"], dtype=F64)).tolist()
        p = meta["lidar2img"]
        row = [p[r][0] * x + p[r][1] * y + p[r][2] * z + p[r][3] for r in range(3)]
        u, v = row[0] / row[2], row[1] / row[2]
        u, v = u * meta["scale_factor"][0], v * meta["scale_factor"][1]
        if meta["flip"]:
            u = meta["img_shape"][1] - u
        return u, v

    @staticmethod
    def bilinear(fmap: torch.Tensor, u: float, v: float) -> torch.Tensor:
        """Map pixel (j, i) is centred on input pixel ((j + 0.5) * W / w, ...); zeros outside."""
        c, h, w = fmap.shape
        fx, fy = u * w / INPUT[1] - 0.5, v * h / INPUT[0] - 0.5
        x0, y0 = math.floor(fx), math.floor(fy)
        out = fmap.new_zeros(c)
        for dy in (0, 1):
            for dx in (0, 1):
                xi, yi = x0 + dx, y0 + dy
                weight = (1 - abs(fx - xi)) * (1 - abs(fy - yi))
                if 0 <= xi < w and 0 <= yi < h:
                    out = out + weight * fmap[:, yi, xi]
        return out

    def forward(self, img_feats, pts, pts_feats, img_metas):
        maps = [conv(img_feats[i]) for i, conv in enumerate(self.lateral_convs)]
        sampled = []
        for b, (points, meta) in enumerate(zip(pts, img_metas, strict=True)):
            for point in points:
                u, v = self.pixel(point, meta)
                sampled.append(torch.cat([self.bilinear(m[b], u, v) for m in maps]))
        a_all = self.img_transform(torch.stack(sampled))
        b_all = self.pts_transform(pts_feats)
        attns = (self.cross_attn_0_to_1, self.cross_attn_1_to_0)
        weight = torch.softmax(self.alpha, dim=0)
        out = []
        for a, b in zip(a_all, b_all, strict=True):
            fused = []
            for d, (own, other) in enumerate(((a, b), (b, a))):
                r = self.relation_judger(torch.cat([own, other]))
                keys = torch.stack([own + self.k_noise.weight[d], own * r]).unsqueeze(1)
                values = torch.stack([own + self.v_noise.weight[d], other]).unsqueeze(1)
                query = own.view(1, 1, -1)
                fused.append(own + attns[d](query, keys, values, need_weights=False)[0].view(-1))
            out.append(F.relu(weight[0] * fused[0] + weight[1] * fused[1]))
        return torch.stack(out)


def camera() -> list[list[float]]:
    """A camera 30 px focal, looking along LiDAR x, principal point at the input centre."""
    return [[24.0, -30.0, 0.0, 0.0], [16.0, 0.0, -30.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


def make_inputs(seed: int, counts=(9, 14), pts_channels: int = 6):
    g = torch.Generator().manual_seed(seed)
    img_feats = [
        torch.randn(len(counts), c, INPUT[0] // s, INPUT[1] // s, dtype=F64, generator=g)
        for s, c in LEVELS
    ]
    pts, metas = [], []
    for b, n in enumerate(counts):
        xyz = torch.rand(n, 3, dtype=F64, generator=g) * torch.tensor(
            [10.0, 16.0, 6.0]
        ) + torch.tensor([4.0, -8.0, -3.0])  # some project outside the image: zero padding applies
        pts.append(torch.cat([xyz, torch.rand(n, 1, dtype=F64, generator=g)], dim=1))
        trans = [0.1 * b, -0.2, 0.05]
        metas.append(
            {
                "lidar2img": camera(),
                "transformation_3d_flow": ["T"],
                "pcd_trans": trans,
                "scale_factor": (1.0, 1.0) if b == 0 else (0.75, 0.5),
                "flip": b == 1,
                "img_shape": INPUT if b == 0 else (16, 36),
                "input_shape": INPUT,
            }
        )
        pts[-1][:, :3] += torch.tensor(trans, dtype=F64)
    pts_feats = torch.randn(sum(counts), pts_channels, dtype=F64, generator=g)
    return img_feats, pts, pts_feats, metas


def randomise(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def fast_layer(dim: int, heads: int, pts_channels: int = 6) -> GeminiPointFusion:
    return GeminiPointFusion(
        img_channels=[c for _, c in LEVELS],
        pts_channels=pts_channels,
        mid_channels=dim,
        out_channels=dim,
        img_levels=[0, 1, 2],
        align_corners=False,
        num_heads=heads,
    ).double()


@pytest.mark.parametrize("dim,heads,seed", [(16, 8, 0), (24, 4, 1), (8, 1, 2)])
def test_equals_plain_per_point_form_in_float64(dim, heads, seed):
    plain = PlainPointFusion(6, dim, heads).double().eval()
    randomise(plain, seed)
    fast = fast_layer(dim, heads).eval()
    fast.load_state_dict(convert_reference_state_dict(plain.state_dict()), strict=True)
    inputs = make_inputs(seed)
    with torch.no_grad():
        want = plain(*inputs)
        got = fast(*inputs)
    assert got.shape == (23, dim)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    # Both directions matter: the output moves when either stream's input moves.
    img_feats, pts, pts_feats, metas = inputs
    with torch.no_grad():
        assert (fast(img_feats, pts, pts_feats + 1, metas) - got).abs().max() > 1e-3
        shifted = [f + 1 for f in img_feats]
        assert (fast(shifted, pts, pts_feats, metas) - got).abs().max() > 1e-3


def test_gradients_reach_every_parameter():
    fast = fast_layer(16, 8).train()
    randomise(fast, 3)
    img_feats, pts, pts_feats, metas = make_inputs(3)
    img_feats = [f.requires_grad_() for f in img_feats]
    out = fast(img_feats, pts, pts_feats.requires_grad_(), metas)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in fast.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(f.grad.abs().sum() > 0 for f in img_feats) and pts_feats.grad.abs().sum() > 0


@pytest.mark.parametrize("train", [False, True])
def test_equivariant_under_permuting_points(train):
    fast = fast_layer(16, 8).train(train)
    randomise(fast, 4)
    img_feats, pts, pts_feats, metas = make_inputs(4)
    g = torch.Generator().manual_seed(4)
    perms = [torch.randperm(len(p), generator=g) for p in pts]
    offsets = [0, len(pts[0])]
    order = torch.cat([perm + off for perm, off in zip(perms, offsets, strict=True)])
    with torch.no_grad():
        got = fast(
            img_feats,
            [p[perm] for p, perm in zip(pts, perms, strict=True)],
            pts_feats[order],
            metas,
        )
        want = fast(img_feats, pts, pts_feats, metas)[order]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_sum_fusion_is_relu_of_the_sum():
    layer = SumPointFusion([c for _, c in LEVELS], 6, 16, 16, img_levels=[0, 1, 2]).double().eval()
    randomise(layer, 5)
    inputs = make_inputs(5)
    with torch.no_grad():
        a, b = layer.pre_fuse(*inputs)
        torch.testing.assert_close(layer(*inputs), F.relu(a + b), rtol=0, atol=0)


def test_mask_invalid_zeroes_points_outside_the_image():
    img_feats, pts, pts_feats, metas = make_inputs(6)
    kwargs = dict(img_channels=[c for _, c in LEVELS], pts_channels=6, mid_channels=8)
    kwargs.update(out_channels=8, img_levels=[0, 1, 2], align_corners=False)
    plain, masked = (
        GeminiPointFusion(**kwargs).double(),
        GeminiPointFusion(**kwargs, mask_invalid=True).double(),
    )
    masked.load_state_dict(plain.state_dict())
    # A point behind the camera samples the mirrored pixel unless masked.
    pts[0][0, :3] = torch.tensor([-5.0, 0.5, 0.2], dtype=F64) + torch.tensor(metas[0]["pcd_trans"])
    with torch.no_grad():
        free = plain.sample_image(img_feats, pts, metas)
        kept = masked.sample_image(img_feats, pts, metas)
    assert free[0].abs().sum() > 0 and kept[0].abs().sum() == 0
    changed = (free != kept).any(dim=1)
    assert changed.any() and (kept[changed] == 0).all()


def test_config_builds_and_rejects_unsupported_options():
    layer = build_fusion_layer(
        dict(type="Gemini_PointFusion", img_channels=256, pts_channels=64, mid_channels=128)
        | dict(out_channels=128, img_levels=[0, 1, 2, 3, 4], align_corners=False)
    )
    assert isinstance(layer, GeminiPointFusion) and layer.fusion.num_heads == 8
    assert isinstance(build_fusion_layer(dict(type="SumPointFusion", **_small())), SumPointFusion)
    with pytest.raises(ValueError, match="must be equal"):
        GeminiPointFusion(8, 8, 16, 8)
    # In every environment: a ValueError that names the known types.
    with pytest.raises(ValueError, match=r"unknown fusion layer 'NoSuchFusion'.*SumPointFusion"):
        build_fusion_layer(dict(type="NoSuchFusion", **_small()))
    with pytest.raises(NotImplementedError, match="PointFusion"):
        GeminiPointFusion(8, 8, 8, 8, norm_cfg=dict(type="BN"))


@pytest.mark.skipif(importlib.util.find_spec("mmdet3d") is not None, reason="mmdet3d installed")
def test_point_fusion_is_mmdet3d_s_name():
    """'PointFusion' never builds a stand-in: without MMDetection3D it is an error saying so."""
    with pytest.raises(ValueError, match="install mmdet3d, or use 'SumPointFusion'"):
        build_fusion_layer(dict(type="PointFusion", **_small()))


@pytest.mark.skipif(importlib.util.find_spec("mmengine") is not None, reason="mmengine installed")
def test_init_cfg_without_mmengine_is_refused():
    with pytest.raises(ValueError, match="init_cfg.*needs MMEngine"):
        SumPointFusion(**_small(), init_cfg=dict(type="Xavier", layer="Linear"))
    assert SumPointFusion(**_small(), init_cfg=None).init_cfg is None


def _small() -> dict:
    return dict(img_channels=4, pts_channels=4, mid_channels=8, out_channels=8, img_levels=[0])


def test_converter_reports_incomplete_layers():
    state = PlainPointFusion(6, 8, 8).state_dict()
    state.pop("k_noise.weight")
    with pytest.raises(KeyError, match="k_noise.weight"):
        convert_reference_state_dict({"state_dict": state})
