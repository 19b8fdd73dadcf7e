"""Multi-sensor MiT (the paper's DeLiVER setting): any number of aligned inputs, two fused streams.

The transformer blocks always carry two streams: the first input (RGB) and a *merged* stream.
Every input goes through each stage's shared patch-embedding convolution (all of them as one
batch) with its own LayerNorm. Before a stage's blocks, each extra input is scored per pixel
(depthwise 3x3 conv, 1x1 conv to one channel, sigmoid), scaled by ``1 + score`` and the extras are
merged by an element-wise maximum. After stages 1-3 each extra input's next-stage input is its
scaled tokens plus the merged stream's stage output. With two inputs there is nothing to merge and
the backbone is the plain two-stream MiT.

Checkpoint naming follows the reference DeLiVER branch (``backbone.*``, the head as
``decode_head.*``, score nets as ``extra_score_predictor.{stage}.score_nets.{i}``). The reference
builds one score net per input but calls only the first ``M - 1``; the last one is kept so that
its checkpoints load strictly, and it is frozen (``requires_grad=False``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from geminifusion.backbones.mit import MIT_VARIANTS, MiTConfig, MixTransformer, tokens_to_maps
from geminifusion.layers import ModalityLayerNorm, run_block


@dataclass(frozen=True)
class DeliverConfig(MiTConfig):
    """A MiT encoder wired the DeLiVER way, plus the conventions of that reference branch.

    Args:
        head_embed_dim: SegFormer head width. The reference branch meant 256 for B0/B1 but its
            test never matches, so every released size (and its checkpoints) uses 512.
        (other fields: see :class:`MiTConfig`)
    """

    drop_path_rate: float = 0.2  # the reference's 4-modality training run (0.4 for 2 inputs)
    head_embed_dim: int = 512


# The released sizes: the MiT widths and depths, wired the DeLiVER way.
DELIVER_VARIANTS: dict[str, DeliverConfig] = {
    f"deliver_{name}": DeliverConfig(embed_dims=mit.embed_dims, depths=mit.depths)
    for name, mit in MIT_VARIANTS.items()
}


class ScorePredictor(nn.Module):
    """Per-pixel confidence of each extra input at one stage.

    Holds ``num_nets`` nets (depthwise 3x3 conv, 1x1 conv to one channel); the ``E`` extras of a
    forward use nets ``0 .. E-1``. All extras are scored in one grouped convolution pair.
    """

    def __init__(self, dim: int, num_nets: int) -> None:
        super().__init__()
        self.dim = dim
        self.score_nets = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.Conv2d(dim, 1, 1))
            for _ in range(num_nets)
        )

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Scores ``(E, B, N, 1)`` in ``[0, 1]`` for extra tokens ``(E, B, N, C)``."""
        e, b, n, c = tokens.shape
        nets = list(self.score_nets)[:e]
        maps = tokens.permute(1, 0, 3, 2).reshape(b, e * c, height, width)
        depthwise = torch.cat([net[0].weight for net in nets])
        x = F.conv2d(maps, depthwise, torch.cat([net[0].bias for net in nets]), 1, 1, 1, e * c)
        pointwise = torch.cat([net[1].weight for net in nets])
        x = F.conv2d(x, pointwise, torch.cat([net[1].bias for net in nets]), groups=e)
        return torch.sigmoid(x).view(b, e, n, 1).transpose(0, 1)


class DeliverMiT(MixTransformer):
    """MiT over ``M >= 2`` aligned inputs whose blocks fuse RGB with a merged extra stream.

    Input: ``(M, B, 3, H, W)`` with RGB first. Output: four maps ``(2, B, C_s, H_s, W_s)``:
    stream 0 is RGB, stream 1 the merged extras (the second input itself when ``M == 2``).
    """

    reference_prefix = "backbone."
    head_reference_prefix = "decode_head."
    upsample_logits = True  # the reference returns logits at the input size

    def __init__(self, config: MiTConfig, num_modalities: int) -> None:
        if num_modalities < 2:
            raise ValueError(
                f"the multi-sensor backbone needs 2 or more inputs, got {num_modalities}"
            )
        super().__init__(config, num_modalities=2)  # the blocks always carry two streams
        self.num_modalities = num_modalities
        self.num_extras = num_modalities - 1
        if num_modalities > 2:
            self.stream_names = ("rgb", "merged")
            for s, dim in enumerate(config.embed_dims):
                self.stage(s)[0].norm = ModalityLayerNorm(num_modalities, dim)
            self.extra_score_predictor = nn.ModuleList(
                ScorePredictor(dim, num_modalities) for dim in config.embed_dims
            )
            for predictor in self.extra_score_predictor:
                # Never called: frozen, so optimisers skip it and DistributedDataParallel needs
                # no find_unused_parameters (the reference turns that on for it).
                predictor.score_nets[-1].requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trace(x)["features"]

    def trace(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Forward that also returns the merge internals, to locate a mismatch.

        Returns:
            ``features``: four ``(2, B, C, h, w)`` maps; ``scores``: per stage ``(E, B, 1, h, w)``;
            ``merged_in``: per stage the merged map ``(B, C, h, w)`` entering the blocks (the
            last two are empty lists when ``M == 2``).
        """
        m, b = x.shape[:2]
        if m != self.num_modalities:
            raise ValueError(f"expected {self.num_modalities} inputs on axis 0, got {m}")
        maps = x.flatten(0, 1)
        out: dict[str, list[torch.Tensor]] = {"features": [], "scores": [], "merged_in": []}
        for s in range(4):
            embed, blocks, norm = self.stage(s)
            tokens, height, width = embed(maps, m)
            if m > 2:
                scores = self.extra_score_predictor[s](tokens[1:], height, width)
                scaled = torch.addcmul(tokens[1:], scores, tokens[1:])
                merged = scaled.amax(0)
                tokens = torch.stack([tokens[0], merged])
                out["scores"].append(tokens_to_maps(scores, height, width).unflatten(0, (m - 1, b)))
                out["merged_in"].append(tokens_to_maps(merged[None], height, width))
            for block in blocks:
                tokens = run_block(
                    block, tokens, height, width, checkpointed=self.activation_checkpointing
                )
            tokens = norm(tokens)
            stage_maps = tokens_to_maps(tokens, height, width).contiguous()
            out["features"].append(stage_maps.view(2, b, *stage_maps.shape[1:]))
            if s < 3:
                if m > 2:  # feedback: each extra continues from its scaled tokens + merged output
                    tokens = torch.cat([tokens[:1], scaled + tokens[1:]])
                    maps = tokens_to_maps(tokens, height, width).contiguous()
                else:
                    maps = stage_maps
        return out
