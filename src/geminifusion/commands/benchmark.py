"""``geminifusion benchmark``: parameters, GFLOPs, latency and memory, fused vs single input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from geminifusion.commands import options as opt

EPILOG = """\
examples:
  geminifusion benchmark mit_b3 --device cuda          (batch 1, 480x640, 100 + 300 runs)
  geminifusion benchmark mit_b0 --size 240x320 --json mit_b0.json
  geminifusion benchmark runs/nyudv2_mit_b3 --device cuda --amp bf16 --compile
"""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "benchmark",
        help="parameters, GFLOPs, latency, throughput and peak memory: fused vs single input",
        description="Measure a model (an architecture with random weights, or any weights "
        "geminifusion.load_model reads) and its single-modality twin (same architecture, first "
        "input only) side by side: parameters, GFLOPs per image (a multiply-add is 2 FLOPs), "
        "latency (median and 10th-90th percentile; CUDA events after torch.cuda.synchronize() "
        "on a GPU, perf_counter on the CPU), images per second and peak memory (each model in a "
        "fresh process), and the fused model in ONNX Runtime when it is installed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    opt.add_source(p)
    opt.add_input_shape(p)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    p.add_argument("--amp", choices=("bf16", "fp16"), help="autocast precision (default float32)")
    opt.add_compile(p)
    p.add_argument(
        "--warmup", type=opt.positive_int, help="untimed runs (default: 100 on CUDA, 3 on CPU)"
    )
    p.add_argument(
        "--iters", type=opt.positive_int, help="timed runs (default: 300 on CUDA, 10 on CPU)"
    )
    p.add_argument(
        "--no-onnxruntime",
        dest="onnxruntime",
        action="store_false",
        help="skip the ONNX Runtime row (which exports the model first)",
    )
    p.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip the peak-memory measurement (a fresh process per model)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    opt.add_overwrite(p, "--json file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geminifusion.benchmark import benchmark
    from geminifusion.engine.distributed import resolve_device
    from geminifusion.files import claim_file, write_file_bytes

    if args.json is not None:
        claim_file(
            args.json,
            "benchmark",
            replace=args.overwrite,
            option="--json",
            replace_flag="--overwrite",
            inputs=[args.source],
        )
    model = opt.load_source(args, device=resolve_device(args.device))
    result = benchmark(
        model,
        size=args.size,
        batch=args.batch,
        amp=args.amp,
        compile=args.compile,
        warmup=args.warmup,
        iters=args.iters,
        onnxruntime=args.onnxruntime,
        memory=args.memory,
        name=args.source,
    )
    print(result.table())
    if args.json is not None:
        text = json.dumps(result.to_dict(), indent=2) + "\n"
        write_file_bytes(args.json, text.encode("utf-8"), "benchmark")
        print(f"saved {args.json}")
    return 0
