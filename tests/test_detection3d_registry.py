"""Optional MMDetection3D registration, import hygiene, and the shipped MVX-Net config."""

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from geminifusion.detection3d import GeminiDynamicVFE, GeminiPointFusion, register_mmdet3d_modules
from geminifusion.detection3d.registry import MMDET3D_NAMES

CONFIG = (
    Path(__file__).resolve().parents[1]
    / "configs/mmdet3d/geminifusion_mvxnet_fpn_dv_second_secfpn_8xb2-80e_kitti-3d-3class.py"
)


class FakeRegistry:
    """The two members of MMEngine's ``Registry`` that registration uses."""

    def __init__(self, taken: dict | None = None) -> None:
        self.module_dict = dict(taken or {})

    def register_module(self, name, module, force=False):
        assert force or name not in self.module_dict
        self.module_dict[name] = module
        return module


def test_registers_every_name_once_and_keeps_taken_names():
    registry = FakeRegistry({"Gemini_PointFusion": object})
    assert register_mmdet3d_modules(registry)
    assert register_mmdet3d_modules(registry)  # a second import is harmless
    assert registry.module_dict["GeminiPointFusion"] is GeminiPointFusion
    assert registry.module_dict["GeminiDynamicVFE"] is GeminiDynamicVFE
    assert registry.module_dict["DynamicVFE_modified"] is GeminiDynamicVFE
    assert registry.module_dict["Gemini_PointFusion"] is object
    assert set(registry.module_dict) == set(MMDET3D_NAMES)


@pytest.mark.skipif(importlib.util.find_spec("mmdet3d") is not None, reason="mmdet3d installed")
def test_without_mmdet3d_nothing_is_registered():
    assert register_mmdet3d_modules() is False


def test_import_pulls_no_mmdet3d_and_no_segmentation_code():
    code = (
        "import sys, json; before = set(sys.modules);"
        "import geminifusion.detection3d;"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    added = json.loads(out.stdout)
    ours = [m for m in added if m.startswith("geminifusion")]
    shared = {"geminifusion", "geminifusion._version", "geminifusion.fusion", "geminifusion.layers"}
    assert all(m.startswith("geminifusion.detection3d") or m in shared for m in ours), ours
    if importlib.util.find_spec("mmdet3d") is None:
        assert not [m for m in added if m.split(".")[0] in ("mmdet3d", "mmcv", "mmengine", "mmdet")]


def read_config() -> dict:
    """The config's top-level assignments, evaluated without MMEngine (it is plain Python)."""
    tree = ast.parse(CONFIG.read_text())
    namespace: dict = {}
    exec(compile(tree, str(CONFIG), "exec"), {}, namespace)
    return namespace


def test_shipped_config_swaps_the_two_names_and_builds():
    cfg = read_config()
    assert cfg["_base_"] == [
        "mmdet3d::mvxnet/mvxnet_fpn_dv_second_secfpn_8xb2-80e_kitti-3d-3class.py"
    ]
    assert cfg["custom_imports"]["imports"] == ["geminifusion.detection3d"]
    encoder = dict(cfg["model"]["pts_voxel_encoder"])
    assert encoder.pop("type") == "GeminiDynamicVFE" and encoder.pop("_delete_") is True
    assert encoder["fusion_layer"]["type"] == "GeminiPointFusion"
    module = GeminiDynamicVFE(**encoder)
    assert all(isinstance(m, GeminiPointFusion) for m in module.fusion_layer)
    assert module.out_channels == 128  # SparseEncoder(in_channels=128) of the base config
    assert [len(m.lateral_convs) for m in module.fusion_layer] == [5, 5]
