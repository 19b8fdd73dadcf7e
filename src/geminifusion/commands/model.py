"""``geminifusion models``: the named architectures, their sizes, and a timed forward pass."""

from __future__ import annotations

import argparse
import time

from geminifusion.commands import options as opt


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the named architectures with their parameter counts",
        description="List every named architecture (build_segmentor names) and its size. "
        "With --forward, also time one forward pass on random input.",
    )
    parser.add_argument("names", nargs="*", help="only these architectures (default: all)")
    parser.add_argument("--num-classes", type=int, default=40)
    parser.add_argument(
        "--modalities",
        type=opt.names,
        default=("rgb", "depth"),
        help="comma-separated input names (default rgb,depth)",
    )
    parser.add_argument(
        "--forward",
        type=opt.size,
        metavar="HxW",
        help="time one forward pass at this size (batch 1, CPU/CUDA)",
    )
    parser.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    import torch

    from geminifusion.backbones import VARIANTS
    from geminifusion.segmentor import MIN_SIDE, build_segmentor

    modalities = args.modalities
    names = args.names or sorted(VARIANTS)
    size = args.forward
    if size is not None and min(size) < MIN_SIDE:
        raise ValueError(
            f"--forward: the smallest input is {MIN_SIDE}x{MIN_SIDE}, got {size[0]}x{size[1]}"
        )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    header = f"{'architecture':<24} {'parameters':>14}"
    print(header + (f" {'forward s':>10}" if size else ""))
    for name in names:
        if size is None:
            with torch.device("meta"):  # counting needs shapes only
                model = build_segmentor(name, args.num_classes, modalities)
            line = f"{name:<24} {sum(p.numel() for p in model.parameters()):>14,}"
        else:
            model = build_segmentor(name, args.num_classes, modalities).to(device).eval()
            x = [torch.randn(1, 3, *size, device=device) for _ in modalities]
            with torch.inference_mode():
                start = time.perf_counter()
                outputs = model(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
            count = sum(p.numel() for p in model.parameters())
            line = f"{name:<24} {count:>14,} {seconds:>10.3f}"
            line += f"   outputs {[tuple(o.shape) for o in outputs]}"
        print(line)
    return 0
