"""Plain twins of the fast layers, written straight from the paper's definitions.

Slow on purpose: the tests check each fast form against its twin (in float64, to 1e-10 and
closer), and the benchmarks time the fast forms against them. ``plain_fusion`` is GeminiFusion as
the reference runs it, a per-sample loop through ``nn.MultiheadAttention``;
``plain_window_attention`` is Swin window attention the way the reference writes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from geminifusion.backbones.swin import WindowAttention
from geminifusion.fusion import GeminiFusion
from geminifusion.layers import LEAN


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


def plain_window_attention(attn: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Window attention the way the reference writes it: pad, roll, partition, one masked
    softmax over all windows with the full ``(nW, N, N)`` mask, reverse, roll back, crop."""
    s, height, width, c = x.shape
    ws, shift, heads = attn.window_size, attn.shift_size, attn.num_heads
    x = F.pad(x, (0, 0, 0, -width % ws, 0, -height % ws))
    hp, wp = x.shape[1:3]
    if shift:
        x = torch.roll(x, (-shift, -shift), dims=(1, 2))
    windows = x.view(s, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(-1, ws * ws, c)
    qkv = attn.qkv(windows).view(windows.shape[0], ws * ws, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    scores = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)

    table = attn.relative_position_bias_table
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    rel = coords.flatten(1)[:, :, None] - coords.flatten(1)[:, None, :] + ws - 1
    bias = table[(rel[0] * (2 * ws - 1) + rel[1]).flatten()].view(ws * ws, ws * ws, heads)
    scores = scores + bias.permute(2, 0, 1)
    if shift:
        label = torch.zeros(hp, wp)
        cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
        for i, rows in enumerate(cuts):
            for j, cols in enumerate(cuts):
                label[rows, cols] = 3 * i + j
        label = label.view(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
        mask = (label[:, None, :] != label[:, :, None]).to(x.dtype) * -100.0
        n_windows = mask.shape[0]
        scores = scores.view(s, n_windows, heads, ws * ws, ws * ws) + mask[None, :, None]
        scores = scores.view(-1, heads, ws * ws, ws * ws)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(-1, ws * ws, c)
    out = attn.proj(out)
    out = out.view(s, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(s, hp, wp, c)
    if shift:
        out = torch.roll(out, (shift, shift), dims=(1, 2))
    return out[:, :height, :width]


def plain_output_loss(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = 255):
    """The reference's loss of one output: upsample, ``log_softmax``, ``nll_loss`` (batch mean)."""
    up = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    return F.nll_loss(F.log_softmax(up, dim=1), label, ignore_index=ignore_index)


@contextlib.contextmanager
def plain_autograd() -> Iterator[None]:
    """Train with autograd's own bookkeeping: the lean recomputations and the lean loss off."""
    previous = LEAN["enabled"]
    LEAN["enabled"] = False
    try:
        yield
    finally:
        LEAN["enabled"] = previous
