"""Speed and memory of the fused MiT segmentor, measured side by side.

Tables:
1. fused two-modality forward / single-modality forward of the same backbone, under glibc's
   default allocator and with ``geminifusion.runtime.keep_freed_memory`` (each in fresh child
   processes), with the same model minus its fusion and the fusion's matrix products alone;
2. our fused model / the same model with its fusion swapped for the plain per-sample form;
3. the fusion layer alone at each mit_b3 stage size: against the plain form, the Mix-FFN and its
   own matrix products;
4. peak RSS of one fused forward, each in a fresh process, under both allocator settings.

Timings interleave the compared runs and keep the fastest of several repeats, so a busy machine
hurts both sides alike. Run: ``python benchmarks/bench_model.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from functools import partial

import torch

import geminifusion as gf
from common import ALLOCATORS, fastest, fusion_products, ratio_table, table
from geminifusion.backbones.mit import MixFFN
from geminifusion.fusion import GeminiFusion
from geminifusion.runtime import keep_freed_memory
from geminifusion.testing import plain_fusion, swap_in_plain_fusion


def plain_model_ratio(arch: str, batch: int, size: tuple[int, int], repeats: int) -> None:
    fast = gf.build_segmentor(arch, num_classes=40).eval()
    plain = gf.build_segmentor(arch, num_classes=40).eval()
    plain.load_state_dict(fast.state_dict())
    swap_in_plain_fusion(plain)
    x = [torch.randn(batch, 3, *size), torch.rand(batch, 3, *size)]
    t = {
        k: v[0]
        for k, v in fastest({"fast": partial(fast, x), "plain": partial(plain, x)}, repeats).items()
    }
    table(
        f"Whole model, closed-form vs per-sample fusion, {arch}, batch {batch}, "
        f"{size[0]}x{size[1]}",
        ["arch", "batch", "plain fusion s", "ours s", "speed-up"],
        [[arch, batch, f"{t['plain']:.3f}", f"{t['fast']:.3f}", f"{t['plain'] / t['fast']:.2f}x"]],
    )


def fusion_layer(sizes: list[tuple[int, int, int]], batch: int, repeats: int) -> None:
    rows = []
    for dim, height, width in sizes:
        tokens = height * width
        fusion = GeminiFusion(dim).eval()
        mlp = MixFFN(dim, 4 * dim).eval()
        x = torch.randn(2, batch, tokens, dim)
        best = fastest(
            {
                "ours": partial(fusion, x),
                "plain": partial(plain_fusion, fusion, x),
                "mlp": partial(mlp, x, height, width),
                "products": fusion_products(batch * tokens, dim),
            },
            repeats,
        )
        t = {k: v[0] * 1e3 for k, v in best.items()}
        rows.append([
            f"{tokens}/{dim}", f"{t['plain']:.1f}", f"{t['ours']:.1f}", f"{t['mlp']:.1f}",
            f"{t['products']:.1f}", f"{t['plain'] / t['ours']:.2f}x",
            f"{t['ours'] / t['mlp']:.2f}", f"{t['ours'] / t['products']:.2f}",
        ])  # fmt: skip
    table(
        f"GeminiFusion layer alone, both directions, batch {batch}, float32 (times in ms)",
        ["tokens/C", "plain", "ours", "Mix-FFN", "its products", "plain / ours",
         "ours / Mix-FFN", "ours / products"],
        rows,
    )  # fmt: skip


_RSS_CHILD = """
import threading, time, torch, geminifusion as gf
from geminifusion.runtime import keep_freed_memory
torch.set_num_threads({threads})
if "{allocator}" == "kept":
    keep_freed_memory()
model = gf.build_segmentor("{arch}", num_classes=40{mods}).eval()
x = [torch.randn({batch}, 3, {h}, {w}) for _ in range({n})]

def rss():  # current resident set, MiB (ru_maxrss would keep the peak of model construction)
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

before, peak, done = rss(), [0.0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
thread = threading.Thread(target=sample)
thread.start()
with torch.inference_mode():
    model(x)
done.set()
thread.join()
print(before, max(peak[0], rss()))
"""


def peak_rss(arch: str, batch: int, size: tuple[int, int]) -> None:
    rows = []
    for allocator in ALLOCATORS:
        for label, mods, n in (("fused", "", 2), ("single", ', modalities=("rgb",)', 1)):
            code = _RSS_CHILD.format(
                threads=torch.get_num_threads(), arch=arch, mods=mods, batch=batch,
                h=size[0], w=size[1], n=n, allocator=allocator,
            )  # fmt: skip
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(out.stderr)
            before, after = (float(v) for v in out.stdout.split())
            rows.append([label, arch, batch, allocator, f"{before:.0f}", f"{after:.0f}"])
    table(
        f"RSS of one forward in a fresh process, sampled every 2 ms, {size[0]}x{size[1]} (MiB)",
        ["model", "arch", "batch", "allocator", "before forward", "peak during forward"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="child processes per allocator")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--archs", nargs="*", help="architectures of the ratio table")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ratio", "plain", "layer", "rss"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {torch.get_num_threads()} in use")
    keep_freed_memory()  # tables 2 and 3 run in this process; table 1 compares both settings
    size = (64, 96) if args.quick else (480, 640)
    repeats = 1 if args.quick else args.repeats
    archs = args.archs or (["mit_b0"] if args.quick else ["mit_b0", "mit_b2", "mit_b3"])
    if "ratio" not in args.skip:
        ratio_table(archs, [1, 2], size, repeats, args.threads, 1 if args.quick else args.rounds)
    if "plain" not in args.skip:
        plain_model_ratio("mit_b0" if args.quick else "mit_b3", 2, size, repeats)
    if "layer" not in args.skip:
        sizes = [(64, 120, 160), (128, 60, 80), (320, 30, 40), (512, 15, 20)]  # mit_b3 stages
        if args.quick:
            sizes = [(c, max(h // 8, 2), max(w // 8, 2)) for c, h, w in sizes]
        fusion_layer(sizes, 2, repeats)
    if "rss" not in args.skip:
        peak_rss("mit_b0" if args.quick else "mit_b3", 1, size)


if __name__ == "__main__":
    main()
