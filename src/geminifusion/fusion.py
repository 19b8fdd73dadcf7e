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

import torch
import torch.nn.functional as F
from torch import nn


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

    def relation(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights ``r`` of both directions, ``(2, ..., C)``, from the two streams."""
        # fc1([a_m; a_o]) = W_own a_m + W_other a_o: one product over both streams serves both
        # directions, then each direction adds its partner's half.
        stacked = torch.cat(self.judger_fc1.weight.chunk(2, dim=1), dim=0)  # (2C, C)
        own, other = F.linear(x, stacked).chunk(2, dim=-1)
        hidden = own + other.flip(0) + self.judger_fc1.bias
        return torch.softmax(self.judger_fc2(F.gelu(hidden)), dim=-1)

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
        tokens = x.reshape(2, -1, c)
        partner = tokens.flip(0)
        r = self.relation(tokens)
        w_q, w_k, w_v = self.in_proj_weight.split(c, dim=1)
        b_q, _, b_v = self.in_proj_bias.split(c, dim=1)

        q = torch.baddbmm(b_q.unsqueeze(1), tokens, w_q.transpose(1, 2))
        # Score(noise key) - score(relation key): the key bias cancels, one projection suffices.
        key_diff = torch.addcmul(self.k_noise.unsqueeze(1), tokens, 1 - r)
        key_diff = torch.bmm(key_diff, w_k.transpose(1, 2))
        score = (q * key_diff).view(2, -1, h, c // h).sum(-1) * (c // h) ** -0.5
        weight_noise = torch.sigmoid(score).repeat_interleave(c // h, dim=-1)

        # Values: noise slot W_v (a_m + n_v) + b_v, partner slot W_v a_o + b_v.
        v_partner = torch.baddbmm(b_v.unsqueeze(1), partner, w_v.transpose(1, 2))
        v_noise = torch.bmm(self.v_noise.unsqueeze(1), w_v.transpose(1, 2)) + b_v.unsqueeze(1)
        v_own = torch.baddbmm(v_noise, tokens, w_v.transpose(1, 2))
        mixed = torch.addcmul(v_partner, weight_noise, v_own - v_partner)

        out = torch.baddbmm(self.out_proj_bias.unsqueeze(1), mixed, self.out_proj_weight.mT)
        return (tokens + out).view(shape)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"
