"""Checkpoints that survive a crash and resume a run exactly.

A training checkpoint holds everything the next iteration depends on: weights, optimiser and
schedule, the position (stage, epoch, batches done in the epoch, iteration), the best score so far
and the random-number states of every process. It is written to a temporary file in the same
folder, flushed to disk and renamed over the old one, so a kill at any moment leaves either the
old or the new checkpoint, never a torn one. Every value loads with ``weights_only=True``.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geminifusion.checkpoints import load_reference_checkpoint, read_checkpoint

FORMAT = "geminifusion-train"
FORMAT_VERSION = 1


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file, fsync, rename over ``path``, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some platforms; the rename is still atomic
        return path
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def capture_rng_state() -> dict:
    """The global random states of torch (CPU and CUDA), NumPy and Python, as plain values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Undo :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


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
    """The checkpoint dict (see the module docstring); ``position`` says where training stands."""
    model = getattr(model, "module", model)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": model.state_dict(),
        "spec": getattr(model, "spec", {}),
        "config": config,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "position": dict(position),
        "best": dict(best),
        "rng": rng_states,
        "grad_scaler": grad_scaler,
    }


def is_training_checkpoint(checkpoint) -> bool:
    return isinstance(checkpoint, dict) and checkpoint.get("format") == FORMAT


def read_training_checkpoint(path: str | os.PathLike) -> dict:
    """Read one of our checkpoints (``ValueError`` if the file is something else)."""
    checkpoint = read_checkpoint(path)
    if not is_training_checkpoint(checkpoint):
        raise ValueError(f"{path}: not a geminifusion training checkpoint")
    if checkpoint.get("version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format {checkpoint['version']} is newer than this geminifusion "
            f"reads ({FORMAT_VERSION}); upgrade the package"
        )
    return checkpoint


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names keys and shapes."""
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(ours[k].shape)}"
        for k in ours
        if k in state and state[k].shape != ours[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches (checkpoint != model): {_names(shapes)}")
    pred = "head.linear_pred.weight"
    if pred in state and pred in ours and state[pred].shape[0] != ours[pred].shape[0]:
        problems.append(
            f"the checkpoint predicts {state[pred].shape[0]} classes, the model "
            f"{ours[pred].shape[0]} (--finetune starts from another class count)"
        )
    if problems:
        from geminifusion.checkpoints import describe

        raise ValueError(
            f"{source} does not fit this model ({describe(model)}):\n  " + "\n  ".join(problems)
        )
    model.load_state_dict(state, strict=True)


def _names(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_weights(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load model weights from a geminifusion checkpoint or a reference (paper) checkpoint.

    Returns:
        The checkpoint's metadata: for ours ``{"kind": "geminifusion", "position", "best",
        "spec"}``, for the reference's ``{"kind": "reference", "epoch_start", "best_val"}``.
    """
    model = getattr(model, "module", model)
    checkpoint = read_checkpoint(path)
    if is_training_checkpoint(checkpoint):
        load_model_state(model, checkpoint["model"], str(path))
        return {
            "kind": "geminifusion",
            "position": checkpoint.get("position", {}),
            "best": checkpoint.get("best", {}),
            "spec": checkpoint.get("spec", {}),
        }
    meta = load_reference_checkpoint(model, path)
    return {"kind": "reference", **meta}


def finetune_state(
    model: nn.Module, path: str | os.PathLike, skip: tuple[str, ...] = ("linear_pred",)
) -> list[str]:
    """Start from a checkpoint's weights except the classifier, as the reference fine-tune does.

    The classifier (``head.linear_pred``) keeps its fresh initialisation, so the checkpoint may
    come from a dataset with other classes (the paper fine-tunes its SUN RGB-D model on
    NYUDv2). Every other weight must be present and of the right shape.

    Returns:
        The keys that were left out.
    """
    from geminifusion.checkpoints import from_reference_state_dict, unwrap_state_dict

    model = getattr(model, "module", model)
    checkpoint = read_checkpoint(path)
    own = model.state_dict()
    if is_training_checkpoint(checkpoint):
        state = dict(checkpoint["model"])
    else:
        reference = unwrap_state_dict(checkpoint, str(path))
        kept = {k: v for k, v in reference.items() if not any(s in k for s in skip)}
        # Borrow the model's own classifier so the strict conversion sees a complete set.
        fill = {k: v for k, v in _reference_names(model).items() if any(s in k for s in skip)}
        state = from_reference_state_dict(model, {**kept, **fill}, str(path))
    skipped = [k for k in own if any(s in k for s in skip)]
    for key in skipped:
        state[key] = own[key]
    load_model_state(model, state, str(path))
    return skipped


def _reference_names(model: nn.Module) -> dict[str, torch.Tensor]:
    from geminifusion.checkpoints import to_reference_state_dict

    return dict(to_reference_state_dict(model))
