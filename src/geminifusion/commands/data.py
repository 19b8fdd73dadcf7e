"""Data commands: ``geminifusion synth`` and ``geminifusion check-data``."""

from __future__ import annotations

import argparse

from geminifusion.commands import options as opt

DATASET_NAMES = ("nyudv2", "sunrgbd", "deliver", "folder", "synthetic")


def _names(values: list[str] | None) -> tuple[str, ...] | None:
    """Accept ``--modalities rgb depth`` as well as ``--modalities rgb,depth``."""
    if not values:
        return None
    return tuple(n for v in values for n in v.split(",") if n)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a small synthetic RGB-D (or DeLiVER-layout) dataset",
        description="Write synthetic scenes whose classes need both colour and depth: pairs "
        "of classes share a colour and differ in distance, or share a distance and differ in "
        "colour. NYUDv2 layout (rgb/, depth/, masks/, train.txt, val.txt, classes.json).",
    )
    p.add_argument("out", help="output folder (new or empty)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a set written here before (only its files; nothing else is touched)",
    )
    p.add_argument("--num", type=int, default=200, help="number of samples (default 200)")
    p.add_argument("--size", type=opt.size, default=(120, 160), help="HxW (default 120x160)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share for val.txt (0.2)")
    p.add_argument(
        "--layout",
        choices=("nyudv2", "deliver"),
        default="nyudv2",
        help="nyudv2: RGB-D; deliver: RGB, depth, event, LiDAR in the DeLiVER layout",
    )
    p.set_defaults(func=run_synth)

    p = subparsers.add_parser(
        "check-data",
        help="check every file of a dataset and summarise it",
        description="Decode every sample of a dataset split, list every problem (missing or "
        "corrupt files, size mismatches, label values outside the classes) and print a "
        "summary. Exits with 1 if any sample cannot be used. Never writes to the dataset.",
    )
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--split", default=None, help="split (default: train; folder: all files)")
    p.add_argument("--modalities", nargs="+", default=None, help="e.g. rgb depth (or rgb,depth)")
    p.add_argument(
        "--depth-format",
        choices=("png8", "png16_mm", "hha"),
        default=None,
        help="how depth is stored (default png8)",
    )
    p.add_argument("--depth-max-m", type=float, default=None, help="png16_mm: metres mapped to 1")
    p.add_argument("--conditions", nargs="+", default=None, help="deliver: e.g. sun night")
    p.add_argument("--num-classes", type=int, default=None, help="folder: number of classes")
    p.add_argument("--reduce-zero-label", action="store_true", help="folder: labels are 1..K")
    p.add_argument(
        "--allow-unlabelled",
        action="store_true",
        help="folder: leave out images that have no label (default: an error naming them)",
    )
    opt.add_progress(p)
    p.set_defaults(func=run_check_data)


def run_synth(args: argparse.Namespace) -> int:
    from geminifusion.data.synthetic import generate_synthetic_dataset, generate_synthetic_deliver

    generate = (
        generate_synthetic_deliver if args.layout == "deliver" else generate_synthetic_dataset
    )
    summary = generate(
        args.out,
        num=args.num,
        size=args.size,
        seed=args.seed,
        val_fraction=args.val_fraction,
        overwrite=args.overwrite,
    )
    h, w = summary.size
    print(
        f"wrote {summary.num_train + summary.num_val} samples ({summary.num_train} train, "
        f"{summary.num_val} val) of {h}x{w} in the {args.layout} layout to {summary.root}"
    )
    print(f"classes: {', '.join(summary.class_names)}")
    dataset = "deliver" if args.layout == "deliver" else "synthetic"
    print(f"check it with: geminifusion check-data --dataset {dataset} --root {summary.root}")
    return 0


def run_check_data(args: argparse.Namespace) -> int:
    from geminifusion.data.checks import check_dataset
    from geminifusion.data.datasets import build_dataset

    kwargs: dict = {}
    if args.depth_format is not None:
        kwargs["depth_format"] = args.depth_format
    if args.depth_max_m is not None:
        kwargs["depth_max_m"] = args.depth_max_m
    if args.conditions:
        if args.dataset != "deliver":
            raise ValueError("--conditions applies to --dataset deliver only")
        kwargs["conditions"] = _names(args.conditions)
    if args.dataset == "folder":
        kwargs["num_classes"] = args.num_classes
        kwargs["reduce_zero_label"] = args.reduce_zero_label
        kwargs["allow_unlabelled"] = args.allow_unlabelled
    elif args.num_classes is not None or args.reduce_zero_label or args.allow_unlabelled:
        raise ValueError(
            "--num-classes, --reduce-zero-label and --allow-unlabelled apply to --dataset "
            "folder only"
        )
    split = (
        args.split if args.split is not None else (None if args.dataset == "folder" else "train")
    )
    dataset = build_dataset(
        args.dataset, args.root, split, _names(args.modalities), check_layout=False, **kwargs
    )
    report = check_dataset(dataset, progress=opt.progress(args))
    print(report.summary())
    return 0 if report.ok else 1
