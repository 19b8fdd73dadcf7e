"""The paper's checkpoints <-> our models, as pure key mappings checked strictly.

Our layout differs from the reference in two ways only: per-modality LayerNorms are one ``(M, C)``
parameter instead of ``ln_0 .. ln_{M-1}`` modules, and the two GeminiFusion attentions are stacked
on a leading axis of 2 instead of ``cross_attn_0_to_1`` / ``cross_attn_1_to_0`` (the names sit
beside the layer, in :mod:`geminifusion.fusion`). Everything else is a rename.
:func:`reference_key_map` states the whole correspondence; loading, saving and recognising the
architecture of a checkpoint are all derived from it.

Two layouts are read: the training script's ``{"segmenter": ..., "epoch_start", "best_val"}``
with DDP ``module.`` prefixes, and the DeLiVER branch's plain state dict (or its resume file,
``{"model_state_dict", "epoch", "best_miou", ...}``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from geminifusion.backbones import VARIANTS
from geminifusion.fusion import REFERENCE_NAMES, GeminiFusion, reference_names
from geminifusion.layers import ModalityLayerNorm
from geminifusion.segmentor import build_segmentor
from geminifusion.weights.io import read_checkpoint
from geminifusion.weights.strict import load_strict, mismatch_error, mismatches

# Input names by modality count, when a reference checkpoint does not say.
DEFAULT_MODALITIES = {2: ("rgb", "depth"), 4: ("rgb", "depth", "event", "lidar")}


def reference_key_map(model: nn.Module) -> dict[str, list[str]]:
    """Our state-dict key -> its reference key(s); several keys are stacked on axis 0.

    The backbone supplies ``reference_prefix``, ``head_reference_prefix`` and
    ``reference_name(key)`` (see :class:`~geminifusion.backbones.base.Backbone`).
    """
    backbone = model.backbone
    prefixes = {
        "backbone.": backbone.reference_prefix,
        "head.": backbone.head_reference_prefix,
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
    for name, tensor in model.backbone.reference_derived_buffers().items():
        result[model.backbone.reference_prefix + name] = tensor
    return result


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


def _derived_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    prefix = model.backbone.reference_prefix
    return {prefix + k: v for k, v in model.backbone.reference_derived_buffers().items()}


def reference_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every key a reference checkpoint of ``model`` holds, with its shape."""
    ours = model.state_dict()
    shapes = {}
    for key, names in reference_key_map(model).items():
        shape = tuple(ours[key].shape if len(names) == 1 else ours[key].shape[1:])
        shapes.update((name, shape) for name in names)
    shapes.update((k, tuple(v.shape)) for k, v in _derived_buffers(model).items())
    return shapes


def from_reference_state_dict(
    model: nn.Module, reference: dict[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Convert reference-named weights to our keys, strictly: every key used, every shape right."""
    problems = mismatches(reference_shapes(model), reference)
    for name, value in _derived_buffers(model).items():
        if name in reference and not torch.equal(reference[name].to(value.dtype), value):
            problems.append(f"{name} does not match the window geometry of this model")
    if problems:
        raise mismatch_error(source, model, problems)
    converted = {}
    for key, names in reference_key_map(model).items():
        if len(names) == 1:
            converted[key] = reference[names[0]]
        else:
            converted[key] = torch.stack([reference[n] for n in names])
    return converted


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
    return load_reference_state(model, read_checkpoint(path), str(path))


def load_reference_state(model: nn.Module, checkpoint: dict, source: str) -> dict:
    """:func:`load_reference_checkpoint` for a checkpoint already read."""
    reference = unwrap_state_dict(checkpoint, source)
    load_strict(model, from_reference_state_dict(model, reference, source), source)
    return reference_metadata(checkpoint)


def reference_metadata(checkpoint: dict) -> dict:
    """The facts a reference checkpoint keeps beside its weights (epoch, best score)."""
    meta = {}
    for key in ("epoch_start", "best_val", "epoch", "best_miou"):
        if key in checkpoint:
            value = checkpoint[key]
            meta[key] = value.item() if hasattr(value, "item") else value
    return meta


def describe_reference(state: dict[str, torch.Tensor]) -> dict:
    """What a reference state dict shows about its model: classes, modalities, head width."""
    pred = [k for k in state if k.endswith("linear_pred.weight")]
    fuse = [k for k in state if k.endswith("linear_fuse.conv.weight")]
    if len(pred) != 1 or len(fuse) != 1:
        raise ValueError("not a GeminiFusion segmenter checkpoint (no single SegFormer head)")
    rows = {int(k.split(".ln_")[1].split(".")[0]) for k in state if ".ln_" in k}
    count = max(rows) + 1 if rows else (len(state["alpha"]) if "alpha" in state else 1)
    return {
        "num_classes": state[pred[0]].shape[0],
        "head_embed_dim": state[fuse[0]].shape[0],
        "num_modalities": count,
    }


_BLOCK = re.compile(r"(?:block(\d)|layers\.(\d)\.blocks)\.(\d+)\.")


def _depths(keys: Sequence[str]) -> tuple[int, ...]:
    """Blocks per stage, counted from ``block{s}.{i}.`` / ``layers.{s}.blocks.{i}.`` keys."""
    blocks: dict[str, set[int]] = {}
    for key in keys:
        if m := _BLOCK.search(key):
            blocks.setdefault(m[1] or m[2], set()).add(int(m[3]))
    return tuple(max(blocks[s]) + 1 for s in sorted(blocks))


def _one_block_per_stage(shapes: dict[str, tuple[int, ...]]) -> set[tuple[str, tuple[int, ...]]]:
    return {(_BLOCK.sub(lambda m: m[0].rsplit(".", 2)[0] + ".*.", k), s) for k, s in shapes.items()}


def infer_reference_arch(state: dict[str, torch.Tensor], num_modalities: int) -> str:
    """The named variant whose reference keys and shapes are exactly those of ``state``.

    Each variant with the checkpoint's blocks per stage is built with one block per stage, and
    its keys and shapes (block indices aside) are compared with the checkpoint's.

    Raises:
        ValueError: no variant or several fit (attention head counts are not in the shapes).
    """
    facts = describe_reference(state)
    depths = _depths(list(state))
    have = _one_block_per_stage({k: tuple(v.shape) for k, v in state.items()})
    matches = []
    for name, config in VARIANTS.items():
        if tuple(config.depths) != depths:
            continue
        try:
            model = build_segmentor(
                dataclasses.replace(config, depths=(1,) * len(depths)),
                facts["num_classes"],
                modalities=[f"m{i}" for i in range(num_modalities)],
                head_embed_dim=facts["head_embed_dim"],
            )
        except ValueError:  # this family cannot take that many modalities
            continue
        if _one_block_per_stage(reference_shapes(model)) == have:
            matches.append(name)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(
            f"the checkpoint fits several variants ({', '.join(matches)}): choose one with --arch"
        )
    raise ValueError(
        "the checkpoint's keys and shapes match no named variant; give the architecture with "
        '--arch, e.g. \'{"type": "MiTConfig", "embed_dims": [...], "depths": [...], '
        '"num_heads": [...], "sr_ratios": [...]}\' (attention head counts are not stored '
        "in a checkpoint, so they cannot be recognised)"
    )


def reference_layout(checkpoint: dict) -> str:
    """How a reference file stores its weights: ``saver`` (the training script's
    ``{"segmenter": ...}``), ``resume`` (the DeLiVER branch's ``{"model_state_dict": ...}``),
    ``module_state_dict`` or ``state_dict`` (bare, with or without DDP prefixes)."""
    if isinstance(checkpoint.get("segmenter"), dict):
        return "saver"
    if isinstance(checkpoint.get("model_state_dict"), dict):
        return "resume"
    tensors = [k for k, v in checkpoint.items() if isinstance(v, torch.Tensor)]
    return "module_state_dict" if all(k.startswith("module.") for k in tensors) else "state_dict"


def model_from_reference(
    checkpoint: dict,
    source: str,
    arch: str | object | None = None,
    modalities: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """The model a reference checkpoint describes, built and loaded strictly.

    The class count, head width and number of inputs are read from the weights; the
    architecture is recognised from the keys and shapes unless ``arch`` is given; the inputs
    are named ``modalities``, by default ``rgb, depth`` (and ``event, lidar`` for four). A
    given ``num_classes`` must be the checkpoint's.
    """
    state = unwrap_state_dict(checkpoint, source)
    facts = describe_reference(state)
    if num_classes is not None and facts["num_classes"] != num_classes:
        raise ValueError(
            f"{source}: the checkpoint predicts {facts['num_classes']} classes, the model "
            f"{num_classes}"
        )
    count = facts["num_modalities"]
    if modalities is None:
        if count not in DEFAULT_MODALITIES:
            raise ValueError(
                f"{source}: the checkpoint has {count} inputs; name them (e.g. --modalities)"
            )
        modalities = DEFAULT_MODALITIES[count]
    if len(modalities) != count:
        raise ValueError(
            f"{source}: the checkpoint has {count} inputs, {len(modalities)} names given "
            f"({', '.join(modalities)})"
        )
    if arch is None:
        arch = infer_reference_arch(state, count)
    model = build_segmentor(
        arch, facts["num_classes"], modalities=modalities, head_embed_dim=facts["head_embed_dim"]
    )
    load_strict(model, from_reference_state_dict(model, state, source), source)
    return model
