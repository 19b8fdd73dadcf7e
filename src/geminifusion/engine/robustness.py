"""Sensor failure and per-condition scores for multi-sensor models (the DeLiVER setting).

- :func:`modality_dropout` (training): each sample loses one non-RGB input with probability
  ``p``, so the model learns to work without any one sensor.
- :class:`DroppedModality` (evaluation): a view of a dataset in which one sensor is dead, its
  input all zeros or random noise.
- :func:`evaluate_conditions` and :func:`robustness_report`: scores per condition (cloud, fog,
  night, rain, sun) and overall, with every sensor dropped in turn. The overall score is computed
  from the summed confusion matrices, so it equals an evaluation over the whole set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from geminifusion.data.transforms import normalize_rgb, sample_seed
from geminifusion.engine.evaluate import build_eval_loader, confusion_matrices
from geminifusion.engine.metrics import format_table, scores_from_confusion, to_json_ready

DROP_MODES = ("zeros", "noise")
OVERALL = "overall"
NO_DROP = "none"


def dead_sensor(name: str, like: torch.Tensor, mode: str, generator: torch.Generator | None = None):
    """What a failed sensor feeds the model, shaped like ``like`` (``3 x H x W`` or batched).

    ``zeros``: an all-zero input. ``noise``: a uniform random image in [0, 1), normalised the way
    that modality is (ImageNet mean/std for ``rgb``, nothing for the other sensors).
    """
    if mode == "zeros":
        return torch.zeros_like(like)
    if mode == "noise":
        noise = torch.rand(like.shape, generator=generator, dtype=like.dtype)
        return normalize_rgb(noise).to(like.device) if name == "rgb" else noise.to(like.device)
    raise ValueError(f"unknown drop mode {mode!r}; expected one of {DROP_MODES}")


def modality_dropout(
    inputs: Sequence[torch.Tensor],
    modalities: Sequence[str],
    p: float,
    generator: torch.Generator | None = None,
    keep: Sequence[str] = ("rgb",),
) -> list[torch.Tensor]:
    """Zero one droppable input of each sample with probability ``p``.

    A sample that drops picks one of the modalities not in ``keep`` uniformly, so each sensor is
    missing in ``p / (number of droppable sensors)`` of the samples. The random numbers are drawn
    the same way whatever ``p`` is, on the CPU from ``generator`` (default: the global stream).

    Args:
        inputs: one ``B x 3 x H x W`` tensor per modality, in model order.
        modalities: their names.
        p: probability that a sample loses a sensor, in [0, 1].
        generator: random source.
        keep: modalities never dropped (the colour camera).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"modality dropout must lie in [0, 1], got {p}")
    if len(inputs) != len(modalities):
        raise ValueError(f"{len(inputs)} inputs for {len(modalities)} modality names")
    droppable = [i for i, name in enumerate(modalities) if name not in keep]
    out = list(inputs)
    if not droppable:
        return out
    batch = inputs[0].shape[0]
    hit = torch.rand(batch, generator=generator) < p
    which = torch.randint(len(droppable), (batch,), generator=generator)
    for j, i in enumerate(droppable):
        drop = hit & (which == j)
        if drop.any():
            mask = drop.to(inputs[i].device).view(batch, *(1,) * (inputs[i].dim() - 1))
            out[i] = inputs[i].masked_fill(mask, 0.0)
    return out


class DroppedModality(Dataset):
    """``dataset`` with the input ``name`` replaced by a dead sensor's (see :func:`dead_sensor`).

    The noise of sample ``i`` depends only on ``(seed, i)``, so runs and worker counts agree.
    Other attributes (``num_classes``, ``class_names``, ``samples``) are the dataset's.
    """

    def __init__(self, dataset: Dataset, name: str, mode: str = "zeros", seed: int = 0) -> None:
        modalities = tuple(getattr(dataset, "modalities", ()))
        if modalities and name not in modalities:
            raise ValueError(f"cannot drop {name!r}: the data has {', '.join(modalities)}")
        if mode not in DROP_MODES:
            raise ValueError(f"unknown drop mode {mode!r}; expected one of {DROP_MODES}")
        self.dataset, self.name, self.mode, self.seed = dataset, name, mode, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        generator = torch.Generator().manual_seed(sample_seed(self.seed, 0, index))
        sample[self.name] = dead_sensor(self.name, sample[self.name], self.mode, generator)
        return sample

    def __getattr__(self, attr: str):
        if attr == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(attr)
        return getattr(self.dataset, attr)


def sample_conditions(dataset: Dataset) -> list[str | None]:
    """The condition of every sample (DeLiVER), read from the file list without loading images."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return [None] * len(dataset)
    return [getattr(s, "condition", None) for s in samples]


def evaluate_conditions(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    device: torch.device | str = "cpu",
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    **options,
) -> dict[str, dict[str, dict]]:
    """Scores per condition and overall: ``{condition or "overall": {output: scores}}``.

    Conditions appear in the order of their first sample; a dataset without conditions gives
    only ``"overall"``. ``options`` go to ``confusion_matrices`` (scales, flip, window, ...).
    """
    conditions = sample_conditions(dataset)
    groups: dict[str, list[int]] = {}
    if all(c is not None for c in conditions):
        for index, condition in enumerate(conditions):
            groups.setdefault(condition, []).append(index)
    parts = groups or {OVERALL: list(range(len(dataset)))}
    matrices: dict[str, dict[str, torch.Tensor]] = {}
    for group, indices in parts.items():
        loader = build_eval_loader(Subset(dataset, indices), batch_size, num_workers)
        matrices[group] = confusion_matrices(
            model, loader, num_classes, device, desc=f"eval {group}", **options
        )
    if groups:
        outputs = next(iter(matrices.values()))
        matrices[OVERALL] = {
            name: sum(m[name] for m in matrices.values() if name in m) for name in outputs
        }
    return {
        group: {name: scores_from_confusion(matrix) for name, matrix in per_output.items()}
        for group, per_output in matrices.items()
    }


def robustness_report(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    device: torch.device | str = "cpu",
    *,
    drops: Sequence[str | None] | None = None,
    mode: str = "zeros",
    seed: int = 0,
    **options,
) -> dict[str, dict[str, dict[str, dict]]]:
    """:func:`evaluate_conditions` with nothing dropped, then with each sensor dropped in turn.

    Args:
        drops: modalities to drop one at a time (``None`` for the intact run); default: the
            intact run and every modality but the first (RGB).
        mode: ``zeros`` or ``noise`` (see :func:`dead_sensor`).

    Returns:
        ``{"none" or dropped modality: {condition or "overall": {output: scores}}}``.
    """
    net = getattr(model, "module", model)
    if drops is None:
        drops = [None, *net.modalities[1:]]
    unknown = [name for name in drops if name is not None and name not in net.modalities]
    if unknown:
        raise ValueError(f"cannot drop {unknown}: the model takes {', '.join(net.modalities)}")
    report = {}
    for name in drops:
        data = dataset if name is None else DroppedModality(dataset, name, mode, seed)
        report[NO_DROP if name is None else name] = evaluate_conditions(
            model, data, num_classes, device, **options
        )
    return report


def main_output(results: Mapping[str, Mapping]) -> str:
    """The output a table reports: the last one (the ensemble when there is one)."""
    return list(results)[-1]


def format_condition_table(results: Mapping[str, Mapping], metric: str = "mIoU") -> str:
    """One row per output, one column per condition plus ``overall``: the chosen metric."""
    groups = list(results)
    outputs = list(results[groups[0]])
    rows = [[name, *(results[g][name][metric] for g in groups)] for name in outputs]
    return format_table(("Output", *groups), rows)


def format_robustness_table(
    report: Mapping[str, Mapping], metric: str = "mIoU", output: str | None = None
) -> str:
    """One row per dropped sensor (``none`` first), one column per condition plus ``overall``."""
    first = next(iter(report.values()))
    groups = list(first)
    output = output or main_output(first[groups[0]])
    rows = [[drop, *(per[g][output][metric] for g in groups)] for drop, per in report.items()]
    return format_table((f"dropped ({output} {metric})", *groups), rows)


def save_report(report: Mapping, out_dir: str | Path, stem: str, table: str) -> list[Path]:
    """Write ``<stem>.json`` (full scores, NaN as null) and ``<stem>.txt`` (the table)."""
    from geminifusion.runs import open_results_folder

    paths = [f"{stem}.json", f"{stem}.txt"]
    folder = open_results_folder(out_dir, paths)
    return [
        folder.write_json(paths[0], to_json_ready(report)),
        folder.write_text(paths[1], table + "\n"),
    ]


def robustness_drops(modalities: Sequence[str], names: Sequence[str]) -> list[str | None]:
    """The runs of a robustness report: intact, then each named input dead (``all``: every input
    but the first)."""
    drops: list[str | None] = [None]
    for name in names:
        for n in list(modalities[1:]) if name == "all" else [name]:
            if n not in modalities:
                raise ValueError(f"cannot drop {n!r}: the model takes {', '.join(modalities)}")
            if n not in drops:
                drops.append(n)
    return drops


def robustness_text(report: Mapping, mode: str) -> str:
    """The per-condition table of the intact run and, when sensors were dropped, the drop table."""
    text = f"mIoU per condition (nothing dropped):\n{format_condition_table(report[NO_DROP])}"
    if len(report) > 1:
        text += f"\n\nmIoU with one input dead ({mode}):\n{format_robustness_table(report)}"
    return text
