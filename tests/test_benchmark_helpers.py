"""The benchmarks' shared helpers measure what their tables claim (benchmarks/common.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import geminifusion as gf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402

TINY = gf.MiTConfig(embed_dims=(16, 32, 40, 64), depths=(1, 2, 1, 1), num_heads=(1, 2, 5, 8))
SWIN = gf.SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7)


def test_fusion_inputs_lists_every_fusion_call_with_its_size():
    model = gf.build_segmentor(TINY, num_classes=3).eval()
    x = [torch.randn(2, 3, 64, 96), torch.rand(2, 3, 64, 96)]
    calls = common.fusion_inputs(model, x)
    # Tokens per stream (batch 2) at strides 4, 8, 16, 32; one call per block.
    assert calls == [(2 * 16 * 24, 16), (2 * 8 * 12, 32), (2 * 8 * 12, 32), (2 * 4 * 6, 40),
                     (2 * 2 * 3, 64)]  # fmt: skip


def test_without_fusion_removes_every_fusion_and_nothing_else():
    for config in (TINY, SWIN):
        model = gf.build_segmentor(config, num_classes=3).eval()
        bare = common.without_fusion(model)
        x = [torch.randn(1, 3, 64, 64), torch.rand(1, 3, 64, 64)]
        assert common.fusion_inputs(bare, x) == []
        assert len(common.fusion_inputs(model, x)) == sum(config.depths)  # original untouched
        with torch.no_grad():  # same shared weights: without fusion, each stream runs alone
            rgb_only = bare(x)[0]
            single = gf.build_segmentor(config, num_classes=3, modalities=("rgb",)).eval()
            state = {k: v for k, v in bare.state_dict().items() if "fusion" not in k}
            for key, value in single.state_dict().items():
                if value.shape != state[key].shape:  # per-modality norms: take the RGB row
                    state[key] = state[key][:1]
            single.load_state_dict({k: state[k] for k in single.state_dict()})
            torch.testing.assert_close(rgb_only, single(x[:1])[0], rtol=0, atol=1e-5)
