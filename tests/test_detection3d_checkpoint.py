"""Stock MVX-Net weights in the plug-in's layout: the key mapping, the report, the load hook.

The stock layout is built here as MMDetection3D's ``DynamicVFE`` + ``PointFusion`` name their
parameters (``vfe_layers.<i>.{0,1}``; ``fusion_layer.lateral_convs.<l>.conv``,
``fusion_layer.{img,pts}_transform.{0,1}``), so no download and no MMDetection3D are needed;
``test_detection3d_mmdet3d.py`` repeats the check on MMDetection3D's own modules.
"""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from geminifusion.detection3d import (
    GeminiDynamicVFE,
    convert_mvxnet_state_dict,
    load_mvxnet_weights,
)

pytestmark = pytest.mark.threads(1)

LEVELS, IMG, MID, WIDTH = 5, 256, 128, 64


class StockPointFusion(nn.Module):
    """MMDetection3D's ``PointFusion`` parameter layout (ConvModule names its conv ``conv``)."""

    def __init__(self) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(IMG, MID, 3, padding=1)))
            for _ in range(LEVELS)
        )
        self.img_transform = nn.Sequential(nn.Linear(MID * LEVELS, MID), nn.BatchNorm1d(MID))
        self.pts_transform = nn.Sequential(nn.Linear(WIDTH, MID), nn.BatchNorm1d(MID))


class StockDynamicVFE(nn.Module):
    """MMDetection3D's ``DynamicVFE`` parameter layout, KITTI MVX-Net sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.vfe_layers = nn.ModuleList(
            nn.Sequential(nn.Linear(n, WIDTH, bias=False), nn.BatchNorm1d(WIDTH), nn.ReLU())
            for n in (10, 2 * WIDTH)
        )
        self.fusion_layer = StockPointFusion()


class Detector(nn.Module):
    """A voxel encoder beside another part, under MVX-Net's attribute names."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.pts_voxel_encoder = encoder
        self.pts_bbox_head = nn.Linear(4, 3)


def plugin(every: bool = True, fusion: str = "GeminiPointFusion") -> GeminiDynamicVFE:
    layer = dict(type=fusion, img_channels=IMG, pts_channels=WIDTH, mid_channels=MID)
    layer.update(out_channels=MID, img_levels=list(range(LEVELS)), align_corners=False)
    return GeminiDynamicVFE(
        4,
        [WIDTH, WIDTH],
        with_cluster_center=True,
        with_voxel_center=True,
        voxel_size=(0.05, 0.05, 0.1),
        fusion_layer=layer,
        fuse_every_layer=every,
    )


def stock_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    stock = Detector(StockDynamicVFE())
    with torch.no_grad():
        for buffer in stock.buffers():
            buffer.add_(torch.rand_like(buffer.float()).to(buffer.dtype) + 1)
    return stock.state_dict()


def test_conversion_moves_the_stock_fusion_to_the_last_slot():
    stock = stock_state()
    fusion_keys = [k for k in stock if ".fusion_layer." in k]
    assert len(fusion_keys) == 24  # 5 lateral convs x 2 + 2 transforms x (2 + 5)
    converted = convert_mvxnet_state_dict({"state_dict": stock, "meta": {}})
    assert len(converted) == len(stock)
    for key, value in stock.items():
        new = key.replace("encoder.fusion_layer.", "encoder.fusion_layer.1.")
        assert converted[new] is value
    # Already in the plug-in's layout: unchanged.
    assert convert_mvxnet_state_dict(converted) == converted
    with pytest.raises(ValueError, match="both the stock and the plug-in"):
        convert_mvxnet_state_dict(converted | stock)


def test_load_reports_what_stays_initialised():
    model = Detector(plugin())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stock = stock_state()
    report = load_mvxnet_weights(model, stock)
    state = model.state_dict()
    assert len(report.loaded) == len(stock) and not report.unused
    for key, value in convert_mvxnet_state_dict(stock).items():
        assert torch.equal(state[key], value), key
    # What stays: the whole first fusion slot, and GeminiFusion + alpha of the last one.
    first = [k for k in state if k.startswith("pts_voxel_encoder.fusion_layer.0.")]
    gemini = [k for k in state if ".fusion_layer.1.fusion." in k or k.endswith("1.alpha")]
    assert sorted(report.initialised) == sorted(first + gemini)
    assert all(torch.equal(state[k], before[k]) for k in report.initialised)
    assert "initialised: pts_voxel_encoder.fusion_layer.1.alpha" in str(report)


def test_mvxnet_layout_loads_strictly_and_from_a_file(tmp_path):
    path = tmp_path / "stock.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in stock_state(1).items()}}, path)
    model = Detector(plugin(every=False, fusion="SumPointFusion"))
    report = load_mvxnet_weights(model, path)
    assert not report.initialised and not report.unused
    extra = dict(stock_state(1), **{"img_rpn_head.conv.weight": torch.zeros(1)})
    assert load_mvxnet_weights(model, extra).unused == ("img_rpn_head.conv.weight",)


def test_shape_mismatch_is_refused_and_nothing_changes():
    model = Detector(plugin())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stock = stock_state()
    stock["pts_voxel_encoder.fusion_layer.pts_transform.0.weight"] = torch.zeros(MID, 32)
    with pytest.raises(ValueError, match=r"fusion_layer\.1\.pts_transform\.0\.weight"):
        load_mvxnet_weights(model, stock)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_plain_load_state_dict_maps_stock_keys_too():
    """What MMEngine's non-strict ``load_from`` does: the fusion keys are renamed on the way in."""
    model = Detector(plugin())
    stock = stock_state()
    result = model.load_state_dict(stock, strict=False)
    assert not result.unexpected_keys
    converted = convert_mvxnet_state_dict(stock)
    missing = [k for k in model.state_dict() if k not in converted]
    # BatchNorm fills in a missing num_batches_tracked itself.
    assert sorted(result.missing_keys) == sorted(k for k in missing if "batches" not in k)
    key = "pts_voxel_encoder.fusion_layer.1.img_transform.0.weight"
    assert torch.equal(model.state_dict()[key], stock[key.replace("layer.1.", "layer.")])
    strict = Detector(plugin(every=False, fusion="SumPointFusion"))
    strict.load_state_dict(stock, strict=True)
