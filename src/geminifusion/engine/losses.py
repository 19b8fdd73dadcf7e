"""The training loss: pixel-wise NLL of the log-softmax, summed over every model output."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def output_loss(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Mean NLL over the labelled pixels of one output, upsampled bilinearly to the label size.

    Computed in float32 whatever the autocast dtype. A batch with no labelled pixel gives 0
    (with a zero gradient) instead of the 0 / 0 = NaN of ``reduction="mean"``.
    """
    logits = F.interpolate(
        logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False
    )
    log_probs = F.log_softmax(logits, dim=1)
    total = F.nll_loss(log_probs, label, ignore_index=ignore_index, reduction="sum")
    count = (label != ignore_index).sum().clamp_min(1)
    return total / count


def ohem_loss(
    logits: torch.Tensor,
    label: torch.Tensor,
    ignore_index: int = 255,
    threshold: float = 0.7,
    min_fraction: float = 1 / 16,
) -> torch.Tensor:
    """Cross-entropy averaged over the batch's hard pixels (the DeLiVER branch's OHEM).

    A labelled pixel is hard when its loss exceeds ``-log(threshold)`` (the model gives its class
    less than 0.7). When fewer than ``min_fraction`` of the labelled pixels are hard, the pixels
    with the highest losses, that many, are averaged instead. Logits are upsampled bilinearly to
    the label size first, in float32.
    """
    logits = logits.float()
    if logits.shape[-2:] != label.shape[-2:]:
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, label, ignore_index=ignore_index, reduction="none").flatten()
    valid = int((label != ignore_index).sum())
    hard = loss[loss > -math.log(threshold)]
    floor = math.floor(valid * min_fraction)
    if hard.numel() < floor:
        hard = loss.topk(floor).values
    return hard.mean() if hard.numel() else loss.sum() * 0.0


LOSSES = {"ce": output_loss, "ohem": ohem_loss}


def segmentation_loss(
    outputs: Sequence[torch.Tensor],
    label: torch.Tensor,
    ignore_index: int = 255,
    kind: str = "ce",
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sum of one loss over ``outputs`` (each modality's and the ensemble's).

    ``kind`` is ``"ce"`` (:func:`output_loss`, the main recipe) or ``"ohem"`` (:func:`ohem_loss`,
    the DeLiVER recipe). The ensemble is built from detached logits, so its term only reaches
    ``alpha``.

    Returns:
        The total and the per-output losses (detached), in output order.
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; expected one of {', '.join(LOSSES)}")
    losses = [LOSSES[kind](o, label, ignore_index) for o in outputs]
    return torch.stack(losses).sum(), [loss.detach() for loss in losses]
