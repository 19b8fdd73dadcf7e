"""What modality dropout does to a 4-sensor model when a sensor fails, on synthetic DeLiVER data.

Small DeLiVER-style models (RGB, depth, event, LiDAR) are trained with the same recipe and seed,
without modality dropout and with it (each sample loses one non-RGB input with probability
``p``). Each is then scored on the validation split with nothing dropped and with each
extra sensor dead in turn (input all zeros, or noise).

The synthetic scenes make every sensor matter: pedestrians and cars differ only in the event
image, cars and poles only in LiDAR (``geminifusion.data.synthetic``). The numbers measure
robustness of the fusion, not DeLiVER accuracy. Run: ``python benchmarks/deliver_robustness.py``
(about a minute on one CPU core; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from geminifusion.configs import build_model, get_preset
from geminifusion.data import DELIVER_CONDITIONS, build_dataset, generate_synthetic_deliver
from geminifusion.engine.metrics import to_json_ready
from geminifusion.engine.robustness import format_robustness_table, robustness_report
from geminifusion.engine.train import train
from geminifusion.weights import load_weights

MODALITIES = ("rgb", "depth", "event", "lidar")


def run(workdir: Path, dropout: float, epochs: int, num_train: int, args: argparse.Namespace):
    iterations = epochs * (num_train // args.batch)
    config = get_preset("deliver_mit_b0").replace(
        name=f"dropout_{dropout}",
        data_root=str(workdir / "data"),
        arch_overrides={
            "embed_dims": [16, 32, 64, 128],
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 2, 4],
            "sr_ratios": [8, 4, 2, 1],
        },
        head_embed_dim=64,
        drop_path_rate=0.0,
        crop_size=list(args.size),
        scale_range=[0.75, 1.25],
        batch_size=args.batch,
        val_batch_size=args.batch,
        stage_epochs=[epochs],
        stage_lrs=[2e-3],
        warmup_iters=10,
        max_iters=iterations + 1,
        modality_dropout=dropout,
        dataset_options={"eval_short_side": None},
        num_workers=0,
        device="cpu",
        val_every=epochs,
        seed=0,
    )
    start = time.perf_counter()
    result = train(config, workdir / config.name, progress=False)
    seconds = time.perf_counter() - start
    model = build_model(config, 25)
    load_weights(model, result.last_checkpoint)
    return model.eval(), seconds, result.iterations


def markdown(title: str, rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    lines = [title, "", "| " + " | ".join(["training", *columns]) + " |"]
    lines.append("|" + "---|" * (len(columns) + 1))
    for label, values in rows.items():
        lines.append("| " + " | ".join([label, *(f"{values[c]:.1f}" for c in columns)]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few images and iterations")
    parser.add_argument(
        "--p", type=float, nargs="+", default=[0.5], help="modality dropout of the others"
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--num", type=int, default=160, help="synthetic scenes (1/4 for val)")
    parser.add_argument("--size", type=int, nargs=2, default=(48, 64), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, default=1, help="1: small models, a second thread mostly waits"
    )
    parser.add_argument("--out", default=None, help="also write the report JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    num, epochs = (24, 1) if args.quick else (args.num, args.epochs)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        generate_synthetic_deliver(
            workdir / "data", num=num, size=tuple(args.size), conditions=DELIVER_CONDITIONS
        )
        val = build_dataset(
            "deliver", workdir / "data", "val", modalities=MODALITIES, eval_short_side=None
        )
        reports, rows = {}, {m: {} for m in ("zeros", "noise")}
        for p in (0.0, *args.p):
            model, seconds, iters = run(workdir, p, epochs, num - len(val), args)
            label = f"modality dropout {p:g}"
            print(f"{label}: {iters} iterations in {seconds:.0f} s")
            for mode in rows:
                report = robustness_report(
                    model, val, 25, mode=mode, batch_size=args.batch, progress=False
                )
                reports[f"{label}, {mode}"] = report
                print(f"\n{label}, dead sensor = {mode}\n{format_robustness_table(report)}")
                rows[mode][label] = {d: r["overall"]["ensemble"]["mIoU"] for d, r in report.items()}

    columns = ["none", "depth", "event", "lidar"]
    print(f"\n{len(val)} val images, {num - len(val)} train, {epochs} epochs, {args.size}")
    for mode, table in rows.items():
        title = f"Ensemble mIoU (%), dropped sensor's input = {mode}:"
        print("\n" + markdown(title, table, columns))
    if args.out:
        Path(args.out).write_text(json.dumps(to_json_ready(reports), indent=2) + "\n")


if __name__ == "__main__":
    main()
