"""Speed and memory of the fused MiT segmentor, measured side by side in one process.

Tables:
1. fused two-modality forward / single-modality forward of the same backbone;
2. our fused model / the same model with its fusion swapped for the plain per-sample form;
3. the fusion layer alone at each mit_b3 stage size: against the plain form and the Mix-FFN;
4. peak RSS of one fused forward, each in a fresh process.

Timings interleave the compared runs and keep the fastest of several repeats, so a busy machine
hurts both sides alike. Run: ``python benchmarks/bench_model.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the plain fusion twin lives with the tests

import geminifusion as gf  # noqa: E402
from geminifusion.backbones.mit import MixFFN  # noqa: E402
from geminifusion.fusion import GeminiFusion  # noqa: E402
from plain_fusion import plain_fusion, swap_in_plain_fusion  # noqa: E402


def fastest(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each function, the functions interleaved round by round."""
    with torch.inference_mode():
        for fn in fns.values():
            fn()  # warm-up: allocator, kernels
        best = dict.fromkeys(fns, float("inf"))
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def model_ratios(archs: list[str], batches: list[int], size: tuple[int, int], repeats: int):
    rows = []
    for arch in archs:
        fused = gf.build_segmentor(arch, num_classes=40).eval()
        single = gf.build_segmentor(arch, num_classes=40, modalities=("rgb",)).eval()
        for batch in batches:
            rgb, depth = torch.randn(batch, 3, *size), torch.rand(batch, 3, *size)
            t = fastest(
                {"fused": partial(fused, [rgb, depth]), "single": partial(single, [rgb])},
                repeats,
            )
            ratio = t["fused"] / t["single"]
            rows.append([arch, batch, f"{t['single']:.3f}", f"{t['fused']:.3f}", f"{ratio:.2f}"])
    table(
        f"Fused (RGB + depth) vs single-modality forward, {size[0]}x{size[1]}, float32, eval",
        ["arch", "batch", "single s", "fused s", "fused / single"],
        rows,
    )


def plain_model_ratio(arch: str, batch: int, size: tuple[int, int], repeats: int) -> None:
    fast = gf.build_segmentor(arch, num_classes=40).eval()
    plain = gf.build_segmentor(arch, num_classes=40).eval()
    plain.load_state_dict(fast.state_dict())
    swap_in_plain_fusion(plain)
    x = [torch.randn(batch, 3, *size), torch.rand(batch, 3, *size)]
    t = fastest({"fast": partial(fast, x), "plain": partial(plain, x)}, repeats)
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
        t = fastest(
            {
                "ours": partial(fusion, x),
                "plain": partial(plain_fusion, fusion, x),
                "mlp": partial(mlp, x, height, width),
            },
            repeats,
        )
        rows.append(
            [
                f"{tokens}/{dim}",
                f"{t['plain'] * 1e3:.1f}",
                f"{t['ours'] * 1e3:.1f}",
                f"{t['mlp'] * 1e3:.1f}",
                f"{t['plain'] / t['ours']:.2f}x",
                f"{t['ours'] / t['mlp']:.2f}",
            ]
        )
    table(
        f"GeminiFusion layer alone, both directions, batch {batch}, float32 (times in ms)",
        ["tokens/C", "plain", "ours", "Mix-FFN", "plain / ours", "ours / Mix-FFN"],
        rows,
    )


_RSS_CHILD = """
import threading, time, torch, geminifusion as gf
torch.set_num_threads({threads})
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
    for label, mods, n in (("fused", "", 2), ("single", ', modalities=("rgb",)', 1)):
        code = _RSS_CHILD.format(
            threads=torch.get_num_threads(), arch=arch, mods=mods, batch=batch,
            h=size[0], w=size[1], n=n,
        )  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(out.stderr)
        before, after = (float(v) for v in out.stdout.split())
        rows.append([label, arch, batch, f"{before:.0f}", f"{after:.0f}"])
    table(
        f"RSS of one forward in a fresh process, sampled every 2 ms, {size[0]}x{size[1]} (MiB)",
        ["model", "arch", "batch", "before forward", "peak during forward"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--archs", nargs="*", help="architectures of the ratio table")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ratio", "plain", "layer", "rss"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {torch.get_num_threads()} in use")
    size = (64, 96) if args.quick else (480, 640)
    repeats = 1 if args.quick else args.repeats
    archs = args.archs or (["mit_b0"] if args.quick else ["mit_b0", "mit_b2", "mit_b3"])
    if "ratio" not in args.skip:
        model_ratios(archs, [1, 2], size, repeats)
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
