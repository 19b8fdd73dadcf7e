"""Helpers shared by the benchmarks: interleaved timing, tables, and the fused/single measurement.

The fused/single measurement runs in child processes, one per allocator setting (glibc's default
and :func:`geminifusion.runtime.keep_freed_memory`), because the allocator is a process-wide
setting that cannot be undone once large blocks have been served. Inside each child the compared
models are timed round by round, so a busy machine hurts all of them alike.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

import torch

ALLOCATORS = ("default", "kept")


def fastest(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Best wall time and best process CPU time (s) of each function, interleaved by round."""
    with torch.inference_mode():
        for fn in fns.values():
            fn()  # warm-up: allocator, kernels, cached layouts and folded weights
        best = {name: (float("inf"), float("inf")) for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                wall, cpu = time.perf_counter(), time.process_time()
                fn()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """Print a Markdown table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def without_fusion(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of a fused model whose blocks skip GeminiFusion: two streams, shared layers only."""
    from geminifusion.fusion import GeminiFusion

    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(getattr(module, "fusion", None), GeminiFusion):
            module.fusion = None
    return model


def fusion_inputs(model: torch.nn.Module, inputs: list[torch.Tensor]) -> list[tuple[int, int]]:
    """``(tokens per stream, channels)`` of every GeminiFusion call in one forward."""
    from geminifusion.fusion import GeminiFusion

    calls: list[tuple[int, int]] = []
    hooks = [
        m.register_forward_pre_hook(
            lambda m, args: calls.append((args[0][0].numel() // m.dim, m.dim))
        )
        for m in model.modules()
        if isinstance(m, GeminiFusion)
    ]
    with torch.inference_mode():
        model(inputs)
    for hook in hooks:
        hook.remove()
    return calls


def fusion_products(tokens: int, dim: int) -> Callable[[], None]:
    """The matrix products of one GeminiFusion call alone (7 C^2 per token and stream)."""
    s, d = torch.randn(tokens, dim), torch.randn(tokens, dim)
    wide = torch.randn(dim, 3 * dim)
    pair, weights = torch.randn(2, tokens, dim), torch.randn(2, dim, dim)

    def run() -> None:
        torch.mm(s, wide), torch.mm(d, wide)  # judger and values, from sum and difference
        torch.mm(pair.view(-1, dim), weights[0])  # judger's second layer
        for _ in range(3):  # query, key difference, output projection
            torch.bmm(pair, weights)

    return run


def products_seconds(calls: list[tuple[int, int]], repeats: int) -> float:
    """Time of the fusion's matrix products over all ``calls``: the floor of the fusion's cost."""
    total = 0.0
    for shape in sorted(set(calls)):
        run = fusion_products(*shape)
        total += fastest({"p": run}, repeats)["p"][0] * calls.count(shape)
    return total


def measure_ratio(arch: str, batch: int, size: tuple[int, int], repeats: int) -> dict:
    """Single, two-stream-unfused and fused forward times of ``arch``, and the products' floor."""
    import geminifusion as gf

    single = gf.build_segmentor(arch, num_classes=40, modalities=("rgb",)).eval()
    fused = gf.build_segmentor(arch, num_classes=40).eval()
    unfused = without_fusion(fused)
    rgb, depth = torch.randn(batch, 3, *size), torch.rand(batch, 3, *size)
    best = fastest(
        {
            "single": partial(single, [rgb]),
            "unfused": partial(unfused, [rgb, depth]),
            "fused": partial(fused, [rgb, depth]),
        },
        repeats,
    )
    out = {k: v[0] for k, v in best.items()} | {f"{k}_cpu": v[1] for k, v in best.items()}
    out["products"] = products_seconds(fusion_inputs(fused, [rgb, depth]), repeats)
    out["single_gflop"] = gflops(partial(single, [rgb]))
    out["fused_gflop"] = gflops(partial(fused, [rgb, depth]))
    return out


def gflops(fn: Callable[[], object]) -> float:
    """Floating-point operations (1e9) of the products, convolutions and attention in ``fn``."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as count:
        fn()
    return count.get_total_flops() / 1e9


def ratio_in_child(
    allocator: str, arch: str, batch: int, size: tuple[int, int], repeats: int, threads: int
) -> dict:
    """:func:`measure_ratio` in a fresh process with the given allocator setting."""
    spec = dict(allocator=allocator, arch=arch, batch=batch, size=size, repeats=repeats)
    spec["threads"] = threads
    out = subprocess.run(
        [sys.executable, __file__, json.dumps(spec)], capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratio_table(
    archs: list[str],
    batches: list[int],
    size: tuple[int, int],
    repeats: int,
    threads: int,
    rounds: int,
) -> None:
    """Fused / single-modality forward, under both allocator settings, children alternated."""
    rows = []
    for arch in archs:
        for batch in batches:
            results: dict[str, list[dict]] = {a: [] for a in ALLOCATORS}
            for _ in range(rounds):
                for allocator in ALLOCATORS:
                    results[allocator].append(
                        ratio_in_child(allocator, arch, batch, size, repeats, threads)
                    )
            for allocator in ALLOCATORS:
                best = {k: min(r[k] for r in results[allocator]) for k in results[allocator][0]}
                s, u, f, p = best["single"], best["unfused"], best["fused"], best["products"]
                rows.append([
                    arch, batch, allocator, f"{s:.3f}", f"{u:.3f}", f"{f:.3f}", f"{f / s:.2f}",
                    f"{best['fused_cpu'] / best['single_cpu']:.2f}",
                    f"{best['fused_gflop'] / best['single_gflop']:.2f}",
                    f"{p:.3f}", f"{(u + p) / s:.2f}",
                ])  # fmt: skip
    table(
        f"Fused (RGB + depth) vs single-modality forward, {size[0]}x{size[1]}, float32, eval, "
        f"{threads} threads (s; fastest of {repeats} x {rounds} rounds)",
        ["arch", "batch", "allocator", "single", "2 streams, no fusion", "fused",
         "fused / single", "same, CPU time", "same, GFLOP", "fusion products", "floor ratio"],
        rows,
    )  # fmt: skip
    print(
        "floor ratio = (2 streams without fusion + the fusion's matrix products alone) / single:"
        " what fused / single would be if the fusion cost nothing beyond its products."
    )


def _child(spec: dict) -> None:
    torch.set_num_threads(spec["threads"])
    if spec["allocator"] == "kept":
        from geminifusion.runtime import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("keep_freed_memory is not available here (needs Linux with glibc)")
    result = measure_ratio(spec["arch"], spec["batch"], tuple(spec["size"]), spec["repeats"])
    print(json.dumps(result))


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
