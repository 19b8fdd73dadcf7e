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
        """Four NCHW maps (strides 4..32) -> logits at the size of the first."""
        size = features[0].shape[-2:]
        embedded = []
        for i in reversed(range(4)):  # the reference concatenates c4, c3, c2, c1
            x = getattr(self, f"linear_c{i + 1}")(features[i])
            if i > 0:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            embedded.append(x)
        x = self.linear_fuse(torch.cat(embedded, dim=1))
        return self.linear_pred(self.dropout(x))
