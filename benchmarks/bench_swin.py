"""Speed of the fused Swin segmentor and of its window attention, measured side by side.

Tables:
1. swin_tiny forward: fused RGB + depth, the same two streams with the fusion removed, and a
   single modality (time and operation count), under both allocator settings, each in fresh
   child processes (``common.ratio_table``); the ratios say what fusing costs over running one
   modality;
2. window attention alone at the swin_tiny stage sizes: our layout through SDPA, the same layout
   through a plain masked softmax, and the reference's form (pad, roll, partition, one softmax
   over all windows with the full shift mask, reverse, roll back, crop).

Timings interleave the compared runs and keep the fastest of several repeats (wall clock and
process CPU time), so a busy machine hurts all sides alike; table 1 also counts the
floating-point operations, which no machine load changes.
Run: ``python benchmarks/bench_swin.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from common import fastest, ratio_table, table
from geminifusion.backbones.swin import WindowAttention
from geminifusion.runtime import keep_freed_memory
from geminifusion.testing import plain_window_attention


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
    parser.add_argument("--rounds", type=int, default=2, help="child processes per allocator")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["ratio", "attention"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    keep_freed_memory()  # table 2 runs in this process; table 1 compares both settings
    size = (64, 96) if args.quick else (480, 640)
    repeats = 1 if args.quick else args.repeats
    if "ratio" not in args.skip:
        rounds = 1 if args.quick else args.rounds
        ratio_table(["swin_tiny"], [1, 2], size, repeats, args.threads, rounds)
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
