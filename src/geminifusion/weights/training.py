"""Our training checkpoints: ``last.pt`` resumes a run exactly, ``best.pt`` keeps its best weights.

``last.pt`` holds everything the next iteration depends on: weights, optimiser and schedule, the
position (stage, epoch, batches done in the epoch, iteration), the best score so far and the
random-number states of every process. ``best.pt`` holds the weights with the best validation
score and those scores. Both carry the run config and the model's build spec, so either one
rebuilds its model alone, and both load with ``weights_only=True``.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from geminifusion.weights.io import read_checkpoint
from geminifusion.weights.reference import (
    from_reference_state_dict,
    to_reference_state_dict,
    unwrap_state_dict,
)
from geminifusion.weights.strict import load_strict

FORMAT = "geminifusion-train"
FORMAT_VERSION = 1


def _base(model: nn.Module, config: dict, position: dict, best: dict) -> dict:
    model = getattr(model, "module", model)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": model.state_dict(),
        "spec": model.spec,
        "class_names": model.class_names,
        "config": config,
        "position": dict(position),
        "best": dict(best),
    }


def training_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    config: dict,
    position: dict,
    best: dict,
    rng_states: list[dict],
    grad_scaler: dict | None = None,
) -> dict:
    """The resumable checkpoint (``last.pt``); ``position`` says where training stands."""
    return {
        **_base(model, config, position, best),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_states,
        "grad_scaler": grad_scaler,
    }


def best_checkpoint(
    model: nn.Module, *, config: dict, position: dict, best: dict, metrics: str
) -> dict:
    """The weights-only checkpoint of the best validation (``best.pt``); ``metrics`` as JSON."""
    return {**_base(model, config, position, best), "metrics": metrics}


def is_training_checkpoint(checkpoint: object) -> bool:
    return isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT


def check_training_checkpoint(checkpoint: dict, path: str | os.PathLike) -> dict:
    """``checkpoint`` if it is one of ours that this version reads; ``ValueError`` otherwise."""
    if not is_training_checkpoint(checkpoint):
        raise ValueError(f"{path}: not a geminifusion training checkpoint")
    version = checkpoint.get("version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format {version} is newer than this geminifusion reads "
            f"({FORMAT_VERSION}); upgrade the package"
        )
    for key, kind in (("model", dict), ("spec", dict), ("config", dict)):
        if not isinstance(checkpoint.get(key), kind):
            raise ValueError(f"{path}: damaged geminifusion checkpoint (no '{key}' entry)")
    return checkpoint


def read_training_checkpoint(path: str | os.PathLike) -> dict:
    """Read one of our checkpoints (``ValueError`` if the file is something else)."""
    return check_training_checkpoint(read_checkpoint(path), path)


def finetune_state(
    model: nn.Module,
    path: str | os.PathLike,
    skip: tuple[str, ...] = ("linear_pred",),
    checkpoint: dict | None = None,
) -> list[str]:
    """Start from a checkpoint's weights except the classifier, as the reference fine-tune does.

    The classifier (``head.linear_pred``) keeps its fresh initialisation, so the checkpoint may
    come from a dataset with other classes (the paper fine-tunes its SUN RGB-D model on
    NYUDv2). Every other weight must be present and of the right shape.

    ``checkpoint``: the file's content when already read.

    Returns:
        The keys that were left out.
    """
    model = getattr(model, "module", model)
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    own = model.state_dict()
    if is_training_checkpoint(checkpoint):
        state = dict(check_training_checkpoint(checkpoint, path)["model"])
    else:
        reference = unwrap_state_dict(checkpoint, str(path))
        kept = {k: v for k, v in reference.items() if not any(s in k for s in skip)}
        # Borrow the model's own classifier so the strict conversion sees a complete set.
        own_reference = to_reference_state_dict(model)
        fill = {k: v for k, v in own_reference.items() if any(s in k for s in skip)}
        state = from_reference_state_dict(model, {**kept, **fill}, str(path))
    skipped = [k for k in own if any(s in k for s in skip)]
    for key in skipped:
        state[key] = own[key]
    load_strict(model, state, str(path))
    return skipped
