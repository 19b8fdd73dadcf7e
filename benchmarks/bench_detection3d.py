"""LiDAR + camera fusion costs: the closed-form point fusion, the voxel scatter, whole encoders.

1. The per-point GeminiFusion in closed form against the reference's formulation (two
   ``nn.MultiheadAttention`` calls over a two-slot key sequence, batched over the points).
2. Grouping points into voxels once (``assign_voxels``) against regrouping for every reduction,
   as one ``DynamicScatter`` call per reduction does.
3. The KITTI encoders: MVX-Net's (sum fusion after the last VFE layer) against GeminiFusion's
   (after every layer), with 5 FPN levels of 256 channels, forward only.

Timings interleave the compared functions and keep the fastest of several repeats, so a busy
machine hurts all of them alike. Run: ``python benchmarks/bench_detection3d.py`` (``--quick``
for a smoke run).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

import common
from geminifusion.detection3d import (
    GeminiDynamicVFE,
    assign_voxels,
    dynamic_voxelize,
    scatter_to_voxels,
)
from geminifusion.fusion import GeminiFusion
from geminifusion.testing.plain import attention_modules

VOXEL, RANGE = (0.05, 0.05, 0.1), (0, -40, -3, 70.4, 40, 1)


def fastest(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each function, interleaved round by round (``common.fastest``)."""
    return {name: wall for name, (wall, _) in common.fastest(fns, repeats).items()}


def two_slot_attention(fusion: GeminiFusion) -> Callable[[torch.Tensor], torch.Tensor]:
    """The reference's formulation with the fusion's weights: MHA over [noise, relation] keys."""
    mhas = attention_modules(fusion)

    def run(x: torch.Tensor) -> torch.Tensor:
        out = []
        for d in range(2):
            own, other = x[d].unsqueeze(0), x[1 - d].unsqueeze(0)  # (1, N, C): one query each
            hidden = F.gelu(fusion.judger_fc1(torch.cat([own, other], dim=-1)))
            r = torch.softmax(fusion.judger_fc2(hidden), dim=-1)
            keys = torch.cat([own + fusion.k_noise[d], own * r])
            values = torch.cat([own + fusion.v_noise[d], other])
            out.append(own + mhas[d](own, keys, values, need_weights=False)[0])
        return torch.cat(out)

    return run


def encoder(fusion: str, every: bool) -> GeminiDynamicVFE:
    layer = dict(type=fusion, img_channels=256, pts_channels=64, mid_channels=128)
    layer.update(out_channels=128, img_levels=[0, 1, 2, 3, 4], align_corners=False)
    return GeminiDynamicVFE(
        4, [64, 64], False, True, True, VOXEL, RANGE, fusion_layer=layer, fuse_every_layer=every
    ).eval()


def kitti_like_batch(points: int, batch: int, image: tuple[int, int]):
    g = torch.Generator().manual_seed(0)
    scale, shift = torch.tensor([60.0, 50, 3.5, 1]), torch.tensor([5.0, -25, -2.5, 0])
    pts = [torch.rand(points, 4, generator=g) * scale + shift for _ in range(batch)]
    coors = torch.cat(
        [F.pad(dynamic_voxelize(p, VOXEL, RANGE), (1, 0), value=b) for b, p in enumerate(pts)]
    )
    h, w = image
    lidar2img = [[w / 2, -w / 2, 0, 0], [h / 2, 0, -w / 2, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    metas = [dict(lidar2img=lidar2img, img_shape=image, input_shape=image)] * batch
    img = [torch.randn(batch, 256, h // s, w // s, generator=g) for s in (4, 8, 16, 32, 64)]
    return torch.cat(pts), coors, pts, img, metas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--points", type=int, default=20000, help="points per sample")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    points, image = (2000, (96, 320)) if args.quick else (args.points, (384, 1248))
    n = points * args.batch
    print(f"{args.batch} x {points} points, image {image[0]}x{image[1]}, {args.threads} threads")

    fusion = GeminiFusion(128, 8).eval()
    x = torch.randn(2, n, 128)
    reference = two_slot_attention(fusion)
    torch.testing.assert_close(fusion(x), reference(x), rtol=1e-4, atol=1e-4)
    t = fastest({"closed form": lambda: fusion(x), "two-slot MHA": lambda: reference(x)}, 5)
    print(
        f"point fusion, {n} points x 128 ch: "
        + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.items())
    )

    features, coors, pts, img, metas = kitti_like_batch(points, args.batch, image)
    feats = torch.randn(n, 64)

    def grouped_once():
        voxels = assign_voxels(coors)
        for reduce in ("mean", "max", "max"):
            scatter_to_voxels(feats, voxels, reduce)

    def regrouped():
        for reduce in ("mean", "max", "max"):
            scatter_to_voxels(feats, assign_voxels(coors), reduce)

    t = fastest({"grouped once": grouped_once, "regrouped per call": regrouped}, 5)
    print("3 voxel reductions: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.items()))

    mvxnet, gemini = encoder("SumPointFusion", False), encoder("GeminiPointFusion", True)
    sizes = {
        name: sum(p.numel() for p in m.parameters())
        for name, m in [("mvx", mvxnet), ("gemini", gemini)]
    }
    t = fastest(
        {
            "MVX-Net encoder": lambda: mvxnet(features, coors, pts, img, metas),
            "GeminiFusion encoder": lambda: gemini(features, coors, pts, img, metas),
        },
        args.repeats,
    )
    print(
        f"voxel encoders ({sizes['mvx'] / 1e6:.2f}M vs {sizes['gemini'] / 1e6:.2f}M params): "
        + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in t.items())
    )


if __name__ == "__main__":
    main()
