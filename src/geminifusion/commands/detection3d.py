"""``geminifusion demo3d``: the synthetic LiDAR + camera fusion demonstration on the CPU."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo3d",
        help="synthetic LiDAR + camera demo: LiDAR only vs sum fusion vs GeminiFusion",
        description=(
            "Train a small per-point classifier on random synthetic scenes (points + a camera "
            "image; red and blue cars differ only in colour) LiDAR-only, with sum fusion "
            "(MVX-Net, and after every layer) and with GeminiFusion, over several seeds, and "
            "print per-class IoU; then score every model again with the camera failed (no "
            "image) and retrain the fusion models with camera dropout, and print mIoU and "
            "point-classification mAP side by side. "
            "Synthetic data: says nothing about KITTI detection AP."
        ),
    )
    parser.add_argument("--size", default="full", help="preset: full (minutes) or tiny (seconds)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (data and init)")
    parser.add_argument(
        "--methods", nargs="+", choices=("lidar", "sum", "sum_every", "gemini"), help="models"
    )
    parser.add_argument("--epochs", type=int, help="training epochs per run")
    parser.add_argument("--train-scenes", type=int, help="training scenes per seed")
    parser.add_argument("--val-scenes", type=int, help="validation scenes per seed")
    parser.add_argument(
        "--camera-dropout",
        type=float,
        help="per-sample image dropout of the extra fusion runs (default 0.5; 0: no such runs)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the raw results here (a new file)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a --json file this command wrote before"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from geminifusion.detection3d.demo import format_camera_table, format_table, preset, run_demo
    from geminifusion.files import claim_file, write_file_bytes

    if args.json:  # checked before the work, not after it
        claim_file(
            args.json, "demo3d", replace=args.overwrite, option="--json", replace_flag="--overwrite"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset(
        args.size,
        seeds=tuple(args.seeds) if args.seeds else None,
        methods=tuple(args.methods) if args.methods else None,
        epochs=args.epochs,
        train_scenes=args.train_scenes,
        val_scenes=args.val_scenes,
        camera_dropout=args.camera_dropout,
    )
    cpu = time.process_time()
    result = run_demo(cfg)
    cpu = time.process_time() - cpu
    print(format_table(result))
    print()
    print(format_camera_table(result))
    threads = torch.get_num_threads()
    print(f"({result.seconds:.0f} s wall, {cpu:.0f} s CPU, {threads} torch thread(s))")
    if args.json:
        data = json.dumps(result.as_dict(), indent=2).encode("utf-8")
        write_file_bytes(args.json, data, "demo3d")
    return 0
