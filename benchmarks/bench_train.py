"""Training-step time and activation memory: plain autograd, the lean step, lean + checkpointing.

Each configuration runs in its own process (memory high-water marks are per process, and the
allocator setting is process-wide), under glibc's default allocator and under
``geminifusion.runtime.keep_freed_memory``. One step is the recipe's: frozen BatchNorm, the
summed loss of every output at label size, backward, AdamW over the paper's groups.

Memory on CPU is the peak RSS during the timed steps minus the RSS after building the model and
the optimiser (whose moments are allocated before the baseline is read), so it counts the
activations, the gradients and everything a step allocates on top. On CUDA it is
``torch.cuda.max_memory_allocated`` minus the memory allocated after the build.

    python benchmarks/bench_train.py                    # mit_b0, mit_b3, swin_tiny; ~20 min
    python benchmarks/bench_train.py --archs mit_b0 --steps 2
    python benchmarks/bench_train.py --large            # + swin_large_window12, batch 1
    python benchmarks/bench_train.py --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import ALLOCATORS, table

MODES = {
    "plain": "autograd's own bookkeeping (geminifusion.testing.plain.plain_autograd)",
    "lean": "the default step",
    "lean + ckpt": "the default step with activation_checkpointing=True",
}
GPU_SIZES_GB = (24, 40, 80)
# "returned": glibc with a fixed 1 MiB mmap threshold, so that every freed block above it goes
# back to the kernel at once. glibc's default raises the threshold (up to 32 MiB) each time it
# frees a large block, after which such blocks come from the heap and freed ones stay resident:
# the RSS then counts memory no tensor holds. This setting shows the tensors' own peak.
CPU_ALLOCATORS = (*ALLOCATORS, "returned")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def measure(spec: dict) -> dict:
    """One configuration, in this process: median step time and activation memory (MiB)."""
    import geminifusion as gf
    from geminifusion.engine.losses import segmentation_loss
    from geminifusion.engine.schedule import build_optimizer
    from geminifusion.engine.train import freeze_batchnorm
    from geminifusion.testing.plain import plain_autograd

    torch.set_num_threads(spec["threads"])
    if spec["allocator"] == "kept":
        from geminifusion.runtime import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("keep_freed_memory is not available here (needs Linux with glibc)")
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = gf.build_segmentor(
        spec["arch"], num_classes=40, activation_checkpointing=spec["mode"] == "lean + ckpt"
    ).to(device)
    model.train()
    freeze_batchnorm(model)
    optimizer, _ = build_optimizer(model, 6e-5)
    rates = [group["lr"] for group in optimizer.param_groups]
    for p in model.parameters():  # allocate the AdamW moments before the baseline, lr 0
        p.grad = torch.zeros_like(p)
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for group, rate in zip(optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    height, width = spec["size"]
    shape = (spec["batch"], 3, height, width)
    inputs = [torch.randn(shape, device=device), torch.rand(shape, device=device)]
    label = torch.randint(0, 40, (spec["batch"], height, width), device=device)
    label[:, : height // 8] = 255
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_kib("VmRSS") * 1024
        _reset_peak()

    def step() -> float:
        start = time.perf_counter()
        loss, _ = segmentation_loss(model(inputs), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    with plain_autograd() if spec["mode"] == "plain" else contextlib.nullcontext():
        times = [step() for _ in range(spec["steps"])]
    peak = torch.cuda.max_memory_allocated() if cuda else _rss_kib("VmHWM") * 1024
    return {
        "seconds": statistics.median(times[1:] if len(times) > 1 else times),
        "activation_mib": (peak - base) / 2**20,
        "state_mib": base / 2**20,
        "params": sum(p.numel() for p in model.parameters()),
    }


def in_child(spec: dict) -> dict:
    env = dict(os.environ)
    if spec["allocator"] == "returned":
        env["MALLOC_MMAP_THRESHOLD_"] = str(2**20)
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode:
        raise RuntimeError(f"benchmark child failed ({spec}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def batch_that_fits(result: dict, batch: int, gigabytes: int) -> int:
    """The batch whose activations fit beside the model state on a GPU of that size (estimate).

    Model state (weights, gradients, AdamW moments: 16 bytes a parameter in float32) plus 1 GiB
    for the CUDA context and workspaces; activations scale linearly with the batch.
    """
    fixed = 16 * result["params"] + 2**30
    per_sample = result["activation_mib"] * 2**20 / batch
    return max(0, int((gigabytes * 1e9 - fixed) // per_sample))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["mit_b0", "mit_b3", "swin_tiny"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640])
    parser.add_argument("--steps", type=int, default=3, help="steps per process (first untimed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--allocators", nargs="+", default=list(CPU_ALLOCATORS))
    parser.add_argument("--large", action="store_true", help="add swin_large_window12, batch 1")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    allocators = args.allocators if args.device == "cpu" else ["cuda"]
    runs = [(arch, args.batch, list(MODES)) for arch in args.archs]
    if args.large:
        runs.append(("swin_large_window12", 1, ["lean + ckpt"]))
    rows, fits = [], []
    for arch, batch, modes in runs:
        steps = args.steps if len(modes) > 1 else min(args.steps, 2)  # the large model: 1 timed
        for allocator in allocators:
            results = {}
            for mode in modes:
                spec = dict(arch=arch, batch=batch, size=args.size, mode=mode, steps=steps)
                spec.update(threads=args.threads, device=args.device, allocator=allocator)
                results[mode] = in_child(spec)
                print(f"{arch} {allocator} {mode}: {results[mode]}", file=sys.stderr)
            plain = results.get("plain")
            for mode, r in results.items():
                rows.append([
                    arch, batch, allocator, mode, f"{r['seconds']:.2f}",
                    f"{r['seconds'] / plain['seconds']:.2f}" if plain else "-",
                    f"{r['activation_mib']:.0f}",
                    f"{r['activation_mib'] / plain['activation_mib']:.2f}" if plain else "-",
                ])  # fmt: skip
            # The tensors' own peak ("returned") is what a GPU's caching allocator has to serve.
            if allocator == ("returned" if "returned" in allocators else allocators[0]):
                last = results[modes[-1]]
                fits.append(
                    [arch, modes[-1], *(batch_that_fits(last, batch, g) for g in GPU_SIZES_GB)]
                )
    size = f"{args.size[0]}x{args.size[1]}"
    table(
        f"Training step, {size}, float32, {args.device}, {args.threads} threads "
        f"(median of {args.steps - 1} steps after one; memory in MiB)",
        ["arch", "batch", "allocator", "step", "s", "x plain", "activation MiB", "x plain"],
        rows,
    )
    table(
        f"Largest batch at {size} from the measured bytes (model state + 1 GiB + activations; "
        "'returned' allocator where measured)",
        ["arch", "step", *(f"{g} GB" for g in GPU_SIZES_GB)],
        fits,
    )
    print(f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main()
