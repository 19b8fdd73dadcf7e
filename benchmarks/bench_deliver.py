"""Cost of extra sensors in the DeLiVER-style model: forward time against a single-modality model.

The single-modality baseline is the same MiT size and the same head (512 wide, logits at the input
size), i.e. a plain SegFormer as the DeLiVER branch builds it. Every fused model keeps two streams
in its blocks (RGB and the merged extras), so going from 2 to 4 inputs adds only the patch
embeddings of the extra inputs, the score nets and the merge.

Timings interleave the compared models and keep the fastest of several repeats, so a busy machine
hurts all of them alike; the process CPU time is reported beside the wall time.
Run: ``python benchmarks/bench_deliver.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

import geminifusion as gf
from common import fastest

MODALITIES = ("rgb", "depth", "event", "lidar")


def build(size_name: str, count: int, num_classes: int) -> torch.nn.Module:
    if count == 1:
        model = gf.build_segmentor(
            f"mit_{size_name}", num_classes, modalities=("rgb",), head_embed_dim=512
        )
        model.backbone.upsample_logits = True  # the DeLiVER head's output convention
        return model.eval()
    return gf.build_segmentor(f"deliver_mit_{size_name}", num_classes, MODALITIES[:count]).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="mit_b0 at 128x128: a smoke run")
    parser.add_argument("--arch", default="b2", help="MiT size: b0..b5 (default b2)")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    arch, size = ("b0", (128, 128)) if args.quick else (args.arch, tuple(args.size))
    repeats = 1 if args.quick else args.repeats
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, eval")

    gen = torch.Generator().manual_seed(0)
    inputs = [torch.rand(args.batch, 3, *size, generator=gen) for _ in MODALITIES]
    models = {count: build(arch, count, 25) for count in (1, 2, 3, 4)}
    times = fastest({c: partial(m, inputs[:c]) for c, m in models.items()}, repeats)

    print(f"\nmit_{arch}, batch {args.batch}, {size[0]}x{size[1]}, 25 classes")
    print("| inputs | modalities | wall s | / single | CPU s | / single |")
    print("|---|---|---|---|---|---|")
    (wall1, cpu1) = times[1]
    for count, (wall, cpu) in times.items():
        names = ", ".join(MODALITIES[:count])
        print(
            f"| {count} | {names} | {wall:.3f} | {wall / wall1:.2f} | "
            f"{cpu:.3f} | {cpu / cpu1:.2f} |"
        )


if __name__ == "__main__":
    main()
