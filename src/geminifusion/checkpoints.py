"""Reference checkpoints <-> our models, as pure key mappings checked strictly.

Our layout differs from the reference in two ways only: per-modality LayerNorms are one ``(M, C)``
parameter instead of ``ln_0 .. ln_{M-1}`` modules, and the two GeminiFusion attentions are stacked
on a leading axis of 2 instead of ``cross_attn_0_to_1`` / ``cross_attn_1_to_0``. Everything else
is a rename. :func:`reference_key_map` states the whole correspondence, and both directions
(:func:`load_reference_checkpoint`, :func:`to_reference_state_dict`) are derived from it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geminifusion.fusion import REFERENCE_NAMES, GeminiFusion, reference_names
from geminifusion.layers import ModalityLayerNorm


def reference_key_map(model: nn.Module) -> dict[str, list[str]]:
    """Our state-dict key -> its reference key(s); several keys are stacked on axis 0.

    The backbone supplies ``reference_prefix`` and ``reference_name(key)`` for plain renames; the
    head is ``decoder.*`` unless the model says otherwise (``head_reference_prefix``).
    """
    backbone = model.backbone
    prefixes = {
        "backbone.": backbone.reference_prefix,
        "head.": getattr(model, "head_reference_prefix", "decoder."),
    }
    special: dict[str, list[str]] = {}
    for path, module in model.named_modules():
        if isinstance(module, ModalityLayerNorm):
            for leaf in ("weight", "bias"):
                count = module.weight.shape[0]
                special[f"{path}.{leaf}"] = [f"{path}.ln_{i}.{leaf}" for i in range(count)]
        elif isinstance(module, GeminiFusion):
            parent = path.rpartition(".")[0]
            for ours in REFERENCE_NAMES:
                special[f"{path}.{ours}"] = [f"{parent}.{n}" for n in reference_names(ours)]

    mapping: dict[str, list[str]] = {}
    for key in model.state_dict():
        if key == "alpha":
            mapping[key] = ["alpha"]
            continue
        our_prefix = next((p for p in prefixes if key.startswith(p)), None)
        if our_prefix is None:
            raise ValueError(f"no reference name for {key!r}")
        names = special.get(key)
        if names is None:
            local = key[len(our_prefix) :]
            if our_prefix == "backbone.":
                local = backbone.reference_name(local)
            names = [our_prefix + local]
        mapping[key] = [prefixes[our_prefix] + n[len(our_prefix) :] for n in names]
    return mapping


def to_reference_state_dict(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """The model's weights under the reference's key names (no ``module.`` prefix)."""
    ours = model.state_dict()
    result: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, names in reference_key_map(model).items():
        tensor = ours[key].detach()
        if len(names) == 1:
            result[names[0]] = tensor
        else:
            for i, name in enumerate(names):
                result[name] = tensor[i]
    derived = getattr(model.backbone, "reference_derived_buffers", None)
    if derived is not None:
        for name, tensor in derived().items():
            result[model.backbone.reference_prefix + name] = tensor
    return result


def read_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load`` with ``weights_only=True`` on CPU, accepting the reference's NumPy scalar."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    # The reference pickles ``best_val`` as a NumPy 1.x float64 scalar.
    allowed = [np.dtype, np.dtypes.Float64DType]
    scalar = getattr(np, "_core", np.core).multiarray.scalar
    allowed.append((scalar, "numpy.core.multiarray.scalar"))
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for unreadable files
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({first_line})") from None


def unwrap_state_dict(checkpoint: dict, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the model weights inside a training checkpoint and drop the DDP ``module.`` prefix."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{source}: expected a dict, found {type(checkpoint).__name__}")
    for key in ("segmenter", "model_state_dict", "state_dict", "model"):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{source}: no model weights found (top-level keys: {list(checkpoint)})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def from_reference_state_dict(
    model: nn.Module, reference: dict[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Convert reference-named weights to our keys, strictly: every key used, every shape right."""
    mapping = reference_key_map(model)
    ours = model.state_dict()
    derived = getattr(model.backbone, "reference_derived_buffers", None)
    derived = derived() if derived is not None else {}
    derived = {model.backbone.reference_prefix + k: v for k, v in derived.items()}

    expected = {name for names in mapping.values() for name in names} | set(derived)
    missing = sorted(expected - set(reference))
    unexpected = sorted(set(reference) - expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    shapes = []
    for key, names in mapping.items():
        want = ours[key].shape if len(names) == 1 else ours[key].shape[1:]
        for name in names:
            if name in reference and reference[name].shape != want:
                shapes.append(f"{name} {tuple(reference[name].shape)} != {tuple(want)}")
    if shapes:
        problems.append(f"shape mismatches (checkpoint != model): {_names(shapes, 5)}")
    for name, value in derived.items():
        if name in reference and not torch.equal(reference[name].to(value.dtype), value):
            problems.append(f"{name} does not match the window geometry of this model")
    if problems:
        hint = _class_hint(model, reference)
        raise ValueError(
            f"{source} does not fit this model ({describe(model)}):\n  "
            + "\n  ".join(problems)
            + hint
        )
    converted = {}
    for key, names in mapping.items():
        if len(names) == 1:
            converted[key] = reference[names[0]]
        else:
            converted[key] = torch.stack([reference[n] for n in names])
    return converted


def _class_hint(model: nn.Module, reference: dict[str, torch.Tensor]) -> str:
    pred = next((k for k in reference if k.endswith("linear_pred.weight")), None)
    if pred is not None and reference[pred].shape[0] != model.num_classes:
        return (
            f"\n  (the checkpoint predicts {reference[pred].shape[0]} classes, "
            f"the model {model.num_classes})"
        )
    return ""


def describe(model: nn.Module) -> str:
    spec = getattr(model, "spec", {})
    arch = spec.get("arch", type(model.backbone).__name__)
    arch = arch if isinstance(arch, str) else arch.get("type", "custom")
    return f"{arch}, {model.num_classes} classes, modalities {list(model.modalities)}"


def load_reference_checkpoint(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a checkpoint written by the paper's training script into ``model``, strictly.

    Accepts the reference ``Saver`` format (``{"segmenter": ..., "epoch_start", "best_val"}``,
    ``module.`` prefixes, CUDA-tagged storages) and plain reference state dicts.

    Returns:
        The checkpoint's metadata (``epoch_start``, ``best_val`` when present).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable file, or keys/shapes that do not fit the model (named).
    """
    checkpoint = read_checkpoint(path)
    reference = unwrap_state_dict(checkpoint, str(path))
    converted = from_reference_state_dict(model, reference, str(path))
    model.load_state_dict(converted, strict=True)
    meta = {}
    for key in ("epoch_start", "best_val", "epoch", "best_miou"):
        if key in checkpoint:
            value = checkpoint[key]
            meta[key] = value.item() if hasattr(value, "item") else value
    return meta
