"""The backbone contract: what the segmentor, the weight loaders and model folders rely on.

A backbone maps ``M`` aligned inputs, stacked as ``(M, B, 3, H, W)``, to four feature maps
``(S, B, C_s, H_s, W_s)`` at strides 4, 8, 16 and 32, where ``S`` is the number of streams its
blocks carry (``S = M`` for MiT and Swin; 2 for the multi-sensor DeLiVER backbone, which merges
the extra sensors into one stream). Everything else the package needs from a backbone is an
attribute of :class:`Backbone`, documented here, so that no caller has to guess with ``getattr``.
A new family subclasses it and adds one row to ``geminifusion.backbones.BACKBONES``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def check_head_counts(config: object, *names: str) -> None:
    """Each named field of ``config`` holds positive integers, or a ``ValueError`` names it.

    Runs in a config's ``__post_init__`` before its divisibility checks, which would otherwise
    fail with a ``ZeroDivisionError`` on a zero head count.
    """
    for name in names:
        value = getattr(config, name)
        values = value if isinstance(value, tuple) else (value,)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise ValueError(
                f"{type(config).__name__}.{name} must be positive integers, got {value}"
            )


class Backbone(nn.Module):
    """Base class of every backbone family.

    Attributes:
        config: the frozen dataclass the backbone was built from.
        num_modalities: inputs it takes (``M``).
        num_streams: feature streams it returns (``S``); the head runs on each, and the
            segmentor ensembles them when there are several.
        stream_names: names of the streams, or None when they are the inputs themselves.
        out_channels: channels of the four feature maps.
        family: which single-modality pretrained weights fit it (``"mit"``, ``"swin"``).
        reference_prefix: where the paper's checkpoints keep the backbone (``"encoder."``).
        head_reference_prefix: where they keep the decode head (``"decoder."``).
        upsample_logits: the paper's code of this family returns logits at the input size.
        activation_checkpointing: recompute each block in backward instead of keeping its
            activations (a training option, not part of the architecture; off by default).
    """

    family: str = ""
    reference_prefix: str = ""
    head_reference_prefix: str = "decoder."
    upsample_logits: bool = False

    def __init__(
        self,
        config: object,
        num_modalities: int,
        out_channels: Sequence[int],
        num_streams: int | None = None,
        stream_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_modalities = num_modalities
        self.num_streams = num_modalities if num_streams is None else num_streams
        self.stream_names = tuple(stream_names) if stream_names is not None else None
        self.out_channels = tuple(out_channels)
        self.activation_checkpointing = False

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        """``(M, B, 3, H, W)`` -> four ``(S, B, C_s, H_s, W_s)`` maps."""
        raise NotImplementedError

    def reference_name(self, key: str) -> str:
        """The paper's name of one of our parameters (without the prefix); a rename rule."""
        return key

    def reference_derived_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers the paper's checkpoints store that this backbone rebuilds (window geometry)."""
        return {}
