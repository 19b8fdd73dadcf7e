"""Segmentation scores from a confusion matrix, and the tables users read them in.

The rules are the reference's: a pixel counts only when its label is a class (``0 <= label < K``),
so the ignore value 255 and out-of-range values (NYUDv2's 40 and above) are skipped. Rows of the
matrix are the true class, columns the predicted one. Mean accuracy and mIoU are NaN-means: a
class that is neither present nor predicted has no score and does not count; a class that is
predicted but never present scores IoU 0. All scores are percentages, as in mmsegmentation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

IGNORE_INDEX = 255


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` int64 counts of (true class, predicted class) over pixels with a class label.

    Args:
        pred: predicted class per pixel, any shape, values in ``0..K-1``.
        label: true label per pixel, same shape; values outside ``0..K-1`` are skipped.
        num_classes: K.
    """
    if pred.shape != label.shape:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape"
        )
    label = label.reshape(-1).long()
    pred = pred.reshape(-1).long()
    keep = (label >= 0) & (label < num_classes)
    label, pred = label[keep], pred[keep]
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(
            f"predicted classes must lie in 0..{num_classes - 1}, found "
            f"{int(pred.min())}..{int(pred.max())}"
        )
    counts = torch.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


class ConfusionMatrix:
    """Accumulates a confusion matrix batch by batch; ``all_reduce`` sums it across processes."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        device = self.matrix.device
        self.matrix += confusion_matrix(pred.to(device), label.to(device), self.num_classes)

    def all_reduce(self) -> None:
        """Sum the matrices of every process (no-op without torch.distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def scores(self) -> dict:
        return scores_from_confusion(self.matrix)


def scores_from_confusion(matrix: torch.Tensor) -> dict:
    """aAcc, mAcc, mIoU (percent) and per-class IoU / Acc (NaN where undefined).

    Returns:
        ``{"aAcc", "mAcc", "mIoU": float, "IoU", "Acc": list[float], "pixels": int}``; an empty
        matrix scores 0 everywhere, as in the reference.
    """
    m = matrix.detach().to("cpu", torch.float64)
    k = m.shape[0]
    total = float(m.sum())
    if total == 0:
        nan = [math.nan] * k
        return {"aAcc": 0.0, "mAcc": 0.0, "mIoU": 0.0, "IoU": nan, "Acc": list(nan), "pixels": 0}
    hits = m.diagonal()
    present = m.sum(1)
    predicted = m.sum(0)
    acc = hits / present  # NaN where the class is absent (0 / 0)
    iou = hits / (present + predicted - hits)
    return {
        "aAcc": 100.0 * float(hits.sum()) / total,
        "mAcc": 100.0 * _nanmean(acc),
        "mIoU": 100.0 * _nanmean(iou),
        "IoU": [100.0 * float(v) for v in iou],
        "Acc": [100.0 * float(v) for v in acc],
        "pixels": int(total),
    }


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return float(kept.mean()) if kept.numel() else math.nan


def _cell(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return "nan" if math.isnan(value) else f"{value:.2f}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[float | str]]) -> str:
    """A boxed text table (``+---+`` rules, centred cells), the look of mmsegmentation's logs."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) + 2 for i, h in enumerate(header)]
    rule = "+" + "+".join("-" * w for w in widths) + "+"

    def line(values: Sequence[str]) -> str:
        return "|" + "|".join(str(v).center(w) for v, w in zip(values, widths, strict=True)) + "|"

    return "\n".join([rule, line(header), rule, *(line(r) for r in cells), rule])


def format_class_table(scores: Mapping, class_names: Sequence[str] | None = None) -> str:
    """``Class | IoU | Acc``, one row per class."""
    iou, acc = scores["IoU"], scores["Acc"]
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(iou))]
    if len(names) != len(iou):
        raise ValueError(f"{len(names)} class names for {len(iou)} classes")
    return format_table(("Class", "IoU", "Acc"), list(zip(names, iou, acc, strict=True)))


def format_summary_table(results: Mapping[str, Mapping]) -> str:
    """``aAcc | mIoU | mAcc``; with several outputs, one row each, named in an ``Output`` column."""
    keys = ("aAcc", "mIoU", "mAcc")
    if len(results) == 1:
        (scores,) = results.values()
        return format_table(keys, [[scores[k] for k in keys]])
    rows = [[name, *(scores[k] for k in keys)] for name, scores in results.items()]
    return format_table(("Output", *keys), rows)


def format_report(
    results: Mapping[str, Mapping],
    class_names: Sequence[str] | None = None,
    per_class: str | None = None,
) -> str:
    """The per-class table of one output (default: the last, the ensemble) and the summary."""
    if not results:
        raise ValueError("no results to report")
    name = per_class if per_class is not None else list(results)[-1]
    if name not in results:
        raise ValueError(f"no output named {name!r}; outputs: {', '.join(results)}")
    return (
        f"per-class results ({name}):\n{format_class_table(results[name], class_names)}\n"
        f"Summary:\n{format_summary_table(results)}"
    )


def to_json_ready(value):
    """Replace NaN floats with None (strict JSON has no NaN), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: to_json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_ready(v) for v in value]
    return value
