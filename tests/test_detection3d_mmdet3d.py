"""The plug-in inside a real MMDetection3D (1.4): registry, config, stock parity, stock weights,
mmdet3d's transforms, and a detector that trains and predicts on the CPU, with and without its
camera.

Skipped, with the reason, where MMDetection3D is not importable (the project's default
environment); ``docs/detection3d.md`` says how to install the stack these tests were run with.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

try:
    from mmdet3d.registry import MODELS, TRANSFORMS
except Exception as err:  # not installed, or mmcv built without its ops
    pytest.skip(
        f"MMDetection3D is not importable ({err!r}): these tests need mmdet3d 1.4 with mmcv's "
        "compiled ops (see docs/detection3d.md)",
        allow_module_level=True,
    )

from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.hub import get_config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import geminifusion.detection3d as d3
from geminifusion.detection3d.projection import point_pixels
from geminifusion.detection3d.scatter import dynamic_scatter
from test_detection3d_encoder import randomise

pytestmark = pytest.mark.threads(2)

REPO = Path(__file__).resolve().parents[1]
CONFIG = (
    REPO
    / "configs/mmdet3d"
    / ("geminifusion_mvxnet_fpn_dv_second_secfpn_8xb2-80e_kitti-3d-3class.py")
)
BASE = "mmdet3d::mvxnet/mvxnet_fpn_dv_second_secfpn_8xb2-80e_kitti-3d-3class.py"
VOXEL, RANGE = [0.05, 0.05, 0.1], [0, -40, -3, 70.4, 40, 1]
# KITTI's P2 @ R0_rect @ Tr_velo_to_cam of a typical drive, rounded.
LIDAR2IMG = np.array(
    [
        [609.7, -721.4, -1.25, -123.0],
        [180.4, 7.6, -719.7, -101.0],
        [1.0, 0.0, 0.01, -0.27],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
IMAGE = (375, 1242)


init_default_scope("mmdet3d")  # what MMDetection3D's tools do before building from a config


@pytest.fixture(scope="module")
def cfg() -> Config:
    return Config.fromfile(str(CONFIG))


def small_fusion(**kw) -> dict:
    layer = dict(img_channels=[6, 6], pts_channels=8, mid_channels=16, out_channels=16)
    return layer | dict(img_levels=[0, 1], align_corners=False) | kw


class CPUScatter(nn.Module):
    """mmcv's ``DynamicScatter`` call on the CPU, where mmcv has no kernel for it."""

    def __init__(self, reduce: str) -> None:
        super().__init__()
        self.reduce = reduce

    def forward(self, feats, coors):
        return dynamic_scatter(feats, coors, self.reduce)


def cpu_stock_vfe(fusion: dict | None, **kw) -> nn.Module:
    """MMDetection3D's DynamicVFE (+ its PointFusion), its two scatters replaced for the CPU."""
    vfe = MODELS.build(dict(type="DynamicVFE", fusion_layer=fusion, **kw))
    vfe.vfe_scatter = CPUScatter("max")
    vfe.cluster_scatter = CPUScatter("mean")
    return vfe


def small_batch(seed: int, dtype=torch.float32):
    """Two samples of points in a small range, two image levels, mmdet3d-style metas."""
    g = torch.Generator().manual_seed(seed)
    pts, coors = [], []
    for b, n in enumerate((50, 70)):
        xyz = torch.rand(n, 3, generator=g) * torch.tensor([7.0, 7.0, 3.0])
        xyz = (xyz + torch.tensor([0.8, -3.5, -1.5])).to(dtype)
        p = torch.cat([xyz, torch.rand(n, 1, generator=g).to(dtype)], dim=1)
        pts.append(p)
        voxel = d3.dynamic_voxelize(p, (0.5, 0.5, 1.0), (0, -4, -2, 8, 4, 2))
        coors.append(torch.nn.functional.pad(voxel, (1, 0), value=b))
    camera = [[20.0, -20.0, 0.0, 20.0], [12.0, 0.0, -20.0, 12.0], [1.0, 0.0, 0.0, 1.0]]
    camera = np.array(camera + [[0.0, 0.0, 0.0, 1.0]])
    metas = [
        dict(lidar2img=camera, img_shape=(24, 40), input_shape=(24, 40), scale_factor=(1.0, 1.0)),
        dict(lidar2img=camera, img_shape=(20, 36), input_shape=(24, 40), flip=True)
        | dict(scale_factor=(0.9, 0.85)),
    ]
    img = [torch.randn(2, 6, 24 // s, 40 // s, generator=g).to(dtype) for s in (2, 4)]
    return torch.cat(pts), torch.cat(coors), pts, img, metas


# ----------------------------------------------------------------------------- registry


def test_registers_ours_and_leaves_the_stock_modules_alone():
    from mmdet3d.models.layers.fusion_layers import PointFusion
    from mmdet3d.models.voxel_encoders import DynamicVFE

    assert MODELS.get("PointFusion") is PointFusion and MODELS.get("DynamicVFE") is DynamicVFE
    for name, module in d3.registry.MMDET3D_NAMES.items():
        assert MODELS.get(name) is module


def test_fusion_names_in_a_real_registry():
    from mmdet3d.models.layers.fusion_layers import PointFusion

    with_norm = small_fusion(type="PointFusion", norm_cfg=dict(type="BN"))
    stock = d3.build_fusion_layer(with_norm)
    assert type(stock) is PointFusion and hasattr(stock.lateral_convs[0], "bn")
    with pytest.raises(ValueError, match=r"unknown fusion layer 'NoSuchFusion'.*mmdet3d\.registry"):
        d3.build_fusion_layer(dict(type="NoSuchFusion", **small_fusion()))
    # Inside the plug-in's encoder, mmdet3d's PointFusion needs its image.
    vfe = d3.GeminiDynamicVFE(
        feat_channels=[8, 8], fusion_layer=dict(type="PointFusion", **small_fusion())
    )
    features, coors, pts, img, metas = small_batch(0)
    assert vfe(features, coors, pts, img, metas)[0].shape[1] == 16
    with pytest.raises(ValueError, match="cannot fuse without an image"):
        vfe(features, coors, pts, None, None)


def test_init_cfg_is_honoured_through_the_detector(cfg):
    init = dict(type="Constant", layer="Linear", val=0.5)
    layer = d3.SumPointFusion(**small_fusion(), init_cfg=init)
    layer.init_weights()
    assert (layer.img_transform[0].weight == 0.5).all() and (layer.pts_transform[0].bias == 0).all()
    model_cfg = copy.deepcopy(cfg.model)
    init = dict(type="Constant", layer="Conv2d", val=0.25, bias=0.0)
    model_cfg.pts_voxel_encoder.fusion_layer.init_cfg = init
    model = MODELS.build(model_cfg)
    model.init_weights()  # what MMEngine's runner calls
    for fusion in model.pts_voxel_encoder.fusion_layer:
        assert all((conv.conv.weight == 0.25).all() for conv in fusion.lateral_convs)


# ----------------------------------------------------------------------------- the config


def test_config_resolves_and_builds_the_paper_size(cfg):
    assert cfg.custom_imports.imports == ["geminifusion.detection3d"]
    assert cfg.model.type == "DynamicMVXFasterRCNN"
    model = MODELS.build(cfg.model)
    assert isinstance(model.pts_voxel_encoder, d3.GeminiDynamicVFE)
    assert sum(p.numel() for p in model.parameters()) == 34_799_308  # the paper: 34.8M
    assert model.pts_voxel_encoder.out_channels == cfg.model.pts_middle_encoder.in_channels


# ----------------------------------------------------------------------------- parity


def test_sum_fusion_equals_mmdet3d_point_fusion():
    # float32: MMDetection3D projects in float32 whatever the input.
    stock = MODELS.build(dict(type="PointFusion", **small_fusion())).eval()
    randomise(stock, 1)
    ours = d3.SumPointFusion(**small_fusion()).eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    _, _, pts, img, metas = small_batch(1)
    feats = torch.randn(sum(len(p) for p in pts), 8)
    with torch.no_grad():
        got, want = ours(img, pts, feats, metas), stock(img, pts, feats, metas)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("fusion", ["SumPointFusion", "PointFusion"])
def test_mvxnet_encoder_equals_stock_dynamic_vfe_with_stock_weights(fusion):
    kw = dict(
        in_channels=4,
        feat_channels=[8, 8],
        with_cluster_center=True,
        with_voxel_center=True,
        voxel_size=(0.5, 0.5, 1.0),
        point_cloud_range=(0, -4, -2, 8, 4, 2),
    )
    stock = cpu_stock_vfe(dict(type="PointFusion", **small_fusion()), **kw).eval()
    randomise(stock, 2)
    layer = dict(type=fusion, **small_fusion())
    ours = d3.GeminiDynamicVFE(**kw, fusion_layer=layer, fuse_every_layer=False).eval()
    report = d3.load_mvxnet_weights(ours, stock.state_dict())
    assert not report.initialised and not report.unused
    features, coors, pts, img, metas = small_batch(2)
    with torch.no_grad():
        want = stock(features, coors, pts, img, metas)
        got = ours(features, coors, pts, img, metas)
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- stock weights


def test_stock_mvxnet_checkpoint_maps_onto_the_plugin(cfg, tmp_path):
    stock = MODELS.build(get_config(BASE).model).state_dict()
    model = MODELS.build(cfg.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = d3.load_mvxnet_weights(model, {"state_dict": stock})
    assert len(report.loaded) == len(stock) == 564 and not report.unused
    gemini = [
        k
        for k in model.state_dict()
        if ".fusion_layer.0." in k or ".fusion_layer.1.fusion." in k or k.endswith(".1.alpha")
    ]
    assert sorted(report.initialised) == sorted(gemini)
    state = model.state_dict()
    for key in report.initialised:
        assert torch.equal(state[key], before[key])
    for key in ("img_transform.0.weight", "lateral_convs.4.conv.bias"):
        ours = state[f"pts_voxel_encoder.fusion_layer.1.{key}"]
        assert torch.equal(ours, stock[f"pts_voxel_encoder.fusion_layer.{key}"])
    # MMEngine's own loader (what load_from uses, non-strict) renames the stock keys too.
    path = tmp_path / "stock.pth"
    torch.save({"state_dict": stock}, path)
    fresh = MODELS.build(cfg.model)
    load_checkpoint(fresh, str(path), map_location="cpu", strict=False)
    for key, value in fresh.state_dict().items():
        if key not in report.initialised:
            assert torch.equal(value, state[key]), key
    # An MMCV-era checkpoint (as the public MVX-Net one): no module versions, and the sparse
    # kernels in MMCV's (D, H, W, in, out) layout; spconv's loader turns them around.
    old = {
        k: v.permute(1, 2, 3, 4, 0) if "middle_encoder" in k and v.dim() == 5 else v
        for k, v in stock.items()
    }
    fresh = MODELS.build(cfg.model)
    assert len(d3.load_mvxnet_weights(fresh, old).loaded) == 564
    for key, value in fresh.state_dict().items():
        if key not in report.initialised:
            assert torch.equal(value, state[key]), key


# ----------------------------------------------------------------------------- transforms


def synthetic_scene(seed: int, extra_dims: int = 0) -> dict:
    """A KITTI-like LiDAR sweep (ground + three cars) and a camera image, before the pipeline."""
    from mmdet3d.structures import Box3DMode, LiDARInstance3DBoxes
    from mmdet3d.structures.points import LiDARPoints

    rng = np.random.default_rng(seed)
    ground = np.stack(
        [rng.uniform(3, 60, 3000), rng.uniform(-25, 25, 3000), rng.normal(-1.7, 0.03, 3000)], 1
    )
    boxes, parts = [], [ground]
    for k in range(3):
        x, y, yaw = 10.0 + 12 * k, rng.uniform(-8, 8), rng.uniform(-np.pi, np.pi)
        boxes.append([x, y, -1.7, 3.9, 1.6, 1.56, yaw])
        local = rng.uniform(-0.5, 0.5, (300, 3)) * [3.9, 1.6, 1.56] + [0, 0, 0.78]
        c, s = np.cos(yaw), np.sin(yaw)
        parts.append(local @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]) + [x, y, -1.7])
    xyz = np.concatenate(parts)
    columns = [xyz, rng.uniform(0, 1, (len(xyz), 1))]
    if extra_dims:
        columns.append(np.arange(len(xyz), dtype=np.float64)[:, None])  # which point it was
    points = np.concatenate(columns, axis=1).astype(np.float32)
    return dict(
        points=LiDARPoints(points, points_dim=points.shape[1]),
        img=rng.integers(0, 255, (*IMAGE, 3), dtype=np.uint8),
        img_shape=IMAGE,
        ori_shape=IMAGE,
        lidar2img=LIDAR2IMG.copy(),
        gt_bboxes_3d=LiDARInstance3DBoxes(np.array(boxes, dtype=np.float32)),
        gt_labels_3d=np.array([2, 2, 2]),
        box_type_3d=LiDARInstance3DBoxes,
        box_mode_3d=Box3DMode.LIDAR,
    )


def train_pipeline(cfg: Config):
    """The config's train pipeline without the file loading, at a CPU-sized image scale."""
    from mmengine.dataset import Compose

    steps = []
    for step in copy.deepcopy(cfg.train_pipeline):
        if step["type"].startswith("Load"):
            continue
        if step["type"] == "RandomResize":
            step["scale"] = [(320, 96), (640, 192)]
        if step["type"] == "Pack3DDetInputs":
            default = TRANSFORMS.get("Pack3DDetInputs")(keys=[]).meta_keys
            step["meta_keys"] = (*default, d3.point_fusion.ABSENT_KEY)
        steps.append(step)
    return Compose(steps)


def test_mmdet3d_train_transforms_give_metainfo_the_plugin_reads(cfg):
    pipeline = train_pipeline(cfg)
    for seed in range(4):
        scene = synthetic_scene(seed, extra_dims=1)
        original = scene["points"].tensor.clone().double()
        packed = pipeline(scene)
        meta = packed["data_samples"].metainfo
        points = packed["inputs"]["points"].double()
        assert meta["transformation_3d_flow"] and "pcd_rotation" in meta
        index = points[:, 4].long()
        got, _ = point_pixels(points, meta)
        want, depth = point_pixels(original[index], {"lidar2img": meta["lidar2img"]})
        want = want * torch.as_tensor(meta["scale_factor"][:2], dtype=want.dtype)
        if meta["flip"]:
            want[:, 0] = meta["img_shape"][1] - want[:, 0]
        seen = depth > 1
        torch.testing.assert_close(
            got[seen], want[seen], rtol=0, atol=1e-2
        )  # float32 points at tens of metres


# ----------------------------------------------------------------------------- the detector


@pytest.fixture
def spconv_cpu_backward(monkeypatch):
    """spconv 2.3's backward asks for the CUDA stream before taking its CPU path, which a
    CPU-only torch refuses; the CPU path does not use the stream."""
    if not torch.cuda.is_available():
        import spconv.pytorch.ops as spconv_ops

        monkeypatch.setattr(spconv_ops, "get_current_stream", lambda: 0)


def detector(cfg: Config, **encoder) -> nn.Module:
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pts_voxel_encoder.update(encoder)
    model_cfg.test_cfg.pts.score_thr = 0.0  # an untrained head: keep boxes for the rotated NMS
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def batch(cfg: Config, seeds=(0, 1), absent=(), camera=True) -> dict:
    pipeline = train_pipeline(cfg)
    samples = []
    for seed in seeds:
        scene = synthetic_scene(seed)
        scene[d3.point_fusion.ABSENT_KEY] = seed in absent
        samples.append(pipeline(scene))
    data = pseudo_collate(samples)
    if not camera:
        del data["inputs"]["img"]
    return data


def train_steps(model: nn.Module, data: dict, steps: int = 3) -> list[float]:
    optim = build_optim_wrapper(model, dict(optimizer=dict(type="AdamW", lr=1e-4)))
    model.train()
    losses = []
    for _ in range(steps):
        log = model.train_step(copy.deepcopy(data), optim)
        losses.append(float(log["loss"]))
    return losses


@pytest.mark.slow
def test_detector_trains_and_predicts_through_the_plugin(cfg, spconv_cpu_backward):
    model = detector(cfg)
    data = batch(cfg)
    fusion = model.pts_voxel_encoder.fusion_layer[1].fusion
    before = fusion.in_proj_weight.detach().clone()
    losses = train_steps(model, data)
    assert all(np.isfinite(losses)), losses
    assert not torch.equal(fusion.in_proj_weight, before)  # gradients reached GeminiFusion
    model.eval()
    with torch.no_grad():
        results = model.test_step(copy.deepcopy(data))
    boxes = results[0].pred_instances_3d
    assert 0 < len(boxes.bboxes_3d) <= cfg.model.test_cfg.pts.max_num
    assert boxes.bboxes_3d.tensor.shape[1] == 7 and "torchvision" not in sys.modules


@pytest.mark.slow
def test_detector_runs_with_a_failed_camera(cfg, spconv_cpu_backward):
    """No image at all, one image marked absent, camera dropout: the channels always hold."""
    model = detector(cfg, camera_dropout=0.5)
    assert model.pts_voxel_encoder.camera_dropout == 0.5
    for data in (batch(cfg, camera=False), batch(cfg, absent=(1,))):
        assert all(np.isfinite(train_steps(model, data, steps=1)))  # a CPU step takes a minute
        model.eval()
        with torch.no_grad():
            results = model.test_step(copy.deepcopy(data))
        assert len(results) == 2 and len(results[0].pred_instances_3d.bboxes_3d) > 0
