"""Speed of the fused Swin segmentor and of its window attention, measured side by side.

Tables:
1. swin_tiny forward: fused RGB + depth, the same two streams with the fusion removed, and a
   single modality (time and operation count); the ratios say what fusing costs over running
   one modality;
2. window attention alone at the swin_tiny stage sizes: our layout through SDPA, the same layout
   through a plain masked softmax, and the reference's form (pad, roll, partition, one softmax
   over all windows with the full shift mask, reverse, roll back, crop).

Timings interleave the compared runs and keep the fastest of several repeats (wall clock and
process CPU time), so a busy machine hurts all sides alike; table 1 also counts the
floating-point operations, which no machine load changes. On a shared machine, run with
``OMP_WAIT_POLICY=PASSIVE`` so that OpenMP threads waiting for a core do not spin (and count).
Run: ``python benchmarks/bench_swin.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the reference-form twin lives with the tests

import geminifusion as gf  # noqa: E402
from geminifusion.backbones.swin import WindowAttention  # noqa: E402
from test_swin import plain_window_attention  # noqa: E402


def fastest(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds of each function, the functions interleaved round by round."""
    with torch.inference_mode():
        for fn in fns.values():
            fn()  # warm-up: allocator, kernels, cached window layouts
        best = {name: (float("inf"), float("inf")) for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                wall, cpu = time.perf_counter(), time.process_time()
                fn()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def _addmm_inplace_flops(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def gflops(fn: Callable[[], object]) -> float:
    """Floating-point operations of the matrix products, convolutions and attention in ``fn``."""
    # FlopCounterMode knows addmm but not its in-place form, which the fusion uses.
    mapping = {torch.ops.aten.addmm_: _addmm_inplace_flops}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as count:
        fn()
    return count.get_total_flops() / 1e9


def without_fusion(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of a fused model whose blocks skip GeminiFusion (two streams, shared layers)."""
    model = copy.deepcopy(model)
    for stage in model.backbone.layers:
        for block in stage.blocks:
            block.fusion = None
    return model


def model_ratios(arch: str, batches: list[int], size: tuple[int, int], repeats: int) -> None:
    fused = gf.build_segmentor(arch, num_classes=40).eval()
    unfused = without_fusion(fused)
    single = gf.build_segmentor(arch, num_classes=40, modalities=("rgb",)).eval()
    rows = []
    for batch in batches:
        rgb, depth = torch.randn(batch, 3, *size), torch.rand(batch, 3, *size)
        t = fastest(
            {
                "single": partial(single, [rgb]),
                "fused": partial(fused, [rgb, depth]),
                "unfused": partial(unfused, [rgb, depth]),
            },
            repeats,
        )
        flops = {
            "single": gflops(partial(single, [rgb])),
            "fused": gflops(partial(fused, [rgb, depth])),
            "unfused": gflops(partial(unfused, [rgb, depth])),
        }
        measures = {
            "wall s": {k: v[0] for k, v in t.items()},
            "CPU s": {k: v[1] for k, v in t.items()},
            "GFLOP": flops,
        }
        for measure, m in measures.items():
            digits = 1 if measure == "GFLOP" else 3
            s, f, u = m["single"], m["fused"], m["unfused"]
            rows.append(
                [
                    arch,
                    batch,
                    measure,
                    f"{s:.{digits}f}",
                    f"{u:.{digits}f}",
                    f"{f:.{digits}f}",
                    f"{f / s:.2f}",
                    f"{(f - u) / f:.0%}",
                ]
            )
    table(
        f"Fused (RGB + depth) vs single-modality forward, {size[0]}x{size[1]}, float32, eval",
        ["arch", "batch", "measure", "single", "2 streams, no fusion", "fused",
         "fused / single", "fusion share"],
        rows,
    )  # fmt: skip


def window_attention(
    stages: list[tuple[int, int, int, int]], window: int, batch: int, repeats: int
) -> None:
    rows = []
    for dim, heads, height, width in stages:
        x = torch.randn(2 * batch, height, width, dim)  # two modalities of `batch` samples
        for shift in (0, window // 2):
            attn = WindowAttention(dim, heads, window, shift).eval()
            layout = attn.layout(x)

            def ours(sdpa: bool, attn=attn, layout=layout, x=x) -> torch.Tensor:
                attn.use_sdpa = sdpa
                return attn(x, layout)

            t = fastest(
                {
                    "sdpa": partial(ours, True),
                    "plain": partial(ours, False),
                    "reference": partial(plain_window_attention, attn, x),
                },
                repeats,
            )
            wall = {k: v[0] * 1e3 for k, v in t.items()}
            rows.append(
                [
                    f"{height}x{width}/{dim}",
                    shift,
                    f"{wall['reference']:.1f}",
                    f"{wall['plain']:.1f}",
                    f"{wall['sdpa']:.1f}",
                    f"{wall['plain'] / wall['sdpa']:.2f}x",
                    f"{wall['reference'] / wall['sdpa']:.2f}x",
                ]
            )
    table(
        f"Window attention (incl. qkv and projection), window {window}, {2 * batch} maps, "
        "float32, wall ms",
        ["tokens/C", "shift", "reference form", "plain softmax", "SDPA",
         "plain / SDPA", "reference / SDPA"],
        rows,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["ratio", "attention"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    size = (64, 96) if args.quick else (480, 640)
    repeats = 1 if args.quick else args.repeats
    if "ratio" not in args.skip:
        model_ratios("swin_tiny", [1, 2], size, repeats)
    if "attention" not in args.skip:
        h, w = -(-size[0] // 4), -(-size[1] // 4)
        stages = []
        for s, (dim, heads) in enumerate(((96, 3), (192, 6), (384, 12), (768, 24))):
            stages.append((dim, heads, h, w))
            h, w = -(-h // 2), -(-w // 2)
            if args.quick and s == 1:
                break
        window_attention(stages, 7, 1, repeats)


if __name__ == "__main__":
    main()
