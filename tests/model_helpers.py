"""Helpers shared by the model tests."""

from __future__ import annotations

import dataclasses

import torch

from geminifusion.backbones import SwinConfig


def narrow(config):
    """The variant with one block per stage and 8 channels per attention head."""
    if isinstance(config, SwinConfig):
        return dataclasses.replace(config, embed_dim=8 * config.num_heads[0], depths=(1,) * 4)
    dims = tuple(8 * heads for heads in config.num_heads)
    return dataclasses.replace(config, embed_dims=dims, depths=(1,) * 4)


def randomise(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Move every value away from its init so that each term of the model matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point():
                noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
                p.copy_(p.abs() + 0.5 if "running_var" in name else noise * scale + p)
    return model
