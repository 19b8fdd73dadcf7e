"""``geminifusion convert IN OUT``: reference training checkpoint <-> portable model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from geminifusion.commands import options as opt

DESCRIPTION = """\
Convert a training checkpoint of the paper's code (IN, a file) into a model folder
(OUT: config.json + model.safetensors, loadable with geminifusion.from_pretrained), or a model
folder (IN) back into a checkpoint in the reference layout (OUT, a file). The architecture is
recognised from the checkpoint's keys and shapes; when no named variant fits, pass --arch.
"""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="reference checkpoint <-> model folder (config.json + model.safetensors)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "input", metavar="IN", type=Path, help="reference checkpoint file, or a model folder"
    )
    parser.add_argument("output", metavar="OUT", type=Path, help="model folder, or checkpoint file")
    parser.add_argument(
        "--arch",
        help="variant name (mit_b3, swin_large_window12, ...), a JSON config object or a .json "
        "file; needed only when the checkpoint's shapes fit no named variant",
    )
    parser.add_argument(
        "--modalities",
        type=opt.names,
        help="comma-separated input names (default: rgb,depth; rgb,depth,event,lidar for four)",
    )
    parser.add_argument(
        "--class-names", type=Path, help="text file with one class name per line, in class order"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing OUT that geminifusion wrote (never another file)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geminifusion.cli import CLIError
    from geminifusion.weights import folder_to_reference, parse_arch, reference_to_folder
    from geminifusion.weights.convert import check_conversion

    source, target = args.input, args.output
    if source.is_dir() and (args.arch or args.modalities or args.class_names):
        raise CLIError("--arch, --modalities and --class-names apply to checkpoint -> folder")
    check_conversion(source, target, args.force)  # before any work
    if source.is_dir():
        folder_to_reference(source, target)
        print(f"wrote reference checkpoint {target}")
        return 0
    modalities = args.modalities
    class_names = None
    if args.class_names:
        lines = args.class_names.read_text().splitlines()
        class_names = [line.strip() for line in lines if line.strip()]
    arch = parse_arch(args.arch) if args.arch else None
    model = reference_to_folder(source, target, arch, modalities, class_names)
    arch_name = model.spec["arch"] if isinstance(model.spec["arch"], str) else "custom config"
    print(
        f"wrote {target} ({arch_name}, {model.num_classes} classes, "
        f"modalities {', '.join(model.modalities)})"
    )
    return 0
