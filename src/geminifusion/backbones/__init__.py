"""Backbone families, their named variants, and the one table from config type to backbone.

Every backbone follows the contract of :class:`~geminifusion.backbones.base.Backbone`. A new
family is a config dataclass, a ``Backbone`` subclass and one row of :data:`BACKBONES`.
"""

from __future__ import annotations

from geminifusion.backbones.base import Backbone
from geminifusion.backbones.deliver import DELIVER_VARIANTS, DeliverConfig, DeliverMiT
from geminifusion.backbones.mit import MIT_VARIANTS, MiTConfig, MixTransformer
from geminifusion.backbones.swin import SWIN_VARIANTS, SwinConfig, SwinTransformer

# Config type -> the backbone class it builds. A subclass of a config type builds the class of
# its nearest listed base.
BACKBONES: dict[type, type[Backbone]] = {
    MiTConfig: MixTransformer,
    DeliverConfig: DeliverMiT,
    SwinConfig: SwinTransformer,
}
# Config types by name, as model folders store them (``{"type": "MiTConfig", ...}``).
CONFIG_TYPES: dict[str, type] = {cls.__name__: cls for cls in BACKBONES}

# Every named architecture, by the name users pass to ``build_segmentor``.
VARIANTS: dict[str, object] = {**MIT_VARIANTS, **DELIVER_VARIANTS, **SWIN_VARIANTS}


def backbone_class(config: object) -> type[Backbone]:
    """The backbone class of a config object (``ValueError`` for an unknown type)."""
    for kind in type(config).__mro__:
        if kind in BACKBONES:
            return BACKBONES[kind]
    known = ", ".join(CONFIG_TYPES)
    raise ValueError(f"no backbone for config type {type(config).__name__}; known: {known}")


def resolve_config(arch: str | object) -> tuple[str | None, object]:
    """A variant name or a config object -> ``(name or None, config)``."""
    if isinstance(arch, str):
        key = arch.lower().replace("-", "_")
        if key not in VARIANTS:
            raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(VARIANTS))}")
        return key, VARIANTS[key]
    backbone_class(arch)  # a known config type, or an error that names the known ones
    return None, arch


def build_backbone(config: object, num_modalities: int) -> Backbone:
    """The backbone module for ``config``, taking ``num_modalities`` inputs."""
    return backbone_class(config)(config, num_modalities)


__all__ = [
    "BACKBONES",
    "CONFIG_TYPES",
    "VARIANTS",
    "Backbone",
    "backbone_class",
    "build_backbone",
    "resolve_config",
]
