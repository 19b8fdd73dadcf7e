"""SegFormer's all-MLP decode head, shared by every modality."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class LinearEmbed(nn.Module):
    """Per-pixel linear map of a feature map (a 1x1 convolution kept as ``nn.Linear``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.proj.weight[:, :, None, None], self.proj.bias)


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
        dropout: float = 0.1,
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
        resolution.
        """
        size = features[0].shape[-2:]
        e = self.embed_dim
        fuse = self.linear_fuse.conv.weight.flatten(1)  # (E, 4E), inputs ordered c4, c3, c2, c1
        out = None
        for i in reversed(range(4)):
            part = fuse[:, (3 - i) * e : (4 - i) * e]
            embed = getattr(self, f"linear_c{i + 1}").proj
            x = F.conv2d(features[i], (part @ embed.weight)[:, :, None, None], part @ embed.bias)
            if i > 0:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            out = x if out is None else out.add_(x)
        x = F.relu(self.linear_fuse.bn(out))
        return self.linear_pred(self.dropout(x))
