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
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from geminifusion.engine.inference import predict_scores, unwrap
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
    non_finite: dict[str, int] = {}
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
            try:
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
            except ValueError as err:  # e.g. an image below the model's smallest size
                raise ValueError(f"{_first_path(batch)}: {err}") from None
            for name, score in zip(names, scores, strict=True):
                if not bool(torch.isfinite(score).all()):
                    non_finite[name] = non_finite.get(name, 0) + 1
                matrices[name].update(score.argmax(dim=1), label)
    finally:
        bar.close()
        for module, training in modes.items():
            module.training = training
    for matrix in matrices.values():
        matrix.all_reduce()
    if non_finite and rank == 0:
        counts = ", ".join(f"{name} in {n} batch(es)" for name, n in non_finite.items())
        warnings.warn(
            f"the model's scores hold NaN or infinite values ({counts}): those predictions, and "
            "the scores computed from them, are meaningless; check the model's weights",
            RuntimeWarning,
            stacklevel=1,  # here: the caller is torch's no_grad wrapper
        )
    return {name: m.matrix for name, m in matrices.items()}


def _first_path(batch: dict) -> str:
    """The first file named in a batch (for an error message)."""
    paths = batch.get("paths") or {}
    for value in paths.values():
        return str(value[0] if isinstance(value, (list, tuple)) else value)
    return "a sample"


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
