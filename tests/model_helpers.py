"""Helpers shared by the model tests."""

from __future__ import annotations

import torch


def randomise(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Move every value away from its init so that each term of the model matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point():
                noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
                p.copy_(p.abs() + 0.5 if "running_var" in name else noise * scale + p)
    return model
