"""GeminiFusion written straight from the paper's definition, as the reference runs it.

A per-sample loop through ``torch.nn.MultiheadAttention`` with the two keys and values stacked as
a length-2 sequence. Slow on purpose: it is the twin the fast closed form is checked against, and
the baseline of ``benchmarks/bench_model.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geminifusion.fusion import GeminiFusion


def attention_modules(fusion: GeminiFusion) -> list[nn.MultiheadAttention]:
    """One ``nn.MultiheadAttention`` per direction holding the fusion's weights."""
    p = fusion.in_proj_weight
    mhas = []
    for d in range(2):
        mha = nn.MultiheadAttention(fusion.dim, fusion.num_heads).to(p.device, p.dtype)
        with torch.no_grad():
            mha.in_proj_weight.copy_(fusion.in_proj_weight[d])
            mha.in_proj_bias.copy_(fusion.in_proj_bias[d])
            mha.out_proj.weight.copy_(fusion.out_proj_weight[d])
            mha.out_proj.bias.copy_(fusion.out_proj_bias[d])
        mhas.append(mha.eval())
    return mhas


def plain_fusion(fusion: GeminiFusion, x: torch.Tensor) -> torch.Tensor:
    """Reference form: ``x`` is ``(2, B, N, C)``; returns the fused streams, same shape."""
    mhas = attention_modules(fusion)

    def judge(own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(fusion.judger_fc1(torch.cat([own, other], dim=-1)))
        return torch.softmax(fusion.judger_fc2(hidden), dim=-1)

    out = torch.empty_like(x)
    for b in range(x.shape[1]):
        for m in range(2):
            own, other = x[m, b].unsqueeze(0), x[1 - m, b].unsqueeze(0)  # (1, N, C): L=1, batch N
            r = judge(own, other)
            keys = torch.cat([own + fusion.k_noise[m], own * r], dim=0)
            values = torch.cat([own + fusion.v_noise[m], other], dim=0)
            attended = mhas[m](own, keys, values, need_weights=False)[0]
            out[m, b] = x[m, b] + attended.squeeze(0)
    return out


class PlainGeminiFusion(nn.Module):
    """Drop-in replacement of a ``GeminiFusion`` module that runs the plain form."""

    def __init__(self, fusion: GeminiFusion) -> None:
        super().__init__()
        self.fusion = fusion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return plain_fusion(self.fusion, x.reshape(2, shape[1], -1, shape[-1])).view(shape)


def swap_in_plain_fusion(model: nn.Module) -> nn.Module:
    """Replace every ``GeminiFusion`` inside ``model`` with its plain twin, in place."""
    for name, child in list(model.named_children()):
        if isinstance(child, GeminiFusion):
            setattr(model, name, PlainGeminiFusion(child))
        else:
            swap_in_plain_fusion(child)
    return model
