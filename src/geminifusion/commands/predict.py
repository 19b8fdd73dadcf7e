"""``geminifusion predict``: segment image pairs; class maps, colour maps and overlays."""

from __future__ import annotations

import argparse
from pathlib import Path

from geminifusion.commands import options as opt

EPILOG = """\
examples:
  geminifusion predict runs/demo/fused --rgb scene.png --depth scene_depth.png --out preds
  geminifusion predict best.pt --rgb data/rgb --depth data/depth --out preds       (folders)
  geminifusion predict paper.pth.tar --list data/nyudv2/val.txt --root data/nyudv2 --out preds
"""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment image pairs: class-map PNG, coloured PNG and overlay per image",
        description="Predict with a checkpoint (ours, a model folder, a run folder, or the "
        "paper's checkpoint) on a file pair, two folders matched by file name, or a split list. "
        "Writes <name>_classes.png (class indices), <name>_color.png (the reference palette: "
        "class k in cmap[k + 1]) and <name>_overlay.png (over the RGB image).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="checkpoint file, model folder or run folder")
    p.add_argument("--rgb", help="RGB image or folder of images")
    p.add_argument("--depth", help="depth image or folder of images")
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="another modality (event=..., lidar=...); repeatable",
    )
    p.add_argument("--list", type=Path, help="split list (image, label, depth per line)")
    p.add_argument("--root", type=Path, help="folder the split list's paths are relative to")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--depth-format",
        choices=("png8", "png16_mm", "hha"),
        default="png8",
        help="png8 (default), png16_mm or hha",
    )
    p.add_argument("--depth-max-m", type=float, default=10.0, help="png16_mm: metres mapped to 1")
    p.add_argument("--arch", help="architecture of a paper checkpoint (default: recognised)")
    p.add_argument("--output", help="which output to draw (default: the last, the ensemble)")
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity (default 0.5)")
    opt.add_test_options(p)
    opt.add_device(p, "CUDA when available")
    opt.add_compile(p)
    opt.add_progress(p)
    p.set_defaults(func=run)


def _input_paths(args: argparse.Namespace) -> dict[str, str]:
    paths = {name: getattr(args, name) for name in ("rgb", "depth") if getattr(args, name)}
    for item in args.inputs:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path:
            raise ValueError(f"--input expects NAME=PATH, got {item!r}")
        paths[name.strip()] = path
    return paths


def run(args: argparse.Namespace) -> int:
    from geminifusion.data.inputs import collect_samples
    from geminifusion.engine.distributed import resolve_device
    from geminifusion.engine.predict import open_prediction_folder, predict_folder
    from geminifusion.weights.folder import parse_arch
    from geminifusion.weights.load import load_model

    if args.list is None and args.root is not None:
        raise ValueError("--root goes with --list")
    if args.list is not None and not args.list.is_file():
        raise FileNotFoundError(f"--list: file not found: {args.list}")
    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f"--opacity must lie in [0, 1], got {args.opacity}")
    paths = _input_paths(args)
    # The destination is checked before the model is loaded: never among or over the inputs.
    folder = open_prediction_folder(args.out, [*paths.values(), *filter(None, [args.list])])
    arch = parse_arch(args.arch) if args.arch else None
    model = load_model(args.checkpoint, arch=arch, device=resolve_device(args.device or "auto"))
    samples = collect_samples(model.modalities, paths, args.list, args.root)
    written = predict_folder(
        opt.compiled(model) if args.compile else model,
        samples,
        folder,
        output=args.output,
        depth_format=args.depth_format,
        depth_max_m=args.depth_max_m,
        opacity=args.opacity,
        progress=opt.progress(args),
        **opt.test_options(args),
    )
    print(f"wrote {written} predictions ({args.output or model.output_names[-1]}) to {args.out}")
    return 0
