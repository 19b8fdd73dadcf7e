"""The training loss: pixel-wise NLL of the log-softmax, summed over every model output."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from geminifusion.layers import LEAN


def loss_dtype(logits: torch.Tensor) -> torch.dtype:
    """The precision a loss is computed in: float32 for half-precision logits, else their own."""
    return torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype


def _upsampled(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    logits = logits.to(loss_dtype(logits))
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class _UpsampledNLL(torch.autograd.Function):
    """Summed NLL of ``log_softmax(upsample(logits))`` over the labelled pixels.

    Autograd would keep the upsampled logits and their log-softmax for every output (two
    label-sized maps of all classes each, ~98 MB apiece for two 480 x 640 images of 40 classes).
    This keeps only the stride-4 logits and recomputes one sample's upsampling in backward, whose
    gradient is ``softmax - one_hot`` on labelled pixels, taken back through the upsampling.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, label: torch.Tensor, ignore_index: int):
        ctx.save_for_backward(logits, label)
        ctx.ignore_index = ignore_index
        size = label.shape[-2:]
        total = logits.new_zeros((), dtype=loss_dtype(logits))
        for i in range(logits.shape[0]):
            up = _upsampled(logits[i : i + 1], size)
            total += F.cross_entropy(
                up, label[i : i + 1], ignore_index=ignore_index, reduction="sum"
            )
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        logits, label = ctx.saved_tensors
        size = label.shape[-2:]
        grad = torch.empty_like(logits)
        for i in range(logits.shape[0]):
            with torch.enable_grad():
                x = logits[i : i + 1].detach().requires_grad_()
                up = _upsampled(x, size)
            target = label[i : i + 1]
            labelled = (target != ctx.ignore_index).unsqueeze(1)
            grad_up = torch.softmax(up.detach(), dim=1)
            grad_up.scatter_add_(
                1, target.unsqueeze(1).clamp(0, up.shape[1] - 1), -labelled.to(up.dtype)
            )
            grad_up.mul_(labelled * grad_total)
            (grad[i : i + 1],) = torch.autograd.grad(up, x, grad_up)
        return grad, None, None


def output_loss(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Mean NLL over the labelled pixels of one output, upsampled bilinearly to the label size.

    One mean over the whole batch, as ``nn.NLLLoss`` takes it. Half-precision logits are computed
    in float32; float32 and float64 in their own precision. A batch with no labelled pixel gives
    0 (with a zero gradient) instead of the 0 / 0 = NaN of ``reduction="mean"``. Labels other
    than ``ignore_index`` must be valid class indices (the data checks guarantee it).
    """
    count = (label != ignore_index).sum().clamp_min(1)
    if LEAN["enabled"]:
        return _UpsampledNLL.apply(logits, label, ignore_index) / count
    log_probs = F.log_softmax(_upsampled(logits, label.shape[-2:]), dim=1)
    return F.nll_loss(log_probs, label, ignore_index=ignore_index, reduction="sum") / count


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
    the label size first (half precision computed in float32).
    """
    logits = logits.to(loss_dtype(logits))
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
