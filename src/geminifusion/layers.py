"""Small layers that work on modality-stacked tensors (modalities on axis 0)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Whether training keeps the lean forms below. Only the plain twins switch it off
# (``geminifusion.testing.plain.plain_autograd``), to check that both give the same gradients.
LEAN = {"enabled": True}


def recording() -> bool:
    """True when autograd records this forward for a backward pass, outside torch.compile.

    A compiled graph plans its own recomputation (AOTAutograd's partitioner). The compiling
    test comes first: it is a constant to the tracer, which then reads nothing else here.
    """
    if torch.compiler.is_compiling():
        return False
    return torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def recomputed(fn: Callable[..., torch.Tensor], *args, random: bool = False) -> torch.Tensor:
    """``fn(*args)``, keeping only ``args`` for backward, where ``fn`` runs again.

    For chains whose intermediates cost more memory than recomputing them costs time (the
    fusion's elementwise chain, a LayerNorm's normalised copy, the Mix-FFN's hidden maps).
    ``random``: ``fn`` draws random numbers (dropout), which the recomputation must repeat.
    Outside training, or with the lean forms switched off, it is a plain call.
    """
    if not (LEAN["enabled"] and recording()):
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=random)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU, in place unless autograd records it.

    An MLP's hidden map is a block's largest activation (39 MiB at stride 4 for two 480 x 640
    inputs); writing GELU into it saves one such buffer at inference. ``x`` must be a fresh
    tensor that nothing else reads.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return F.gelu(x)
    return torch.ops.aten.gelu_(x)


def run_block(block: nn.Module, *args, checkpointed: bool) -> torch.Tensor:
    """One transformer block; ``checkpointed`` (activation checkpointing) keeps only its inputs
    for backward and runs it again there, with the same drop-path draws, so the gradients and
    the trained weights are those of the plain run."""
    if checkpointed and torch.is_grad_enabled():  # compiled graphs keep it too
        return checkpoint(block, *args, use_reentrant=False, preserve_rng_state=True)
    return block(*args)


class ModalityLayerNorm(nn.Module):
    """LayerNorm with one affine transform per modality, applied to modality-stacked tokens.

    The input has the modalities along its first axis (``M x ... x C``); all modalities share one
    normalisation pass and differ only in their ``(M, C)`` scale and shift.
    """

    def __init__(self, num_modalities: int, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_modalities, dim))
        self.bias = nn.Parameter(torch.zeros(num_modalities, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.weight.shape[0]
        if x.shape[0] != m:
            raise ValueError(f"expected {m} modalities on axis 0, got shape {tuple(x.shape)}")
        # Lean: backward keeps the input only, not also the normalised copy the affine reads.
        return recomputed(self._normalise, x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        m = self.weight.shape[0]
        shape = (m,) + (1,) * (x.dim() - 2) + (self.dim,)
        y = F.layer_norm(x, (self.dim,), eps=self.eps)
        return torch.addcmul(self.bias.view(shape), y, self.weight.view(shape))

    def extra_repr(self) -> str:
        return f"modalities={self.weight.shape[0]}, dim={self.dim}, eps={self.eps}"


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch per sample (and per modality) while training.

    The mask has one entry per leading index of ``x`` up to ``sample_dims`` (``(M, B)`` for
    modality-stacked tokens), so each modality of each sample is dropped independently, as in the
    reference, which applies the layer to each modality separately.
    """

    def __init__(self, p: float = 0.0, sample_dims: int = 2) -> None:
        super().__init__()
        self.p = p
        self.sample_dims = sample_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = x.shape[: self.sample_dims] + (1,) * (x.dim() - self.sample_dims)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"
