"""``load_model(source)``: one entry point for every kind of weights this package knows.

It accepts a run folder, one of our training checkpoints (``best.pt`` / ``last.pt``), a model
folder (``config.json`` + ``model.safetensors``), a checkpoint of the paper's NYUDv2 / SUN RGB-D
training script, and the files of its DeLiVER branch, and returns the model built and loaded
strictly, in eval mode, with what is known about it: ``model.class_names``,
``model.modalities`` and ``model.source`` (a :class:`ModelSource`). The command line (eval,
predict, convert, demo), resuming and fine-tuning all load through this module.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from geminifusion.backbones import resolve_config
from geminifusion.runs import default_checkpoint, is_run_folder
from geminifusion.segmentor import Segmentor
from geminifusion.weights.folder import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    build_from_config,
    from_pretrained,
    is_model_folder,
)
from geminifusion.weights.io import read_checkpoint
from geminifusion.weights.reference import (
    load_reference_state,
    model_from_reference,
    reference_layout,
    reference_metadata,
)
from geminifusion.weights.strict import load_strict
from geminifusion.weights.training import check_training_checkpoint, is_training_checkpoint

# What ``ModelSource.kind`` says.
KINDS = ("run_folder", "training_checkpoint", "model_folder", "reference", "architecture")


@dataclass
class ModelSource:
    """Where a loaded model came from.

    Attributes:
        kind: one of :data:`KINDS`.
        path: what was passed to :func:`load_model`.
        checkpoint: the file the weights were read from.
        details: what the file said besides the weights (the run's position and best score,
            or the paper's epoch, best score and file layout).
    """

    kind: str
    path: Path
    checkpoint: Path
    details: dict = field(default_factory=dict)


def load_model(
    source: str | os.PathLike,
    *,
    arch: str | object | None = None,
    modalities: Sequence[str] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> Segmentor:
    """The model stored at ``source``, built and loaded strictly, in eval mode.

    Args:
        source: a run folder, a ``best.pt`` / ``last.pt``, a model folder, or a checkpoint of
            the paper's code (training script or DeLiVER branch).
        arch: the architecture of a paper checkpoint (a variant name or config), needed only
            when its shapes fit no named variant or several; recognised otherwise.
        modalities: input names of a paper checkpoint (default ``rgb, depth``, and
            ``event, lidar`` for four inputs).
        num_classes: the class count the caller expects.
        device: where the model goes.

    Our files store their own architecture and inputs: there ``arch``, ``modalities`` and
    ``num_classes`` are checks, and a file that differs is an error naming both.

    Raises:
        FileNotFoundError: nothing at ``source``, or a run folder without checkpoints.
        ValueError: a file that is not a checkpoint, is unsafe to read, or does not fit.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint, model folder or run folder at {path}")
    if path.is_dir():
        folder_like = (path / CONFIG_NAME).is_file() or (path / WEIGHTS_NAME).is_file()
        if is_model_folder(path) or (folder_like and not is_run_folder(path)):
            model = from_pretrained(path)  # names the file and the key of any problem
            model.source = ModelSource("model_folder", path, path / WEIGHTS_NAME)
            return _checked(model, arch, modalities, num_classes).to(device)
        if not is_run_folder(path):
            raise FileNotFoundError(
                f"{path} is a folder but neither a model folder (config.json) nor a run folder "
                "(config.yaml)"
            )
        checkpoint_path = default_checkpoint(path)
        kind = "run_folder"
    else:
        checkpoint_path, kind = path, None
    checkpoint = read_checkpoint(checkpoint_path)
    if is_training_checkpoint(checkpoint):
        model = _from_training_checkpoint(checkpoint, checkpoint_path)
        details = {k: checkpoint.get(k) for k in ("position", "best")}
        model.source = ModelSource(kind or "training_checkpoint", path, checkpoint_path, details)
        return _checked(model, arch, modalities, num_classes).to(device).eval()
    if kind == "run_folder":
        raise ValueError(f"{checkpoint_path}: not a geminifusion training checkpoint")
    model = model_from_reference(checkpoint, str(path), arch, modalities, num_classes)
    details = {"layout": reference_layout(checkpoint), **reference_metadata(checkpoint)}
    model.source = ModelSource("reference", path, path, details)
    return model.to(device).eval()


def _from_training_checkpoint(checkpoint: dict, path: Path) -> Segmentor:
    check_training_checkpoint(checkpoint, path)
    spec = {"format": "geminifusion", **checkpoint["spec"]}
    model = build_from_config(spec, f"{path} (its model spec)")
    load_strict(model, checkpoint["model"], str(path))
    names = checkpoint.get("class_names")
    if isinstance(names, list) and len(names) == model.num_classes:
        model.class_names = [str(n) for n in names]
    return model


def _checked(
    model: Segmentor, arch: object, modalities: Sequence[str] | None, num_classes: int | None
) -> Segmentor:
    """``model`` if it is what the caller expects; an error naming the difference otherwise."""
    where = model.source.path
    if modalities is not None and tuple(modalities) != model.modalities:
        raise ValueError(
            f"{where} takes the inputs {list(model.modalities)}, not {list(modalities)}"
        )
    if num_classes is not None and model.num_classes != num_classes:
        raise ValueError(
            f"{where}: the checkpoint predicts {model.num_classes} classes, the model {num_classes}"
        )
    if arch is not None:
        _, want = resolve_config(arch)
        have = model.backbone.config
        if dataclasses.replace(have, drop_path_rate=0.0) != dataclasses.replace(
            want, drop_path_rate=0.0
        ):
            raise ValueError(
                f"{where} holds another architecture than the one asked for:\n"
                f"  stored: {have}\n  asked:  {want}"
            )
    return model


def load_weights(model: nn.Module, path: str | os.PathLike, checkpoint: dict | None = None) -> dict:
    """Load weights into an existing ``model`` from one of our checkpoints or a paper checkpoint.

    ``checkpoint``: the file's content when already read (``read_checkpoint(path)``).

    Returns:
        The checkpoint's facts: for ours ``{"kind": "training_checkpoint", "position", "best",
        "spec"}``, for the paper's ``{"kind": "reference", "epoch_start", "best_val", ...}``.
    """
    model = getattr(model, "module", model)
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    if is_training_checkpoint(checkpoint):
        check_training_checkpoint(checkpoint, path)
        load_strict(model, checkpoint["model"], str(path))
        return {
            "kind": "training_checkpoint",
            "position": checkpoint.get("position", {}),
            "best": checkpoint.get("best", {}),
            "spec": checkpoint.get("spec", {}),
        }
    return {"kind": "reference", **load_reference_state(model, checkpoint, str(path))}


def load_or_build_model(source: str | os.PathLike, **options) -> Segmentor:
    """:func:`load_model` for a path; for an architecture (a variant name or a JSON config
    object), that architecture built with random weights, in eval mode.

    ``options`` are :func:`load_model`'s. An architecture takes ``num_classes`` (default 40,
    NYUDv2's), ``modalities`` (default ``rgb, depth``) and ``device``.
    """
    from geminifusion.segmentor import build_segmentor
    from geminifusion.weights.folder import parse_arch

    if Path(source).exists():
        return load_model(source, **options)
    text = str(source)
    try:
        architecture = parse_arch(text)
        resolve_config(architecture)
    except (ValueError, FileNotFoundError):
        raise FileNotFoundError(
            f"{text}: no such file or folder, and not an architecture name or JSON config"
        ) from None
    classes, modalities = options.get("num_classes"), options.get("modalities")
    model = build_segmentor(architecture, classes or 40, modalities or ("rgb", "depth"))
    model.source = ModelSource("architecture", Path(text), Path(text))
    return model.to(options.get("device", "cpu")).eval()
