"""Swin Transformer (Swin-T/S/L, window 7 or 12) with GeminiFusion in every block.

The streams share every weight except the patch-embedding norm and the four output norms, so
they travel as one modality-stacked map ``(M, B, H, W, C)`` and every shared layer runs once over
``M * B`` samples. As in the reference, each block fuses the streams right after its (shifted)
window attention and projection, once the windows are merged, un-shifted and cropped back to the
map, and before the residual. Parameter names follow the Swin segmentation backbone
(``layers.0.blocks.1.attn.qkv``, ``layers.0.downsample.reduction``, ``norm0``), so ImageNet and
reference checkpoints are a matter of renaming.

Unlike the reference, any input size works: the image is padded to a multiple of the patch size
(the reference's padding breaks on its list-of-modalities input), every stage pads its map to a
multiple of the window, and the padding is cropped after each attention.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from geminifusion.backbones.base import Backbone, check_head_counts
from geminifusion.fusion import GeminiFusion
from geminifusion.layers import DropPath, ModalityLayerNorm, gelu, recomputed, run_block

# The reference marks token pairs from different regions of a shifted window with -100 (added to
# the scores) rather than -inf; we keep the same number.
SHIFT_MASK_VALUE = -100.0


@dataclass(frozen=True)
class SwinConfig:
    """Architecture of a Swin Transformer encoder with GeminiFusion.

    Args:
        embed_dim: channels of the first stage; each later stage doubles them.
        depths: blocks per stage (odd blocks use shifted windows).
        num_heads: window-attention heads per stage.
        window_size: side of the square attention windows (the shift is half of it).
        patch_size: side of the non-overlapping patches of the first stage.
        mlp_ratio: hidden width of the MLP relative to the stage width.
        qkv_bias: bias in the query/key/value projection.
        drop_path_rate: stochastic depth at the last block (linear from 0).
        fusion_heads: heads of each GeminiFusion attention (the reference always uses 8).
        head_embed_dim: width of the SegFormer head built on this backbone.
    """

    embed_dim: int = 96
    depths: Sequence[int] = (2, 2, 6, 2)
    num_heads: Sequence[int] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    fusion_heads: int = 8
    head_embed_dim: int = 256

    def __post_init__(self) -> None:
        for name in ("depths", "num_heads"):
            value = tuple(getattr(self, name))
            if len(value) != 4:
                raise ValueError(f"SwinConfig.{name} needs 4 values (one per stage), got {value}")
            object.__setattr__(self, name, value)
        if self.window_size < 1 or self.patch_size < 1:
            raise ValueError(
                f"SwinConfig: window_size and patch_size must be positive, "
                f"got {self.window_size} and {self.patch_size}"
            )
        check_head_counts(self, "num_heads", "fusion_heads")
        for dim, heads in zip(self.embed_dims, self.num_heads, strict=True):
            if dim % heads:
                raise ValueError(f"SwinConfig: stage width {dim} is not divisible by {heads} heads")
            if dim % self.fusion_heads:
                raise ValueError(
                    f"SwinConfig: stage width {dim} is not divisible by "
                    f"{self.fusion_heads} fusion heads"
                )

    @property
    def embed_dims(self) -> tuple[int, ...]:
        """Channels of the four stages."""
        return tuple(self.embed_dim * 2**s for s in range(4))


# The released Swin backbones of the paper's runs; swin_large_window12 is the 384-pixel
# ImageNet-22k model behind its best NYUDv2 and SUN RGB-D results.
SWIN_VARIANTS: dict[str, SwinConfig] = {
    "swin_tiny": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24), window_size=7),
    "swin_small": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), window_size=7),
    "swin_large": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), window_size=7),
    "swin_large_window12": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), window_size=12),
}


def relative_position_index(window_size: int) -> torch.Tensor:
    """``(N, N)`` index into the bias table for every query/key pair of a window (``N = w*w``).

    Built on the CPU whatever the default device, since it is window geometry, not a weight.
    """
    coords = torch.stack(
        torch.meshgrid(
            torch.arange(window_size, device="cpu"),
            torch.arange(window_size, device="cpu"),
            indexing="ij",
        )
    ).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]) + (window_size - 1)  # (2, N, N), >= 0
    return rel[0] * (2 * window_size - 1) + rel[1]


@functools.lru_cache(maxsize=16)
def _cached_position_index(window_size: int, device: torch.device) -> torch.Tensor:
    # Window geometry, not state: a checkpoint's copy is only checked (reference_derived_buffers).
    # Cached tensors are made outside inference mode, so that a first call under
    # torch.inference_mode (evaluation) does not break later training in the same process.
    with torch.inference_mode(False):
        return relative_position_index(window_size).to(device).flatten()


class WindowLayout:
    """Where the tokens of ``S`` maps go when their (shifted) windows are laid out in a row.

    The map is padded to whole windows and, for shifted windows, rolled by ``-shift`` on both
    axes, as in the reference; one gather then replaces padding, rolling and partitioning, and
    one inverse gather undoes them. Windows are ordered by their shift-mask pattern (none, last
    column, last row, corner), so every group shares one ``(N, N)`` mask and the attention mask
    broadcasts instead of being repeated per window and sample.

    Attributes:
        gather: ``(S * Hp * Wp,)`` row of the flattened ``(S * H * W, C)`` maps for each window
            token; padding tokens point anywhere and are listed in ``padding``.
        padding: positions in ``gather`` that are padding (zero tokens, as in the reference).
        scatter: ``(S * H * W,)`` position in window order of each map token.
        groups: ``(number of windows, shift mask or None)`` per group, in order.
    """

    def __init__(
        self,
        samples: int,
        height: int,
        width: int,
        window: int,
        shift: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        def axis(size: int) -> tuple[torch.Tensor, torch.Tensor]:
            padded = -(-size // window) * window
            source = (torch.arange(padded, device=device) + shift) % padded  # roll by -shift
            return source.view(-1, window), source.view(-1, window) < size

        rows, row_ok = axis(height)  # (windows down, window)
        cols, col_ok = axis(width)
        nh, nw = rows.shape[0], cols.shape[0]
        index = rows[:, None, :, None] * width + cols[None, :, None, :]  # (nh, nw, ws, ws)
        valid = row_ok[:, None, :, None] & col_ok[None, :, None, :]
        index = torch.where(valid, index, 0).reshape(nh * nw, -1)
        valid = valid.reshape(nh * nw, -1)

        last_row = torch.zeros(nh, nw, dtype=torch.bool, device=device)
        last_col = torch.zeros_like(last_row)
        if shift:
            last_row[-1], last_col[:, -1] = True, True
        kind = (2 * last_row + last_col).flatten()
        offsets = torch.arange(samples, device=device).view(-1, 1, 1) * (height * width)
        gather, keep, self.groups = [], [], []
        for k in range(4):
            chosen = (kind == k).nonzero().flatten()
            if chosen.numel():
                gather.append((index[chosen] + offsets).flatten())
                keep.append(valid[chosen].expand(samples, -1, -1).flatten())
                mask = shift_mask(window, shift, k >> 1, k & 1, dtype, device) if k else None
                self.groups.append((samples * chosen.numel(), mask))
        self.gather = torch.cat(gather)
        keep = torch.cat(keep)
        self.padding = (~keep).nonzero().flatten()
        self.scatter = torch.empty(samples * height * width, dtype=torch.long, device=device)
        self.scatter[self.gather[keep]] = keep.nonzero().flatten()


@functools.lru_cache(maxsize=32)
def window_layout(
    samples: int,
    height: int,
    width: int,
    window: int,
    shift: int,
    dtype: torch.dtype,
    device: torch.device,
) -> WindowLayout:
    """A cached :class:`WindowLayout`: inputs of one size reuse their index tensors.

    Built outside inference mode, like every cached tensor here, so that autograd can use it.
    """
    with torch.inference_mode(False):
        return WindowLayout(samples, height, width, window, shift, dtype, device)


def shift_mask(
    window: int, shift: int, last_row: bool, last_col: bool, dtype: torch.dtype, device
) -> torch.Tensor:
    """``(N, N)`` additive mask of a shifted window on the last row and/or column of windows.

    There the roll has brought together tokens from opposite edges of the map: the window's
    first ``window - shift`` rows (columns) and its last ``shift`` ones form separate regions,
    and pairs from different regions get ``SHIFT_MASK_VALUE``.
    """
    local = torch.arange(window, device=device) >= window - shift
    row = local if last_row else torch.zeros_like(local)
    col = local if last_col else torch.zeros_like(local)
    label = (row[:, None] * 2 + col[None, :]).flatten()
    zero = torch.zeros((), dtype=dtype, device=device)
    return torch.where(label[:, None] != label[None, :], zero + SHIFT_MASK_VALUE, zero)


class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided convolution, then one LayerNorm per modality."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, num_modalities: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)
        self.norm = ModalityLayerNorm(num_modalities, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(M, B, C_in, H, W)`` -> channels-last tokens ``(M, B, ceil(H/p), ceil(W/p), C)``."""
        m, b, _, height, width = x.shape
        p = self.patch_size
        x = x.flatten(0, 1)
        if height % p or width % p:
            x = F.pad(x, (0, -width % p, 0, -height % p))
        x = self.proj(x).permute(0, 2, 3, 1)
        return self.norm(x.reshape(m, b, *x.shape[1:]))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (shifted) windows of a map, with relative position bias.

    Takes the normalised map, lays its windows out with a :class:`WindowLayout`, attends within
    each window, and puts the tokens back before the output projection, which therefore only
    sees real tokens. The attention runs through ``scaled_dot_product_attention`` with the
    position bias (and shift mask) as its additive mask; ``use_sdpa = False`` selects the plain
    masked-softmax twin.
    """

    use_sdpa: bool = True

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int = 0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift {shift_size} must be in [0, window {window_size})")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        """``(heads, N, N)`` relative position bias of one window."""
        n = self.window_size**2
        table = self.relative_position_bias_table
        bias = table[_cached_position_index(self.window_size, table.device)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def layout(self, x: torch.Tensor) -> WindowLayout:
        """The window layout of ``(S, H, W, C)`` maps for this module's window and shift."""
        s, height, width = x.shape[:3]
        return window_layout(s, height, width, self.window_size, self.shift_size, x.dtype, x.device)

    def forward(self, x: torch.Tensor, layout: WindowLayout | None = None) -> torch.Tensor:
        """Attend within windows.

        Args:
            x: ``(S, H, W, C)`` normalised maps of ``S`` samples (modalities times batch).
            layout: ``self.layout(x)``, passed in so that blocks of one stage share it.

        Returns:
            ``(S, H, W, C)``: attention output after the projection.
        """
        layout = layout if layout is not None else self.layout(x)
        c, h, n = x.shape[-1], self.num_heads, self.window_size**2
        tokens = x.reshape(-1, c).index_select(0, layout.gather)
        if layout.padding.numel():
            tokens.index_fill_(0, layout.padding, 0.0)
        qkv = self.qkv(tokens).view(-1, n, 3, h, c // h)  # (windows, N, 3, heads, head_dim)
        bias = self.position_bias().to(qkv.dtype)  # qkv may be lower precision under autocast
        outputs, start = [], 0
        for count, mask in layout.groups:
            q, k, v = qkv[start : start + count].transpose(1, 3).unbind(2)  # (count, heads, N, d)
            start += count
            mask = bias if mask is None else bias + mask.to(bias.dtype)
            out = self.attend(q, k, v, mask[None])
            outputs.append(out.transpose(1, 2).reshape(count * n, c))
        out = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
        return self.proj(out.index_select(0, layout.scatter)).view(x.shape)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Softmax attention with an additive ``(1, heads, N, N)`` mask."""
        if self.use_sdpa:
            # The 4-D mask lets SDPA take its fused CPU kernel rather than the math fallback.
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + mask
        return scores.softmax(-1) @ v

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, window={self.window_size}, "
            f"shift={self.shift_size}"
        )


class Mlp(nn.Module):
    """Linear, GELU, linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Lean: backward keeps fc1's output only and computes GELU and fc2 again.
        return recomputed(self._gelu_fc2, self.fc1(x))

    def _gelu_fc2(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu(hidden))


class SwinBlock(nn.Module):
    """Pre-norm block: (shifted) window attention, GeminiFusion, residual; MLP, residual.

    The norms are shared by the modalities (eps 1e-5), as in the reference Swin blocks.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        num_modalities: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        fusion_heads: int = 8,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, shift_size, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.fusion = GeminiFusion(dim, fusion_heads) if num_modalities == 2 else None

    def forward(self, x: torch.Tensor, layout: WindowLayout | None = None) -> torch.Tensor:
        """``(M, B, H, W, C)`` -> same shape; ``layout`` as from ``self.attn.layout``."""
        y = self.attn(self.norm1(x).flatten(0, 1), layout).view(x.shape)
        if self.fusion is not None:
            y = recomputed(self.fusion, y)  # lean: keeps the fusion's input only
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhoods to channels (odd sides padded), shared LayerNorm, linear to 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(S, H, W, C)`` -> ``(S, ceil(H/2), ceil(W/2), 2C)``."""
        s, height, width, c = x.shape
        if height % 2 or width % 2:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        h2, w2 = (height + 1) // 2, (width + 1) // 2
        # Channel blocks in the reference order: (0,0), (1,0), (0,1), (1,1) as (row, column).
        x = x.view(s, h2, 2, w2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(s, h2, w2, 4 * c)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Blocks of one resolution (alternating plain and shifted windows), then patch merging."""

    def __init__(self, blocks: Sequence[SwinBlock], dim: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, checkpointed: bool = False) -> torch.Tensor:
        """``(M, B, H, W, C)`` -> same shape, before patch merging."""
        layouts: dict[int, WindowLayout] = {}
        for block in self.blocks:
            shift = block.attn.shift_size
            if shift not in layouts:
                layouts[shift] = block.attn.layout(x.flatten(0, 1))
            x = run_block(block, x, layouts[shift], checkpointed=checkpointed)
        return x


class SwinTransformer(Backbone):
    """Swin encoder over ``M`` aligned modalities (GeminiFusion when ``M == 2``).

    Input: ``(M, B, 3, H, W)``, any ``H, W``. Output: four feature maps ``(M, B, C_s, H_s, W_s)``
    at strides 4, 8, 16 and 32, rounded up (``ceil(H / 4)``, then halved rounding up).
    """

    def __init__(self, config: SwinConfig, num_modalities: int = 2, in_chans: int = 3) -> None:
        if num_modalities not in (1, 2):
            raise ValueError(
                f"SwinTransformer fuses 1 or 2 streams, got {num_modalities}; "
                "more modalities need the multi-sensor (DeLiVER) backbone"
            )
        super().__init__(config, num_modalities, config.embed_dims)
        self.patch_embed = PatchEmbed(in_chans, config.embed_dim, config.patch_size, num_modalities)
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").tolist()
        ws = config.window_size
        stages = []
        for s, (dim, depth) in enumerate(zip(config.embed_dims, config.depths, strict=True)):
            first = sum(config.depths[:s])
            blocks = [
                SwinBlock(
                    dim,
                    config.num_heads[s],
                    ws,
                    0 if i % 2 == 0 else ws // 2,
                    num_modalities,
                    config.mlp_ratio,
                    config.qkv_bias,
                    rates[first + i],
                    config.fusion_heads,
                )
                for i in range(depth)
            ]
            stages.append(SwinStage(blocks, dim, downsample=s < 3))
        self.layers = nn.ModuleList(stages)
        for s, dim in enumerate(config.embed_dims):
            self.add_module(f"norm{s}", ModalityLayerNorm(num_modalities, dim))
        self.apply(_init_linear)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        m, b = x.shape[:2]
        x = self.patch_embed(x)
        features = []
        for s, stage in enumerate(self.layers):
            x = stage(x, self.activation_checkpointing)
            norm = getattr(self, f"norm{s}")
            features.append(norm(x).permute(0, 1, 4, 2, 3).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(x.flatten(0, 1))
                x = x.view(m, b, *x.shape[1:])
        return features

    family = "swin"
    # Reference checkpoint naming: the backbone sits at ``encoder.body`` and every shared layer
    # is wrapped in a ``ModuleParallel`` (an extra ``.module``).
    reference_prefix = "encoder.body."
    _wrapped = frozenset({"proj", "attn", "norm1", "norm2", "fc1", "fc2", "downsample"})

    def reference_name(self, key: str) -> str:
        """Name of a shared parameter in the reference checkpoint (without prefix)."""
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if part in self._wrapped:
                return ".".join([*parts[: i + 1], "module", *parts[i + 1 :]])
        return key

    def reference_derived_buffers(self) -> dict[str, torch.Tensor]:
        """The reference's ``relative_position_index`` buffers, rebuilt from the window size."""
        index = relative_position_index(self.config.window_size)
        return {
            f"layers.{s}.blocks.{i}.attn.module.relative_position_index": index
            for s, stage in enumerate(self.layers)
            for i in range(len(stage.blocks))
        }


def _init_linear(module: nn.Module) -> None:
    # The reference's initialisation of the Swin layers it defines (GeminiFusion keeps its own).
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
