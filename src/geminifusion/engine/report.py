"""Scoring a checkpoint on a config's data: the work behind ``geminifusion eval``.

The result holds the scores of every output, the printed report and a JSON-ready record of
how it was measured; per-condition and dead-sensor tables when asked (DeLiVER).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from geminifusion.engine import robustness as R
from geminifusion.engine.distributed import world_size
from geminifusion.engine.evaluate import build_eval_loader, evaluate
from geminifusion.engine.inference import describe_options


@dataclass
class CheckpointScores:
    """What :func:`evaluate_checkpoint` measured, ready to print and to save."""

    results: dict[str, dict]  # output name -> scores (the last is the main prediction)
    report: str  # the per-class table and the summary, as printed
    record: dict  # every number and how it was measured, for the JSON file
    robustness: dict | None = None  # per condition / dead sensor, when asked
    robustness_text: str | None = None


def evaluate_checkpoint(
    config,
    checkpoint: str | Path,
    *,
    data_root: str | Path,
    split: str | None = None,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    options: dict | None = None,
    drops: Sequence[str] = (),
    drop_mode: str = "zeros",
    by_condition: bool = False,
    progress: bool | None = None,
    log=print,
    compile: bool = False,
) -> CheckpointScores:
    """Score a checkpoint on a config's data: every output, optionally per condition and with
    dead sensors (``drops``: input names, or ``all``).

    The model is the checkpoint's own (ours rebuild from their spec; the paper's are built as
    the config's architecture); its classes and inputs must match the data and the config.
    ``compile`` runs it through ``torch.compile``.
    """
    from geminifusion.data import build_dataset
    from geminifusion.engine.distributed import autocast_dtype
    from geminifusion.engine.metrics import format_report
    from geminifusion.weights.load import load_model

    device = torch.device(device)
    options = dict(options or {"scales": (1.0,)})
    split = split or config.val_split
    dataset = build_dataset(
        config.dataset,
        data_root,
        split,
        modalities=config.modalities,
        train=False,
        seed=config.seed,
        **config.dataset_options,
    )
    if config.num_classes is not None and config.num_classes != dataset.num_classes:
        raise ValueError(
            f"config key 'num_classes' is {config.num_classes} but the {config.dataset} data at "
            f"{data_root} has {dataset.num_classes} classes"
        )
    model = load_model(
        checkpoint,
        arch=config.architecture(),
        modalities=config.modalities,
        num_classes=dataset.num_classes,
        device=device,
    )
    if compile:
        model = torch.compile(model)
    amp = autocast_dtype(config.amp, device)
    batch_size = batch_size or config.val_batch_size
    log(
        f"evaluating {checkpoint} ({model.source.kind}) on {config.dataset} {split}: "
        f"{len(dataset)} images, {dataset.num_classes} classes, {describe_options(options)}, "
        f"{world_size()} process(es) on {device}"
    )
    robustness = robustness_text = None
    if drops or by_condition:
        robustness = R.robustness_report(
            model,
            dataset,
            dataset.num_classes,
            device,
            drops=R.robustness_drops(model.modalities, drops),
            mode=drop_mode,
            batch_size=batch_size,
            num_workers=config.num_workers,
            autocast_dtype=amp,
            progress=progress,
            **options,
        )
        robustness_text = R.robustness_text(robustness, drop_mode)
        results = robustness[R.NO_DROP][R.OVERALL]
    else:
        loader = build_eval_loader(dataset, batch_size, config.num_workers)
        results = evaluate(
            model,
            loader,
            dataset.num_classes,
            device,
            autocast_dtype=amp,
            progress=progress,
            **options,
        )
    record = {
        "checkpoint": str(checkpoint),
        "checkpoint_kind": model.source.kind,
        "config": config.name,
        "arch": config.arch,
        "dataset": config.dataset,
        "data_root": str(data_root),
        "split": split,
        "num_images": len(dataset),
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        "processes": world_size(),
        "class_names": list(dataset.class_names),
        "results": results,
    }
    report = format_report(results, dataset.class_names)
    return CheckpointScores(results, report, record, robustness, robustness_text)


def result_stem(split: str, options: dict) -> str:
    """``eval_val``, ``eval_val_ms_flip``, ...: the file name of a result, by what was measured."""
    tags = (
        ("_ms", tuple(options.get("scales", (1.0,))) != (1.0,)),
        ("_flip", bool(options.get("flip"))),
        ("_slide", bool(options.get("window"))),
    )
    return f"eval_{split}" + "".join(tag for tag, on in tags if on)


def result_names(split: str, options: dict, drop_mode: str | None = None) -> list[str]:
    """The files ``geminifusion eval`` writes: its results, and the robustness tables when
    sensors are dropped or conditions scored (``drop_mode``)."""
    stem = result_stem(split, options)
    names = [f"{stem}.json", f"{stem}.txt"]
    if drop_mode is not None:
        names += [f"robustness_{drop_mode}.json", f"robustness_{drop_mode}.txt"]
    return names
