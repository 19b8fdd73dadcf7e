"""Mix Transformer (SegFormer's MiT-B0..B5) with GeminiFusion in every block.

All streams share every weight except their LayerNorms, so the streams travel as one
modality-stacked tensor ``(M, B, N, C)`` and each shared layer runs once over ``M * B`` samples.
Parameter names follow the original SegFormer encoder (``patch_embed1``, ``block1.0.attn.q``,
``norm1``), which keeps ImageNet and reference checkpoints a matter of simple renaming.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from geminifusion.backbones.base import Backbone, check_head_counts
from geminifusion.fusion import GeminiFusion
from geminifusion.layers import DropPath, ModalityLayerNorm, gelu, recomputed, run_block


@dataclass(frozen=True)
class MiTConfig:
    """Architecture of a Mix Transformer encoder with GeminiFusion.

    Args:
        embed_dims: channels of the four stages.
        depths: blocks per stage.
        num_heads: self-attention heads per stage.
        sr_ratios: spatial-reduction ratio of the keys/values per stage.
        mlp_ratio: hidden width of the Mix-FFN relative to the stage width.
        qkv_bias: bias in the query and key/value projections.
        drop_path_rate: stochastic depth at the last block (linear from 0).
        fusion_heads: heads of each GeminiFusion attention.
        head_embed_dim: width of the SegFormer head built on this backbone.
    """

    embed_dims: Sequence[int] = (32, 64, 160, 256)
    depths: Sequence[int] = (2, 2, 2, 2)
    num_heads: Sequence[int] = (1, 2, 5, 8)
    sr_ratios: Sequence[int] = (8, 4, 2, 1)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    fusion_heads: int = 8
    head_embed_dim: int = 256

    def __post_init__(self) -> None:
        for name in ("embed_dims", "depths", "num_heads", "sr_ratios"):
            value = tuple(getattr(self, name))
            if len(value) != 4:
                raise ValueError(f"MiTConfig.{name} needs 4 values (one per stage), got {value}")
            object.__setattr__(self, name, value)
        check_head_counts(self, "num_heads")
        for dim, heads in zip(self.embed_dims, self.num_heads, strict=True):
            if dim % heads:
                raise ValueError(f"MiTConfig: embed dim {dim} is not divisible by {heads} heads")


def _mit(dims: tuple[int, ...], depths: tuple[int, ...]) -> MiTConfig:
    return MiTConfig(embed_dims=dims, depths=depths)


# The SegFormer variants; only widths and depths change between them.
MIT_VARIANTS: dict[str, MiTConfig] = {
    "mit_b0": _mit((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": _mit((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": _mit((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b3": _mit((64, 128, 320, 512), (3, 4, 18, 3)),
    "mit_b4": _mit((64, 128, 320, 512), (3, 8, 27, 3)),
    "mit_b5": _mit((64, 128, 320, 512), (3, 6, 40, 3)),
}


def tokens_to_maps(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(M, B, N, C)`` tokens -> ``(M * B, C, H, W)`` maps, the layout convolutions take."""
    m, b, _, c = x.shape
    return x.reshape(m * b, height, width, c).permute(0, 3, 1, 2)


def maps_to_tokens(x: torch.Tensor, num_modalities: int) -> torch.Tensor:
    """``(M * B, C, H, W)`` maps -> ``(M, B, H * W, C)`` tokens."""
    mb, c = x.shape[:2]
    return x.flatten(2).transpose(1, 2).reshape(num_modalities, mb // num_modalities, -1, c)


class OverlapPatchEmbed(nn.Module):
    """Overlapping strided convolution, then one LayerNorm per input modality."""

    def __init__(
        self, in_chans: int, dim: int, kernel: int, stride: int, num_modalities: int
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride, padding=kernel // 2)
        self.norm = ModalityLayerNorm(num_modalities, dim)

    def forward(self, x: torch.Tensor, num_modalities: int) -> tuple[torch.Tensor, int, int]:
        """``(M * B, C_in, H, W)`` -> tokens ``(M, B, N, C)`` and the new height and width."""
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(maps_to_tokens(x, num_modalities)), height, width


class EfficientAttention(nn.Module):
    """SegFormer's spatially reduced self-attention, then GeminiFusion, then the projection."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int,
        num_modalities: int,
        qkv_bias: bool = True,
        fusion_heads: int = 8,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = ModalityLayerNorm(num_modalities, dim)
        self.fusion = GeminiFusion(dim, fusion_heads) if num_modalities == 2 else None

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        m, b, n, c = x.shape
        h = self.num_heads
        q = self.q(x).view(m * b, n, h, c // h).transpose(1, 2)
        if self.sr_ratio > 1:
            reduced = self.sr(tokens_to_maps(x, height, width))
            x = self.norm(maps_to_tokens(reduced, m))
        kv = self.kv(x).view(m * b, -1, 2, h, c // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        out = out.transpose(1, 2).reshape(m, b, n, c)
        if self.fusion is not None:
            out = recomputed(self.fusion, out)  # lean: keeps the fusion's input only
        return self.proj(out)


class MixFFN(nn.Module):
    """Linear, 3x3 depthwise convolution, GELU, linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        hidden = tokens_to_maps(self.fc1(x), height, width)
        # Lean: of the three hidden maps (4C channels each), backward keeps only fc1's output
        # and computes the convolution, GELU and fc2 again.
        return recomputed(self._conv_gelu_fc2, hidden, x.shape[0])

    def _conv_gelu_fc2(self, hidden: torch.Tensor, num_modalities: int) -> torch.Tensor:
        return self.fc2(gelu(maps_to_tokens(self.dwconv(hidden), num_modalities)))


class MiTBlock(nn.Module):
    """Pre-norm transformer block: attention (with fusion) and Mix-FFN, each residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int,
        num_modalities: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        fusion_heads: int = 8,
    ) -> None:
        super().__init__()
        self.norm1 = ModalityLayerNorm(num_modalities, dim)
        self.attn = EfficientAttention(
            dim, num_heads, sr_ratio, num_modalities, qkv_bias, fusion_heads
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = ModalityLayerNorm(num_modalities, dim)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x), height, width))


class MixTransformer(Backbone):
    """MiT encoder over ``M`` aligned modalities (GeminiFusion when ``M == 2``).

    Input: ``(M, B, 3, H, W)``. Output: four feature maps ``(M, B, C_s, H_s, W_s)`` at strides
    4, 8, 16 and 32 (rounded up for sizes that do not divide).
    """

    def __init__(self, config: MiTConfig, num_modalities: int = 2, in_chans: int = 3) -> None:
        if num_modalities not in (1, 2):
            raise ValueError(
                f"MixTransformer fuses 1 or 2 streams, got {num_modalities}; "
                "more modalities need the multi-sensor (DeLiVER) backbone"
            )
        super().__init__(config, num_modalities, config.embed_dims)
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").tolist()
        prev = in_chans
        for s, (dim, depth) in enumerate(zip(config.embed_dims, config.depths, strict=True)):
            kernel, stride = (7, 4) if s == 0 else (3, 2)
            embed = OverlapPatchEmbed(prev, dim, kernel, stride, num_modalities)
            first = sum(config.depths[:s])
            blocks = nn.ModuleList(
                MiTBlock(
                    dim,
                    config.num_heads[s],
                    config.sr_ratios[s],
                    num_modalities,
                    config.mlp_ratio,
                    config.qkv_bias,
                    rates[first + i],
                    config.fusion_heads,
                )
                for i in range(depth)
            )
            setattr(self, f"patch_embed{s + 1}", embed)
            setattr(self, f"block{s + 1}", blocks)
            setattr(self, f"norm{s + 1}", ModalityLayerNorm(num_modalities, dim))
            prev = dim

    def stage(self, s: int) -> tuple[OverlapPatchEmbed, nn.ModuleList, ModalityLayerNorm]:
        """Patch embedding, blocks and output norm of stage ``s`` (0-based)."""
        return (
            getattr(self, f"patch_embed{s + 1}"),
            getattr(self, f"block{s + 1}"),
            getattr(self, f"norm{s + 1}"),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        m, b = x.shape[:2]
        maps = x.flatten(0, 1)
        features = []
        for s in range(4):
            embed, blocks, norm = self.stage(s)
            tokens, height, width = embed(maps, m)
            for block in blocks:
                tokens = run_block(
                    block, tokens, height, width, checkpointed=self.activation_checkpointing
                )
            maps = tokens_to_maps(norm(tokens), height, width).contiguous()
            features.append(maps.view(m, b, *maps.shape[1:]))
        return features

    family = "mit"
    # Reference checkpoint naming: the reference wraps shared layers in ``ModuleParallel``.
    reference_prefix = "encoder."
    _wrapped = ("proj", "q", "kv", "sr", "fc1", "fc2")

    def reference_name(self, key: str) -> str:
        """Name of a shared parameter in the reference checkpoint (without prefix)."""
        module, _, leaf = key.rpartition(".")
        parent, _, last = module.rpartition(".")
        if last in self._wrapped and not parent.endswith("fusion"):
            return f"{module}.module.{leaf}"
        if last == "dwconv":
            return f"{module}.dwconv.{leaf}"
        return key
