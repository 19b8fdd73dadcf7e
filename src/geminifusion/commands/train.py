"""``geminifusion train``: one command for a paper run, on one CPU or under ``torchrun``."""

from __future__ import annotations

import argparse
import os

from geminifusion.commands import options as opt

EPILOG = """\
examples:
  geminifusion train nyudv2_mit_b3 --set data_root=data/nyudv2 --pretrained mit_b3.pth
  geminifusion train synthetic_mit_b0 --set stage_epochs=[2,1,1]
  geminifusion train nyudv2_mit_b3 --set data_root=data/nyudv2 --resume
  torchrun --nproc_per_node 4 -m geminifusion.cli train sunrgbd_mit_b3 --set data_root=data/sun
  geminifusion train my_run.yaml --out runs/my_run      (YAML/JSON keys; "preset: NAME" as base)
"""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a preset or a config file (DDP under torchrun)",
        description="Train with the paper's recipe: three stages of AdamW with warm-up and poly "
        "decay (a fresh optimiser per stage, decoder at 10x), frozen BatchNorm, the loss summed "
        "over every output, validation every few epochs keeping the best ensemble mIoU. The run "
        "folder gets the resolved config, a metrics log (JSON lines) and checkpoints that "
        "resume exactly.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="preset name (see --list) or a YAML/JSON file")
    opt.add_overrides(p, "stage_epochs=[50,50,50], data_root=..., amp=bf16")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CKPT",
        help="continue the run in the run folder from its last checkpoint, or from CKPT "
        "(a geminifusion checkpoint, or a reference one at its epoch)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="start over in a run folder that holds a run"
    )
    p.add_argument(
        "--finetune",
        metavar="CKPT",
        default=None,
        help="start from a checkpoint's weights, all but the classifier (the paper's fine-tune "
        "from SUN RGB-D); another class count is fine",
    )
    p.add_argument(
        "--pretrained", metavar="PATH", default=None, help="ImageNet backbone weights to start from"
    )
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    opt.add_progress(p)
    p.set_defaults(func=run_train)


def resolve(args: argparse.Namespace):
    """The config the command line describes: preset or file, then ``--set``, then flags."""
    from geminifusion.configs import apply_overrides, load_config

    config = apply_overrides(load_config(args.config), args.overrides)
    changes = {}
    if args.finetune:
        changes["finetune"] = args.finetune
    if args.pretrained:
        changes["pretrained"] = args.pretrained
    return config.replace(**changes) if changes else config


def run_train(args: argparse.Namespace) -> int:
    from geminifusion.cli import CLIError
    from geminifusion.configs import preset_names

    if args.list:
        print("\n".join(preset_names()))
        return 0
    if not args.config:
        raise CLIError("give a preset name or a config file (see `geminifusion train --list`)")
    config = resolve(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None), end="")
        return 0
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite contradict each other; pick one")
    # --pretrained also takes a transformers folder (config.json + weights).
    for flag, path, found in (
        ("--finetune", config.finetune, os.path.isfile),
        ("--pretrained", config.pretrained, os.path.exists),
    ):
        if path and not found(path) and not args.resume:
            raise FileNotFoundError(f"{flag}: file not found: {path}")

    from geminifusion.engine.train import TrainingError, train

    try:
        result = train(
            config,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=opt.progress(args),
        )
    except TrainingError as err:
        raise CLIError(str(err)) from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {result.run_dir}")
        if result.best_checkpoint is not None:
            print(f"best checkpoint: {result.best_checkpoint}")
    return 0
