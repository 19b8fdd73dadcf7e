"""The paper's optimiser: AdamW over three parameter groups with a warm-up + poly schedule.

The reference's ``PolyWarmupAdamW`` sets, before optimiser step ``t`` (0-based, counted from the
start of each stage, since every stage builds a new optimiser), every group's rate to
``initial_lr * m(t)`` with

* ``m(t) = 1 - (1 - t / warmup_iters) * (1 - warmup_ratio)`` while ``t < warmup_iters``,
* ``m(t) = (1 - t / max_iters) ** power`` while ``t < max_iters``,
* and leaves the rate where it was after that (the value of ``t = max_iters - 1``).

Here the same numbers come from a stock ``torch.optim.AdamW`` driven by a ``LambdaLR`` whose
factor is :class:`PolyWarmup`, so the state saves and loads with the usual ``state_dict`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from geminifusion.layers import ModalityLayerNorm

# Modules whose parameters are "norm" parameters: the reference's rule is a name containing
# "norm", which in its encoders matches exactly the LayerNorms.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, ModalityLayerNorm, nn.GroupNorm)
GROUP_NAMES = ("encoder", "encoder_norm", "decoder", "alpha")


@dataclass(frozen=True)
class PolyWarmup:
    """Learning-rate factor of optimiser step ``t``: linear warm-up, then poly decay."""

    warmup_iters: int = 1500
    max_iters: int = 40000
    warmup_ratio: float = 1e-6
    power: float = 1.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_iters:
            return 1 - (1 - step / self.warmup_iters) * (1 - self.warmup_ratio)
        if step >= self.max_iters:
            step = self.max_iters - 1  # the reference stops updating the rate
            if step < self.warmup_iters:
                return self(step)
        return (1 - step / self.max_iters) ** self.power


def parameter_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    decoder_lr_mult: float = 10.0,
    train_alpha: bool = False,
) -> list[dict]:
    """The reference's groups: encoder weights, encoder norms (no decay), decoder (``lr * 10``).

    The head (``model.head``) is the decoder; everything else but ``alpha`` is encoder. ``alpha``,
    the ensemble weights, is left out as in the reference unless ``train_alpha``, which adds a
    fourth group with the base rate and no decay. Frozen parameters are skipped. Each group
    carries a ``name``.
    """
    model = getattr(model, "module", model)
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(False)
    }
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in GROUP_NAMES}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name == "alpha":
            if train_alpha:
                groups["alpha"].append(param)
        elif name.startswith("head."):
            groups["decoder"].append(param)
        elif id(param) in norm_params:
            groups["encoder_norm"].append(param)
        else:
            groups["encoder"].append(param)
    settings = {
        "encoder": (lr, weight_decay),
        "encoder_norm": (lr, 0.0),
        "decoder": (lr * decoder_lr_mult, weight_decay),
        "alpha": (lr, 0.0),
    }
    return [
        {"name": name, "params": params, "lr": settings[name][0], "weight_decay": settings[name][1]}
        for name, params in groups.items()
        if params or name != "alpha"
    ]


def build_optimizer(
    model: nn.Module,
    lr: float,
    *,
    weight_decay: float = 0.01,
    decoder_lr_mult: float = 10.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    schedule: PolyWarmup | None = None,
    train_alpha: bool = False,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """A fresh AdamW and its schedule for one stage; call ``scheduler.step()`` after each step.

    Right after this call every group's rate is already the one of step 0.
    """
    groups = parameter_groups(model, lr, weight_decay, decoder_lr_mult, train_alpha)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule or PolyWarmup())
    return optimizer, scheduler


def optimizer_from_config(model: nn.Module, config, stage: int):
    """``build_optimizer`` with a run config's recipe for ``stage`` (0-based)."""
    schedule = PolyWarmup(
        config.warmup_iters, config.max_iters, config.warmup_ratio, config.poly_power
    )
    return build_optimizer(
        model,
        config.stage_lrs[stage],
        weight_decay=config.weight_decay,
        decoder_lr_mult=config.decoder_lr_mult,
        betas=tuple(config.betas),
        eps=config.eps,
        schedule=schedule,
        train_alpha=config.train_alpha,
    )
