"""The paper's checkpoints <-> model folders, both ways, bit for bit.

Converting a reference checkpoint records its layout (the training script's ``Saver`` file or
the DeLiVER branch's state dict) and its epoch and best score in the folder's ``config.json``,
so that converting back writes the same file: the same tensors under the same names.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from geminifusion.files import OutputError, check_apart, claim_file
from geminifusion.weights.folder import (
    from_pretrained,
    is_model_folder,
    open_model_folder,
    read_folder_config,
    save_pretrained,
)
from geminifusion.weights.io import read_checkpoint, save_checkpoint
from geminifusion.weights.reference import (
    model_from_reference,
    reference_layout,
    reference_metadata,
    to_reference_state_dict,
)


def check_conversion(source: str | os.PathLike, target: str | os.PathLike, force: bool) -> None:
    """Before converting: ``target`` may be written (never inside or over ``source``; an
    existing output only with ``force``, and only one that geminifusion wrote)."""
    source, target = Path(source), Path(target)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if source.is_dir():
        if target.is_dir():
            raise OutputError(f"{target} is a folder; give the checkpoint file to write")
        claim_file(target, "convert", replace=force, inputs=[source])
        return
    check_apart(target, [source], "OUT")
    if target.is_file():
        raise OutputError(f"{target} is a file; give the folder to write")
    if is_model_folder(target) and not force:
        raise OutputError(f"{target} holds a model folder; pass --force to replace it")
    open_model_folder(target, option="OUT")


def reference_to_folder(
    checkpoint: str | os.PathLike,
    directory: str | os.PathLike,
    arch: str | object | None = None,
    modalities: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> nn.Module:
    """Convert a training checkpoint of the paper's code into a model folder.

    Args:
        checkpoint: the reference file (``Saver`` format, or the DeLiVER branch's).
        directory: output folder.
        arch: variant name or config; recognised from the checkpoint when omitted.
        modalities: input names; by default ``rgb, depth`` (and ``event, lidar`` for four).
        class_names: optional, one per class.

    Returns:
        The loaded model.
    """
    raw = read_checkpoint(checkpoint)
    model = model_from_reference(raw, str(checkpoint), arch, modalities)
    facts = {"layout": reference_layout(raw), **reference_metadata(raw)}
    save_pretrained(model, directory, class_names=class_names, source_checkpoint=facts)
    return model


def folder_to_reference(directory: str | os.PathLike, checkpoint: str | os.PathLike) -> Path:
    """Write a model folder as a checkpoint of the paper's code.

    The layout is the one the folder was converted from (kept in ``config.json``): the ``Saver``
    format ``{"segmenter": {"module." + key: ...}, "epoch_start", "best_val"}`` by default, or a
    bare state dict as the DeLiVER branch writes it.
    """
    config = read_folder_config(directory)
    model = from_pretrained(directory)
    facts = dict(config.get("source_checkpoint") or {})
    layout = facts.pop("layout", "saver")
    state = OrderedDict((k, v.clone()) for k, v in to_reference_state_dict(model).items())
    if layout in ("state_dict", "resume"):  # the DeLiVER branch's weights, bare
        payload = state
    elif layout in ("saver", "module_state_dict"):
        payload = OrderedDict(("module." + k, v) for k, v in state.items())
        if layout == "saver":
            payload = {"segmenter": payload, **facts}
    else:
        raise ValueError(f"{directory}: unknown source checkpoint layout {layout!r}")
    return save_checkpoint(payload, checkpoint, command="convert")
