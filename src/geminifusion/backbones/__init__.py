"""Backbone families and their named variants."""

from __future__ import annotations

from torch import nn

from geminifusion.backbones.deliver import DELIVER_VARIANTS, DeliverConfig, DeliverMiT
from geminifusion.backbones.mit import MIT_VARIANTS, MiTConfig, MixTransformer
from geminifusion.backbones.swin import SWIN_VARIANTS, SwinConfig, SwinTransformer

# Every named architecture, by the name users pass to ``build_segmentor``.
VARIANTS: dict[str, object] = {**MIT_VARIANTS, **DELIVER_VARIANTS, **SWIN_VARIANTS}


def resolve_config(arch: str | object) -> tuple[str | None, object]:
    """A variant name or a config object -> ``(name or None, config)``."""
    if isinstance(arch, str):
        key = arch.lower().replace("-", "_")
        if key not in VARIANTS:
            raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(VARIANTS))}")
        return key, VARIANTS[key]
    if isinstance(arch, (MiTConfig, SwinConfig)):
        return None, arch
    raise ValueError(f"architecture must be a variant name or a config, got {type(arch).__name__}")


def build_backbone(config: object, num_modalities: int) -> nn.Module:
    """The backbone module for ``config``, fusing ``num_modalities`` streams."""
    if isinstance(config, DeliverConfig):  # before MiTConfig, its base class
        return DeliverMiT(config, num_modalities)
    if isinstance(config, MiTConfig):
        return MixTransformer(config, num_modalities)
    if isinstance(config, SwinConfig):
        return SwinTransformer(config, num_modalities)
    raise ValueError(f"no backbone for config type {type(config).__name__}")
