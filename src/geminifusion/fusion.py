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

    def relation(self, x: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
        """Channel weights ``r`` of both directions, ``(2, T, C)``, from the two streams."""
        # fc1([a_m; a_o]) = W_own a_m + W_other a_o + b: both halves are shared by the two
        # directions, so two plain products over all tokens serve both.
        c = self.dim
        weight = self.judger_fc1.weight
        hidden = F.linear(x, weight[:, :c], self.judger_fc1.bias)
        # Out of place, so that autocast casts all three operands alike.
        hidden = torch.addmm(hidden.view(-1, c), partner.view(-1, c), weight[:, c:].t())
        hidden = hidden.view(x.shape)
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
        own = x.reshape(2, -1, c)
        partner = own.flip(0)
        r = self.relation(own, partner)
        w_q, w_k, w_v = (w.mT for w in self.in_proj_weight.split(c, dim=1))
        b_q, _, b_v = self.in_proj_bias.split(c, dim=1)

        # Head score of the noise key minus that of the relation key. The key bias cancels, so
        # one projection of the key difference (a + n_k) - a * r suffices.
        q = torch.baddbmm(b_q.unsqueeze(1), own, w_q)
        k_noise = torch.bmm(self.k_noise.unsqueeze(1), w_k)
        key_diff = torch.baddbmm(k_noise, torch.addcmul(own, own, r, value=-1), w_k)
        score = (q * key_diff).view(2, -1, h, c // h).sum(-1, keepdim=True)
        weight_noise = torch.sigmoid(score * (c // h) ** -0.5)

        # Values: partner slot W_v a_o + b_v; noise slot minus partner slot W_v (a_m + n_v - a_o).
        # b_v is carried into the output projection's bias.
        v_partner = torch.bmm(partner, w_v).view(2, -1, h, c // h)
        v_noise = torch.bmm(self.v_noise.unsqueeze(1), w_v)
        v_diff = torch.baddbmm(v_noise, own - partner, w_v).view(2, -1, h, c // h)
        mixed = torch.addcmul(v_partner, weight_noise, v_diff).view(2, -1, c)

        out_bias = torch.baddbmm(
            self.out_proj_bias.unsqueeze(1), b_v.unsqueeze(1), self.out_proj_weight.mT
        )
        return torch.baddbmm(own + out_bias, mixed, self.out_proj_weight.mT).view(shape)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"
