"""The fusing dynamic VFE: a per-voxel loop twin, permutation, dropped points, gradients, sizes."""

import pytest
import torch
from torch import nn

from geminifusion.detection3d import GeminiDynamicVFE, GeminiPointFusion, SumPointFusion
from geminifusion.detection3d.scatter import (
    assign_voxels,
    dynamic_voxelize,
    gather_from_voxels,
    scatter_to_voxels,
)

F64 = torch.float64
VOXEL = (0.5, 0.5, 1.0)
RANGE = (0.0, -4.0, -2.0, 8.0, 4.0, 2.0)
INPUT = (24, 40)
# Looks along x from the origin: u = 20 - 20 y / x, v = 12 - 20 z / x.
CAMERA = [[20.0, -20.0, 0.0, 0.0], [12.0, 0.0, -20.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


pytestmark = pytest.mark.threads(1)  # tiny tensors: pool wake-ups would dominate


def small_encoder(fusion: str | None = "GeminiPointFusion", every: bool = True, **kw):
    fusion_layer = None
    if fusion is not None:
        fusion_layer = dict(type=fusion, img_channels=6, pts_channels=8, mid_channels=16)
        fusion_layer.update(out_channels=16, img_levels=[0, 1], align_corners=False)
    return GeminiDynamicVFE(
        in_channels=4,
        feat_channels=[8, 8],
        with_cluster_center=True,
        with_voxel_center=True,
        with_distance=True,
        voxel_size=VOXEL,
        point_cloud_range=RANGE,
        fusion_layer=fusion_layer,
        fuse_every_layer=every,
        **kw,
    ).double()


def make_batch(seed: int, counts=(40, 60)):
    g = torch.Generator().manual_seed(seed)
    pts, coors = [], []
    for b, n in enumerate(counts):
        xyz = torch.rand(n, 3, dtype=F64, generator=g) * torch.tensor([7.0, 7.0, 3.5])
        xyz += torch.tensor([0.5, -3.5, -1.75])
        # Few voxels, many shared: points snap to a coarse lattice plus jitter.
        xyz = (xyz * 1.2).round() / 1.2 + 0.01 * torch.randn(n, 3, dtype=F64, generator=g)
        p = torch.cat([xyz, torch.rand(n, 1, dtype=F64, generator=g)], dim=1)
        pts.append(p)
        c = dynamic_voxelize(p, VOXEL, RANGE)
        coors.append(torch.cat([torch.full((n, 1), b, dtype=torch.int32), c], dim=1))
    metas = [{"lidar2img": CAMERA, "img_shape": INPUT, "input_shape": INPUT} for _ in counts]
    img = [
        torch.randn(len(counts), 6, INPUT[0] // s, INPUT[1] // s, dtype=F64, generator=g)
        for s in (2, 4)
    ]
    return torch.cat(pts), torch.cat(coors), pts, img, metas


def randomise(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)


def loop_encoder(enc: GeminiDynamicVFE, features, coors, pts, img, metas):
    """DynamicVFE written with a dict of voxels and explicit offsets (eval mode)."""
    keys = [tuple(r) for r in coors.tolist()]
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        if min(k) >= 0:
            groups.setdefault(k, []).append(i)
    xyz = features[:, :3]
    cluster = torch.zeros_like(xyz)
    for rows in groups.values():
        cluster[rows] = xyz[rows] - xyz[rows].mean(dim=0)
    centre = torch.zeros_like(xyz)
    for i, (_, z, y, x) in enumerate(keys):
        for axis, index in enumerate((x, y, z)):
            centre[i, axis] = xyz[i, axis] - (RANGE[axis] + (index + 0.5) * VOXEL[axis])
    dropped = [i for i, k in enumerate(keys) if min(k) < 0]
    cluster[dropped] = xyz[dropped]  # no voxel, no mean: the offset is to the origin
    x = torch.cat([features, cluster, centre, xyz.norm(dim=1, keepdim=True)], dim=1)
    for i, layer in enumerate(enc.vfe_layers):
        point_feats = layer(x)
        if isinstance(enc.fusion_layer[i], GeminiPointFusion | SumPointFusion) and img is not None:
            point_feats = enc.fusion_layer[i](img, pts, point_feats, metas)
        voxel = {k: point_feats[rows].max(dim=0).values for k, rows in groups.items()}
        per_point = torch.stack(
            [voxel[k] if k in voxel else point_feats.new_zeros(point_feats.shape[1]) for k in keys]
        )
        x = torch.cat([point_feats, per_point], dim=1)
    order = sorted(voxel)
    return torch.stack([voxel[k] for k in order]), torch.tensor(order, dtype=coors.dtype)


@pytest.mark.parametrize(
    "fusion,every,use_image",
    [("GeminiPointFusion", True, True), ("SumPointFusion", False, True), (None, True, False)],
)
def test_equals_loop_twin(fusion, every, use_image):
    enc = small_encoder(fusion, every).eval()
    randomise(enc, 0)
    features, coors, pts, img, metas = make_batch(0)
    coors[5] = -1  # one point outside the grid
    img = img if use_image else None
    with torch.no_grad():
        want_feats, want_coors = loop_encoder(enc, features, coors, pts, img, metas)
        got_feats, got_coors = enc(features, coors, pts, img, metas)
    assert torch.equal(got_coors, want_coors)
    torch.testing.assert_close(got_feats, want_feats, rtol=0, atol=1e-10)
    n_fusions = sum(isinstance(m, GeminiPointFusion | SumPointFusion) for m in enc.fusion_layer)
    assert n_fusions == {None: 0, "SumPointFusion": 1, "GeminiPointFusion": 2}[fusion]


def test_permuting_points_permutes_point_features_only():
    enc = small_encoder().eval()
    randomise(enc, 1)
    features, coors, pts, img, metas = make_batch(1)
    g = torch.Generator().manual_seed(1)
    perms = [torch.randperm(len(p), generator=g) for p in pts]
    order = torch.cat([perms[0], perms[1] + len(pts[0])])
    permuted = [p[perm] for p, perm in zip(pts, perms, strict=True)]
    with torch.no_grad():
        voxels, vcoors = enc(features, coors, pts, img, metas)
        voxels_p, vcoors_p = enc(features[order], coors[order], permuted, img, metas)
        points = enc.forward_points(features, coors, pts, img, metas)[0]
        points_p = enc.forward_points(features[order], coors[order], permuted, img, metas)[0]
    assert torch.equal(vcoors, vcoors_p)
    torch.testing.assert_close(voxels_p, voxels, rtol=0, atol=1e-12)
    torch.testing.assert_close(points_p, points[order], rtol=0, atol=1e-12)


def test_gradients_reach_every_parameter_and_return_point_feats():
    enc = small_encoder(return_point_feats=True).train()
    randomise(enc, 2)
    features, coors, pts, img, metas = make_batch(2)
    out = enc(features, coors, pts, img, metas)
    assert out.shape == (100, 16)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_reference_config_sizes():
    """The reference KITTI encoder: 10 -> 64 (fused at 64), 128 -> 64 (fused to 128).

    Against MVX-Net's encoder (sum fusion after the last layer only) it adds about 0.99M
    parameters; the paper reports 34.8M against 33.8M for the whole detectors.
    """

    def build(fusion: str, every: bool) -> GeminiDynamicVFE:
        layer = dict(type=fusion, img_channels=256, pts_channels=64, mid_channels=128)
        layer.update(out_channels=128, img_levels=[0, 1, 2, 3, 4], align_corners=False)
        return GeminiDynamicVFE(
            4,
            [64, 64],
            False,
            True,
            True,
            (0.05, 0.05, 0.1),
            (0, -40, -3, 70.4, 40, 1),
            fusion_layer=layer,
            fuse_every_layer=every,
        )

    gemini, mvxnet = build("GeminiPointFusion", True), build("SumPointFusion", False)
    assert gemini.in_channels == 10 and gemini.out_channels == 128
    assert gemini.vfe_layers[1][0].in_features == 128
    assert gemini.fusion_layer[0].out_channels == 64 and gemini.fusion_layer[1].out_channels == 128
    extra = sum(p.numel() for p in gemini.parameters()) - sum(
        p.numel() for p in mvxnet.parameters()
    )
    assert 0.95e6 < extra < 1.05e6, extra


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        GeminiDynamicVFE(mode="min")
    with pytest.raises(ValueError, match="point channels"):
        small_encoder(None)(torch.zeros(3, 5, dtype=F64), torch.zeros(3, 4, dtype=torch.int32))
    enc = small_encoder()
    features, coors, pts, img, metas = make_batch(3)
    with pytest.raises(ValueError, match="img_metas"):
        enc(features, coors, None, img, None)


def test_pts_channels_that_contradict_the_last_layer_are_refused():
    layer = dict(type="SumPointFusion", img_channels=6, pts_channels=16, mid_channels=16)
    layer.update(out_channels=16, img_levels=[0])
    with pytest.raises(ValueError, match=r"fusion_layer\.pts_channels=16 contradicts the 8"):
        GeminiDynamicVFE(feat_channels=[8, 8], fusion_layer=layer)
    layer.pop("pts_channels")  # left out: the layer's width is filled in
    encoder = GeminiDynamicVFE(feat_channels=[8, 12], fusion_layer=layer)
    assert [m.pts_channels for m in encoder.fusion_layer] == [8, 12]


def test_without_images_the_fusions_read_zeros_and_keep_the_channels():
    """No camera: the output has the fused width, as if every point saw zero image features."""
    enc = small_encoder().eval()
    randomise(enc, 4)
    features, coors, pts, img, metas = make_batch(4)
    absent = [dict(m, img_absent=True) for m in metas]
    with torch.no_grad():
        blind, _ = enc(features, coors, pts, None, None)
        marked, _ = enc(features, coors, pts, img, absent)
        seeing, _ = enc(features, coors, pts, img, metas)
        # The definition: a = BN(Linear(0)) for every point, through both fusion layers.
        x = enc.decorate(features, coors, assign_voxels(coors))
        for layer, fusion in zip(enc.vfe_layers, enc.fusion_layer, strict=True):
            b = layer(x)
            a = fusion.img_transform(b.new_zeros(len(b), fusion.sampled_channels))
            point_feats = torch.relu(fusion.combine(a, fusion.pts_transform(b)))
            voxels = assign_voxels(coors)
            x = torch.cat(
                [point_feats, gather_from_voxels(scatter_to_voxels(point_feats, voxels), voxels)],
                dim=1,
            )
    assert blind.shape[1] == enc.out_channels == 16
    torch.testing.assert_close(blind, scatter_to_voxels(point_feats, voxels), rtol=0, atol=1e-12)
    torch.testing.assert_close(marked, blind, rtol=0, atol=0)
    assert (seeing - blind).abs().max() > 1e-3


def test_one_absent_image_changes_only_its_sample():
    enc = small_encoder().eval()
    randomise(enc, 5)
    features, coors, pts, img, metas = make_batch(5)
    mixed = [dict(metas[0], img_absent=True), metas[1]]
    with torch.no_grad():
        got = enc.forward_points(features, coors, pts, img, mixed)[0]
        seeing = enc.forward_points(features, coors, pts, img, metas)[0]
        blind = enc.forward_points(features, coors, pts, None, None)[0]
    first = len(pts[0])
    torch.testing.assert_close(got[:first], blind[:first], rtol=0, atol=1e-12)
    torch.testing.assert_close(got[first:], seeing[first:], rtol=0, atol=1e-12)


def test_camera_dropout_drops_whole_samples_in_training_only():
    enc = small_encoder(camera_dropout=0.5)
    randomise(enc, 6)
    features, coors, pts, img, metas = make_batch(6)
    first = len(pts[0])
    enc.eval()
    with torch.no_grad():
        seeing = enc.forward_points(features, coors, pts, img, metas)[0]
        blind = enc.forward_points(features, coors, pts, None, None)[0]
        assert torch.equal(enc.forward_points(features, coors, pts, img, metas)[0], seeing)
        enc.train()
        for m in enc.modules():  # batch statistics would couple the samples
            if isinstance(m, nn.BatchNorm1d):
                m.eval()
        seen = set()
        for seed in range(12):
            torch.manual_seed(seed)
            got = enc.forward_points(features, coors, pts, img, metas)[0]
            kept = []
            for part in (slice(0, first), slice(first, None)):
                if torch.allclose(got[part], seeing[part], rtol=0, atol=1e-12):
                    kept.append(True)
                else:
                    torch.testing.assert_close(got[part], blind[part], rtol=0, atol=1e-12)
                    kept.append(False)
            seen.add(tuple(kept))
    assert len(seen) > 2  # samples are dropped independently
    with pytest.raises(ValueError, match="probability"):
        small_encoder(camera_dropout=1.5)
    with pytest.raises(ValueError, match="needs a fusion_layer"):
        small_encoder(None, camera_dropout=0.1)
