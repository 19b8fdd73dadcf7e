"""The fused model's forward three ways: PyTorch eager, ``torch.compile``, ONNX Runtime.

For each architecture (40 classes, random weights, RGB + depth), one process builds the model,
compiles it (the first call's time is the compilation), exports it to ONNX (a temporary file)
and then times the three side by side with ``geminifusion.benchmark.time_calls``, one call
each per round. ONNX Runtime gets as many intra-op threads as torch, told not to spin between
runs (spinning workers would slow the PyTorch runs timed in between). Prints a Markdown table
with the date, the machine, the load and the torch version; ``--json`` keeps the numbers.

Run: ``python benchmarks/bench_deploy.py --archs mit_b0 mit_b3 swin_tiny --size 480x640``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
from pathlib import Path

import torch

import geminifusion as gf
from common import table
from geminifusion.benchmark import WallClock, latency_summary, machine_name, time_calls
from geminifusion.export import export_onnx, onnx_names, onnx_session


def measure(arch: str, size: tuple[int, int], warmup: int, iters: int, compile: bool) -> dict:
    model = gf.build_segmentor(arch, num_classes=40).eval()
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, 3, *size, generator=gen) for _ in model.modalities]
    calls = {}

    def forward(net):
        def run():
            with torch.no_grad():
                return net(inputs)

        return run

    calls["eager"] = forward(model)
    if compile:
        calls["compiled"] = forward(torch.compile(model))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(model, path, size=size, check=False)
        session = onnx_session(path, threads=torch.get_num_threads(), spinning=False)
    feed = {n: x.numpy() for n, x in zip(onnx_names(model)[0], inputs, strict=True)}
    calls["onnxruntime"] = lambda: session.run(None, feed)
    clocks = {k: WallClock() for k in calls}
    times, first = time_calls(calls, clocks, warmup, iters)
    return {
        k: {**latency_summary(times[k], 1), "first_call_s": first[k], "times_ms": times[k]}
        for k in calls
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["mit_b0", "mit_b3", "swin_tiny"])
    parser.add_argument("--size", default="480x640")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(int(s) for s in args.size.split("x"))
    results = {}
    for arch in args.archs:
        results[arch] = measure(arch, size, args.warmup, args.iters, args.compile)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    rows = []
    for arch, r in results.items():
        eager = r["eager"]["latency_ms"]
        row = [arch, f"{eager:.0f}"]
        if "compiled" in r:
            c = r["compiled"]
            row += [f"{c['latency_ms']:.0f}", f"{eager / c['latency_ms']:.2f}x"]
            row += [f"{c['first_call_s']:.0f}"]
        else:
            row += ["-", "-", "-"]
        o = r["onnxruntime"]["latency_ms"]
        rows.append(row + [f"{o:.0f}", f"{eager / o:.2f}x"])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    table(
        f"Fused forward, batch 1, {size[0]}x{size[1]}, float32, {args.threads} threads, median "
        f"of {args.iters} runs after {args.warmup} warm-up (ms); {datetime.date.today()}, "
        f"{machine_name()}, torch {torch.__version__}, load average {load}",
        ["arch", "eager", "compiled", "speed-up", "compile s", "ONNX Runtime", "speed-up"],
        rows,
    )


if __name__ == "__main__":
    main()
