"""The GeminiFusion layer, shared by every backbone (2D and the LiDAR-camera fusion).

GeminiFusion (Jia et al., ICML 2024) lets each token of one stream attend to two keys at the same
position: a "noise" key built from itself and a relation-weighted copy of itself, with values taken
from itself and from the token of the other stream. With only two keys per query, a head's softmax
is the sigmoid of one score difference, so the whole layer reduces to a few matrix products over
all tokens at once. Both directions (stream 0 queries stream 1 and vice versa) run as one batched
product over a leading stream axis of size 2.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from geminifusion.layers import gelu

# The paper's names of this layer's parameters, relative to the module that holds the layer. Its
# two attention directions are separate ``nn.MultiheadAttention`` modules (direction 0, "stream 0
# queries", is ``cross_attn_0_to_1``); here they are stacked on a leading axis of size 2.
REFERENCE_DIRECTIONS = ("cross_attn_0_to_1", "cross_attn_1_to_0")
REFERENCE_NAMES: dict[str, str] = {
    "in_proj_weight": "{direction}.in_proj_weight",
    "in_proj_bias": "{direction}.in_proj_bias",
    "out_proj_weight": "{direction}.out_proj.weight",
    "out_proj_bias": "{direction}.out_proj.bias",
    "k_noise": "k_noise.weight",
    "v_noise": "v_noise.weight",
    "judger_fc1.weight": "relation_judger.0.fc1.weight",
    "judger_fc1.bias": "relation_judger.0.fc1.bias",
    "judger_fc2.weight": "relation_judger.0.fc2.weight",
    "judger_fc2.bias": "relation_judger.0.fc2.bias",
}


def reference_names(name: str) -> list[str]:
    """The paper's name(s) of parameter ``name``: two (one per direction) for stacked ones."""
    pattern = REFERENCE_NAMES[name]
    if "{direction}" not in pattern:
        return [pattern]
    return [pattern.format(direction=d) for d in REFERENCE_DIRECTIONS]


class FoldedWeights(NamedTuple):
    """The fusion's parameters rearranged for its closed form (see ``GeminiFusion.forward``)."""

    sum_weight: torch.Tensor  # (C, 3C)
    sum_bias: torch.Tensor  # (3C,)
    diff_weight: torch.Tensor  # (C, 3C)
    diff_bias: torch.Tensor  # (3C,)
    q_weight: torch.Tensor  # (2, C, C), transposed
    q_bias: torch.Tensor  # (2, 1, C)
    k_weight: torch.Tensor  # (2, C, C), transposed
    k_bias: torch.Tensor  # (2, 1, C): the key noise, projected
    sign: torch.Tensor  # (2, 1, 1): +1 for direction 0, -1 for direction 1
    heads: torch.Tensor | None  # (C, H): 1 where channel c belongs to head h (narrow heads only)


class GeminiFusion(nn.Module):
    """Pixel-wise cross-stream attention between two aligned token streams.

    For stream ``m`` with partner ``o`` at one position (``a_m``, ``a_o`` of ``C`` channels):

    - ``r = softmax(fc2(gelu(fc1([a_m; a_o]))))`` over channels (one judger for both directions);
    - keys ``[a_m + k_noise[m], a_m * r]``, values ``[a_m + v_noise[m], a_o]``;
    - ``a_m + MHA_m(query=a_m, keys, values)`` with ``num_heads`` heads.

    Parameters of the two directions' attentions are stacked on a leading axis of size 2
    (direction ``m`` is "stream m queries"), in ``nn.MultiheadAttention``'s packed layout.

    Args:
        dim: channels ``C``.
        num_heads: heads of each direction's attention (the paper uses 8).
    """

    def __init__(self, dim: int, num_heads: int = 8) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.judger_fc1 = nn.Linear(2 * dim, dim)
        self.judger_fc2 = nn.Linear(dim, dim)
        self.in_proj_weight = nn.Parameter(torch.empty(2, 3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(2, 3 * dim))
        self.out_proj_weight = nn.Parameter(torch.empty(2, dim, dim))
        self.out_proj_bias = nn.Parameter(torch.zeros(2, dim))
        self.k_noise = nn.Parameter(torch.empty(2, dim))
        self.v_noise = nn.Parameter(torch.empty(2, dim))
        self._folded: tuple[tuple, FoldedWeights] | None = None  # (parameter versions, weights)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The defaults of the modules the reference builds the layer from.
        for d in range(2):
            nn.init.xavier_uniform_(self.in_proj_weight[d])
            bound = 1 / math.sqrt(self.dim)
            nn.init.uniform_(self.out_proj_weight[d], -bound, bound)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj_bias)
        nn.init.normal_(self.k_noise)
        nn.init.normal_(self.v_noise)
        for fc in (self.judger_fc1, self.judger_fc2):
            nn.init.trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)

    def folded_weights(self) -> FoldedWeights:
        """The weights rearranged for the closed form; cached while no parameter changes.

        Rebuilt on every call when autograd records (training), so gradients flow to the
        parameters; otherwise kept until a parameter is replaced or modified in place. Parameters
        made under ``torch.inference_mode`` count no versions, so they are never cached.
        """
        if torch.compiler.is_compiling():
            # Traced parameters (torch.compile, torch.export) have no storage to key a cache on:
            # the fold becomes part of the graph (geminifusion.export pins it as constants).
            return self._fold()
        params = list(self.parameters())
        recording = torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        if recording or any(p.is_inference() for p in params):
            return self._fold()
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._folded is None or self._folded[0] != key:
            self._folded = (key, self._fold())
        return self._folded[1]

    def _fold(self) -> FoldedWeights:
        c = self.dim
        d_head = c // self.num_heads
        device = self.in_proj_weight.device
        with torch.autocast(device.type, enabled=False):  # parameter precision, always
            w_own, w_other = self.judger_fc1.weight.split(c, dim=1)
            w_q, w_k, w_v = self.in_proj_weight.split(c, dim=1)  # (2, C, C) each
            b_q, _, b_v = self.in_proj_bias.split(c, dim=1)
            v_noise = torch.bmm(w_v, self.v_noise.unsqueeze(-1)).squeeze(-1)  # (2, C)
            k_noise = torch.bmm(w_k, self.k_noise.unsqueeze(-1)).mT  # (2, 1, C)
            half = w_v / 2
            heads = None
            if d_head < 8:  # measured faster below 8 channels a head (CPU, float32)
                channel_head = torch.arange(c, device=device) // d_head
                heads = channel_head[:, None] == torch.arange(self.num_heads, device=device)
                heads = heads.to(w_v.dtype)
            return FoldedWeights(
                sum_weight=torch.cat([(w_own + w_other) / 2, half[0], half[1]]).t(),
                sum_bias=torch.cat([self.judger_fc1.bias, (b_v + v_noise / 2).flatten()]),
                diff_weight=torch.cat([(w_own - w_other) / 2, w_v[0], -w_v[1]]).t(),
                diff_bias=torch.cat([torch.zeros_like(b_v[0]), v_noise.flatten()]),
                q_weight=w_q.mT,
                q_bias=b_q.unsqueeze(1),
                k_weight=w_k.mT,
                k_bias=k_noise,
                sign=torch.tensor([1.0, -1.0], dtype=w_v.dtype, device=device).view(2, 1, 1),
                heads=heads,
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fuse two aligned streams.

        Args:
            x: ``(2, ..., C)``: stream 0 and stream 1, any matching token layout between.

        Returns:
            The fused streams, same shape.
        """
        if x.shape[0] != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"GeminiFusion expects (2, ..., {self.dim}), got {tuple(x.shape)}")
        shape = x.shape
        c, h = self.dim, self.num_heads
        d_head = c // h
        w = self.folded_weights()
        a = x.reshape(2, -1, c)
        t = a.shape[1]

        # Everything linear in the two streams is computed from their sum s and difference d:
        # fc1([a_m; a_o]) = W+ s +/- W- d with W+/- = (W_own +/- W_other) / 2, and the value
        # slots of both directions are W_v^m s / 2 and +/- W_v^m d. One product each for s and
        # d serves both directions (7 C^2 multiply-adds per token and stream instead of 8).
        by_sum = torch.addmm(w.sum_bias, a[0] + a[1], w.sum_weight)  # (T, 3C): judger, values/2
        by_diff = torch.addmm(w.diff_bias, a[0] - a[1], w.diff_weight)  # (T, 3C): judger, +/-values
        # Attention on the noise slot minus one half, per head. Temporaries live inside the two
        # helpers, so they are freed before the values are mixed (each is ~10 MB at stride 4).
        weight = self._noise_weight(a, self._relation(by_sum, by_diff, w), w)
        # The value mix: (W_v^m s / 2 + b_v + W_v^m n_v / 2) + weight * (+/- W_v^m d + W_v^m n_v).
        values, spread = by_sum[:, c:].view(t, 2, c), by_diff[:, c:].view(t, 2, c)
        if w.heads is None:
            heads = (t, 2, h, d_head)
            weight = weight.transpose(0, 1).unsqueeze(-1)  # (T, 2, H, 1)
            mixed = torch.addcmul(values.view(heads), spread.view(heads), weight)
        else:  # narrow heads: the per-head weight broadcast by a product with a 0/1 matrix
            weight = torch.matmul(weight, w.heads.t()).transpose(0, 1)  # (T, 2, C)
            mixed = torch.addcmul(values, spread, weight)
        del by_sum, by_diff, values, spread
        mixed = mixed.view(t, 2, c).transpose(0, 1)  # (2, T, C), a strided view
        residual = a + self.out_proj_bias.unsqueeze(1)
        return torch.baddbmm(residual, mixed, self.out_proj_weight.mT).view(shape)

    def _relation(
        self, by_sum: torch.Tensor, by_diff: torch.Tensor, w: FoldedWeights
    ) -> torch.Tensor:
        """Channel weights ``r`` of both directions, ``(2, T, C)``, from fc1's two halves."""
        c = self.dim
        hidden = torch.addcmul(by_sum[:, :c], by_diff[:, :c], w.sign)  # W+ s +/- W- d + b
        judger = self.judger_fc2
        return torch.softmax(F.linear(gelu(hidden), judger.weight, judger.bias), dim=-1)

    def _noise_weight(self, a: torch.Tensor, r: torch.Tensor, w: FoldedWeights) -> torch.Tensor:
        """Attention weight of the noise key minus 1/2 per head, ``(2, T, H)``."""
        # Head score of the noise key minus that of the relation key. The key bias cancels, so
        # one projection of the key difference (a + n_k) - a * r suffices.
        q = torch.baddbmm(w.q_bias, a, w.q_weight)
        key_diff = torch.baddbmm(w.k_bias, torch.addcmul(a, a, r, value=-1), w.k_weight)
        d_head = self.dim // self.num_heads
        if w.heads is None:
            score = (q * key_diff).view(*q.shape[:2], self.num_heads, d_head).sum(-1)
        else:  # narrow heads: per-head sums as a product with a 0/1 matrix
            score = torch.matmul(q * key_diff, w.heads)
        return torch.sigmoid(score * d_head**-0.5) - 0.5

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"
