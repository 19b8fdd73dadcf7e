"""SegFormer's all-MLP decode head, shared by every modality."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from geminifusion.layers import recomputed

# SegFormer's dropout before the classifier (the paper's code uses it for every model).
HEAD_DROPOUT = 0.1


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution of an NCHW map as one batched matrix product.

    Same numbers as ``F.conv2d`` with a 1x1 kernel; on CPU, oneDNN's 1x1 convolution builds its
    output in a blocked layout and reorders it, which takes twice the output's memory and was
    slower at the head's stride-4 size (measured: 22 vs 15 ms, 83 vs 41 MB for 64 -> 256 channels
    of two 120 x 160 maps).
    """
    b, _, h, w = x.shape
    weight = weight.flatten(1).expand(b, -1, -1)
    x = x.flatten(2)
    out = torch.bmm(weight, x) if bias is None else torch.baddbmm(bias[:, None], weight, x)
    return out.view(b, -1, h, w)


class LinearEmbed(nn.Module):
    """Per-pixel linear map of a feature map (a 1x1 convolution kept as ``nn.Linear``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(x, self.proj.weight, self.proj.bias)


class ConvBNReLU(nn.Module):
    """1x1 convolution without bias, BatchNorm, ReLU (mmcv's ``ConvModule`` layout)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class SegFormerHead(nn.Module):
    """Embed each stage to ``embed_dim``, upsample to stride 4, concatenate, fuse, classify.

    Args:
        in_channels: channels of the four stages.
        num_classes: output classes.
        embed_dim: width of the head (256 in the main reference, 512 in its DeLiVER branch).
        dropout: ``Dropout2d`` rate before the classifier.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        embed_dim: int = 256,
        dropout: float = HEAD_DROPOUT,
    ) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        for i, channels in enumerate(self.in_channels):
            setattr(self, f"linear_c{i + 1}", LinearEmbed(channels, embed_dim))
        self.linear_fuse = ConvBNReLU(4 * embed_dim, embed_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Four NCHW maps (strides 4..32) -> logits at the size of the first.

        Computes ``fuse(concat(up(embed_4(c4)), .., embed_1(c1)))`` as ``sum_i up(A_i c_i + a_i)``
        with ``A_i = F_i E_i``: the fuse convolution's slice for stage ``i`` is folded into that
        stage's embedding. Upsampling is linear and keeps constants, so this is the same function,
        but no 4E-channel map is ever built at stride 4 and the deep stages are mixed at their own
        resolution. With fixed statistics (eval, or frozen while training) the BatchNorm is a
        per-channel affine map and folds in too, so the stride-4 map is built once and rectified
        in place: the head's peak memory is two such maps.
        """
        size = features[0].shape[-2:]
        e = self.embed_dim
        fuse = self.linear_fuse.conv.weight.flatten(1)  # (E, 4E), inputs ordered c4, c3, c2, c1
        bn = self.linear_fuse.bn
        batch_statistics = bn.training or bn.running_mean is None
        if batch_statistics:
            scale, shift = None, None
        else:
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
        out = None
        for i in reversed(range(4)):
            part = fuse[:, (3 - i) * e : (4 - i) * e]
            embed = getattr(self, f"linear_c{i + 1}").proj
            weight, bias = part @ embed.weight, part @ embed.bias
            if scale is not None:
                weight, bias = scale[:, None] * weight, scale * bias
                if i == 0:  # the one map that is not upsampled carries the shift
                    bias = bias + shift
            x = pointwise(features[i], weight, bias)
            if i > 0:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            out = x if out is None else out.add_(x)
            del x
        x = F.relu(bn(out)) if batch_statistics else F.relu(out, inplace=True)
        # Lean: backward keeps the rectified map only, not also its dropped-out copy.
        random = self.training and self.dropout.p > 0
        return recomputed(self._classify, x, random=random)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        pred = self.linear_pred
        return pointwise(self.dropout(x), pred.weight, pred.bias)
