"""``geminifusion demo``: no data needed; fused vs RGB-only vs depth-only, trained and scored."""

from __future__ import annotations

import argparse
from pathlib import Path

from geminifusion.commands import options as opt


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="no data needed: train fused, RGB-only and depth-only models and compare them",
        description="Generate synthetic RGB-D scenes, train a fused GeminiFusion model and "
        "RGB-only and depth-only models of the same size on the CPU with the paper's recipe, "
        "evaluate them, print the table and write comparison.png (ground truth next to the three "
        "predictions). Exits with 1 when the fused model does not beat both by 10 mIoU points.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="default: runs/demo")
    p.add_argument(
        "--iters", type=opt.positive_int, help="training iterations per model (default 240)"
    )
    p.add_argument("--quick", action="store_true", help="a tiny run of seconds (for tests)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier demo in --out (only the files it wrote; nothing else is touched)",
    )
    p.add_argument(
        "--threads",
        type=opt.positive_int,
        default=1,
        help="CPU threads (default 1: small tensors, and robust on a shared CPU)",
    )
    opt.add_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from geminifusion.engine.demo import QUICK, DemoSettings, run_demo

    settings = QUICK if args.quick else DemoSettings()
    if args.iters is not None:
        settings = dataclasses.replace(settings, iters=args.iters)
    result = run_demo(
        args.out,
        settings,
        overwrite=args.overwrite,
        progress=opt.progress(args),
        threads=args.threads,
    )
    print()
    print(result.table)
    print(f"\nwrote {result.figure} and {args.out / 'demo.json'} in {result.seconds / 60:.1f} min")
    if args.quick:
        print("(--quick trains for seconds, to check the machinery: no margin is expected)")
        return 0
    return 0 if result.passed else 1
