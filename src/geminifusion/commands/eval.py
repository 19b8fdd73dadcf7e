"""``geminifusion eval``: score a checkpoint on a dataset split, every output, mmseg tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from geminifusion.commands import options as opt

EPILOG = """\
examples:
  geminifusion eval runs/nyudv2_mit_b3                   (a run folder: its config and best.pt)
  geminifusion eval nyudv2_mit_b3 --checkpoint best.pt --set data_root=data/nyudv2
  geminifusion eval sunrgbd_mit_b3 --checkpoint paper.pth.tar --set data_root=data/sun \\
      --multi-scale --flip
  geminifusion eval runs/deliver_mit_b2 --by-condition --drop-modality all
  torchrun --nproc_per_node 4 -m geminifusion.cli eval runs/nyudv2_mit_b3
"""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score a checkpoint: aAcc, mAcc, mIoU and per-class IoU for every output",
        description="Evaluate a checkpoint (ours, or the paper's) on a config's validation split. "
        "Every output is scored (each modality's and the ensemble); the per-class table of the "
        "ensemble and a summary are printed in the mmsegmentation layout and saved as JSON. "
        "Under torchrun the data is sharded and the confusion matrices are summed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="preset name, YAML/JSON config file, or a run folder")
    p.add_argument("--checkpoint", "-c", help="weights (default for a run folder: its best.pt)")
    opt.add_overrides(p, "data_root=..., val_split=test, ...")
    p.add_argument("--split", help="split to score (default: the config's val_split)")
    p.add_argument("--out", type=Path, help="folder for the JSON and text results")
    p.add_argument(
        "--batch-size", type=opt.positive_int, help="images per forward (default: val_batch_size)"
    )
    opt.add_test_options(p)
    opt.add_device(p)
    opt.add_compile(p)
    opt.add_progress(p)
    g = p.add_argument_group("sensor failure and conditions (multi-sensor data)")
    g.add_argument(
        "--drop-modality",
        action="append",
        default=[],
        metavar="NAME",
        help="also score with this input dead (repeatable; 'all': each non-RGB input in turn); "
        "prints and saves a table of mIoU per dropped modality",
    )
    g.add_argument(
        "--drop-mode",
        choices=("zeros", "noise"),
        default="zeros",
        help="what a dead sensor feeds the model: zeros (default) or uniform noise",
    )
    g.add_argument(
        "--by-condition",
        action="store_true",
        help="score each condition (DeLiVER: cloud, fog, night, rain, sun) and overall",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geminifusion import runs
    from geminifusion.cli import CLIError
    from geminifusion.configs import apply_overrides, load_config
    from geminifusion.engine import distributed as D
    from geminifusion.engine.metrics import to_json_ready
    from geminifusion.engine.report import evaluate_checkpoint, result_names, result_stem

    source = Path(args.config)
    run_dir = source if source.is_dir() else None
    if run_dir is not None and not runs.is_run_folder(run_dir):
        raise FileNotFoundError(f"{run_dir}: no {runs.CONFIG_FILE} (not a run folder)")
    config = runs.load_run_config(run_dir) if run_dir else load_config(args.config)
    config = apply_overrides(config, args.overrides)
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
        if checkpoint.is_dir():
            raise CLIError(
                f"--checkpoint: {checkpoint} is a folder; give a checkpoint file (a run folder "
                "goes in place of CONFIG)"
            )
        if not checkpoint.is_file():
            raise FileNotFoundError(f"--checkpoint: file not found: {checkpoint}")
        run_dir = run_dir or runs.run_folder_of(checkpoint)
    elif run_dir is not None:
        checkpoint = runs.default_checkpoint(run_dir)
    else:
        raise CLIError("give --checkpoint CKPT (or a run folder instead of a config)")
    options = opt.test_options(args, config)
    out = args.out or (run_dir or runs.default_run_dir(config)) / runs.EVAL_FOLDER

    robust = args.drop_mode if args.drop_modality or args.by_condition else None
    names = result_names(args.split or config.val_split, options, robust)

    ctx = D.setup_distributed(args.device or config.device)
    try:
        inputs = [config.data_root] if config.data_root else []
        folder = D.on_main(lambda: runs.open_results_folder(out, names, inputs))  # before work
        reuse = run_dir / runs.DATA_FOLDER if run_dir else None
        root = D.on_main(
            lambda: runs.data_root(config, out / runs.DATA_FOLDER, reuse=reuse, folder=folder)
        )
        scores = evaluate_checkpoint(
            config,
            checkpoint,
            data_root=root,
            split=args.split,
            device=ctx.device,
            batch_size=args.batch_size,
            options=options,
            drops=args.drop_modality,
            drop_mode=args.drop_mode,
            by_condition=args.by_condition,
            progress=opt.progress(args),
            log=print if ctx.is_main else lambda _: None,
            compile=args.compile,
        )
    finally:
        D.cleanup_distributed()
    if not ctx.is_main:
        return 0
    if scores.robustness is not None:
        print(scores.robustness_text)
        stem = f"robustness_{args.drop_mode}"
        folder.write_json(f"{stem}.json", to_json_ready(scores.robustness))
        folder.write_text(f"{stem}.txt", scores.robustness_text + "\n")
        print(f"saved {out / stem}.json and {stem}.txt")
    print(scores.report)
    stem = result_stem(scores.record["split"], options)
    folder.write_json(f"{stem}.json", to_json_ready(scores.record))
    folder.write_text(f"{stem}.txt", scores.report + "\n")
    print(f"saved {out / stem}.json and {stem}.txt")
    return 0
