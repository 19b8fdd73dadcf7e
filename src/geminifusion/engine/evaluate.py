"""Evaluate a segmentor over a data loader: one confusion matrix per output, summed over processes.

Every output of the model is scored (each modality's logits and the ensemble), as the reference's
validation does. Under ``torch.distributed`` each process scores its own shard of the data and the
matrices are all-reduced, so the numbers equal a single-process run over the same samples, as long
as the shards neither drop nor repeat a sample: use :func:`build_eval_loader` (a
``DistributedSampler`` pads the last shard with repeated samples).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from geminifusion.engine.inference import describe_options, predict_scores, unwrap
from geminifusion.engine.metrics import ConfusionMatrix, scores_from_confusion


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every sample exactly once over all processes."""

    def __init__(self, length: int, rank: int | None = None, world_size: int | None = None) -> None:
        default_rank, default_world = _world()
        self.length = length
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def build_eval_loader(dataset: Dataset, batch_size: int = 1, num_workers: int = 0) -> DataLoader:
    """A loader over this process's shard (all of it without torch.distributed), in order.

    Batch size 1 by default, as the reference validates: images of a folder may differ in size.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset)),
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
    )


@torch.no_grad()
def confusion_matrices(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device | str = "cpu",
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    window: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool | None = None,
    desc: str = "eval",
) -> dict[str, torch.Tensor]:
    """Output name -> ``(K, K)`` confusion matrix over the loader, all-reduced across processes.

    The model's modules keep the train/eval mode they had before the call (a training loop's
    frozen BatchNorm stays frozen). ``progress=None`` shows a bar on a terminal, on rank 0 only.
    """
    net = unwrap(model)
    device = torch.device(device)
    modes = {m: m.training for m in net.modules()}
    net.eval()
    names = list(net.output_names)
    matrices = {name: ConfusionMatrix(num_classes, device) for name in names}
    rank, _ = _world()
    quiet = not progress if progress is not None else not sys.stderr.isatty()
    bar = tqdm(loader, desc=desc, unit="batch", disable=rank != 0 or quiet)
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    try:
        for batch in bar:
            inputs = [batch[m].to(device, non_blocking=True) for m in net.modalities]
            label = batch["label"].to(device, non_blocking=True)
            with autocast:
                scores = predict_scores(
                    net,
                    inputs,
                    label.shape[-2:],
                    scales=scales,
                    flip=flip,
                    window=window,
                    stride=stride,
                )
            for name, score in zip(names, scores, strict=True):
                matrices[name].update(score.argmax(dim=1), label)
    finally:
        bar.close()
        for module, training in modes.items():
            module.training = training
    for matrix in matrices.values():
        matrix.all_reduce()
    return {name: m.matrix for name, m in matrices.items()}


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device | str = "cpu",
    **options,
) -> dict[str, dict]:
    """Output name -> scores (``aAcc``, ``mAcc``, ``mIoU``, per-class ``IoU`` / ``Acc``, percent).

    Options are those of :func:`confusion_matrices` (multi-scale, flip, sliding window, autocast,
    progress). The last entry is the model's main prediction (the ensemble when it has one).
    """
    matrices = confusion_matrices(model, loader, num_classes, device, **options)
    return {name: scores_from_confusion(m) for name, m in matrices.items()}


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
    from geminifusion.engine import robustness as R
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
        f"{_world()[1]} process(es) on {device}"
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
        "processes": _world()[1],
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
