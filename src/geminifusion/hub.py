"""Portable model folders: ``config.json`` + ``model.safetensors``, and reference checkpoints.

A folder holds everything needed to rebuild a model without this package's Python objects: the
``build_segmentor`` arguments (``model.spec``), the class names when known, the dtype, and the
weights as safetensors (no pickle). :func:`from_pretrained` rebuilds the model and loads the
weights strictly, so a round trip is exact. :func:`reference_to_folder` and
:func:`folder_to_reference` convert the paper's training checkpoints to such folders and back;
the architecture of a checkpoint is recognised from its keys and shapes.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
# config.json entries that are not arguments of ``build_segmentor``.
_META_KEYS = {
    "format",
    "format_version",
    "geminifusion_version",
    "class_names",
    "dtype",
    "source_checkpoint",
}
# Default input names by modality count when a reference checkpoint does not say.
DEFAULT_MODALITIES = {2: ("rgb", "depth"), 4: ("rgb", "depth", "event", "lidar")}


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename: never a half file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    source_checkpoint: dict | None = None,
) -> Path:
    """Write ``model`` as ``directory/config.json`` + ``directory/model.safetensors``.

    Args:
        model: a segmentor built by ``build_segmentor`` (its ``spec`` rebuilds it).
        directory: created if missing; existing files of these two names are replaced.
        class_names: one name per class; defaults to ``model.class_names`` when set.
        source_checkpoint: JSON-able facts of the checkpoint this model was converted from
            (its layout, epoch, best score), so that converting back restores them.

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    from geminifusion import __version__

    spec = dict(getattr(model, "spec", None) or {})
    if "arch" not in spec or "num_classes" not in spec:
        raise ValueError("the model has no build spec; build it with geminifusion.build_segmentor")
    if class_names is None:
        class_names = getattr(model, "class_names", None)
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != spec["num_classes"]:
            raise ValueError(
                f"{len(class_names)} class names for a model of {spec['num_classes']} classes"
            )
    state = model.state_dict()
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    config = {
        "format": "geminifusion",
        "format_version": FORMAT_VERSION,
        "geminifusion_version": __version__,
        **spec,
        "class_names": class_names,
        "dtype": str(dtypes.pop()).removeprefix("torch.") if len(dtypes) == 1 else None,
    }
    if source_checkpoint:
        config["source_checkpoint"] = source_checkpoint
    text = json.dumps(config, indent=2) + "\n"
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, p, {"format": "pt"}))
    _atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(text))
    return directory


def config_from_dict(arch: dict) -> object:
    """A backbone config from its JSON form ``{"type": "MiTConfig", ...fields}``."""
    from geminifusion import backbones

    arch = dict(arch)
    type_name = arch.pop("type", None)
    known = {type(c).__name__: type(c) for c in backbones.VARIANTS.values()}
    for name in dir(backbones):
        value = getattr(backbones, name)
        if name.endswith("Config") and dataclasses.is_dataclass(value):
            known[name] = value
    if type_name not in known:
        raise ValueError(
            f"unknown backbone config type {type_name!r}; known: {', '.join(sorted(known))}"
        )
    cls = known[type_name]
    fields = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(arch) - fields)
    if extra:
        raise ValueError(f"{type_name} has no fields {extra}")
    return cls(**arch)


def build_from_config(config: dict) -> nn.Module:
    """Rebuild a segmentor (random weights) from a ``config.json`` dict."""
    from geminifusion.segmentor import build_segmentor

    if config.get("format") != "geminifusion":
        raise ValueError('not a geminifusion model config (no "format": "geminifusion")')
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"model folder format {config['format_version']} is newer than this geminifusion "
            f"reads ({FORMAT_VERSION}); upgrade the package"
        )
    params = inspect.signature(build_segmentor).parameters
    kwargs = {k: v for k, v in config.items() if k not in _META_KEYS}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"config.json has settings this version does not know: {unknown}")
    if isinstance(kwargs.get("arch"), dict):
        kwargs["arch"] = config_from_dict(kwargs["arch"])
    if "modalities" in kwargs:
        kwargs["modalities"] = tuple(kwargs["modalities"])
    model = build_segmentor(**kwargs)
    if config.get("class_names") is not None:
        model.class_names = list(config["class_names"])
    if config.get("dtype"):
        model.to(getattr(torch, config["dtype"]))
    return model


def read_config(directory: str | os.PathLike) -> dict:
    """The ``config.json`` of a model folder."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_NAME} (not a geminifusion model folder)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return config


def from_pretrained(directory: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by ``save_pretrained`` and load its weights strictly (eval mode)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config = read_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME}")
    model = build_from_config(config)
    state = load_file(weights, device="cpu")
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    wrong = [
        f"{k} {tuple(v.shape)} != {tuple(ours[k].shape)}"
        for k, v in state.items()
        if k in ours and v.shape != ours[k].shape
    ]
    problems = [
        f"{label}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shapes", wrong))
        if items
    ]
    if problems:
        raise ValueError(f"{weights} does not match its config.json:\n  " + "\n  ".join(problems))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


# --------------------------------------------------------------------------- reference checkpoints


def _expected_reference_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    from geminifusion.checkpoints import reference_key_map

    ours = model.state_dict()
    shapes = {}
    for key, names in reference_key_map(model).items():
        shape = tuple(ours[key].shape if len(names) == 1 else ours[key].shape[1:])
        for name in names:
            shapes[name] = shape
    derived = getattr(model.backbone, "reference_derived_buffers", None)
    if derived is not None:
        prefix = model.backbone.reference_prefix
        shapes.update({prefix + k: tuple(v.shape) for k, v in derived().items()})
    return shapes


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
    from geminifusion.backbones import VARIANTS
    from geminifusion.segmentor import build_segmentor

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
        if _one_block_per_stage(_expected_reference_shapes(model)) == have:
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


def parse_arch(text: str) -> str | object:
    """``--arch``: a variant name, a JSON config object, or a path to a JSON file with one."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return config_from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise ValueError(f"--arch is not valid JSON ({err})") from None
    if text.endswith(".json") and Path(text).is_file():
        return config_from_dict(json.loads(Path(text).read_text()))
    return text


def reference_to_folder(
    checkpoint: str | os.PathLike,
    directory: str | os.PathLike,
    arch: str | object | None = None,
    modalities: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> nn.Module:
    """Convert a training checkpoint of the paper's code into a model folder.

    Args:
        checkpoint: the reference ``Saver`` file (or a plain reference state dict).
        directory: output folder.
        arch: variant name or config; recognised from the checkpoint when omitted.
        modalities: input names; by default ``rgb, depth`` (and ``event, lidar`` for four).
        class_names: optional, one per class.

    Returns:
        The loaded model.
    """
    from geminifusion.checkpoints import (
        from_reference_state_dict,
        read_checkpoint,
        unwrap_state_dict,
    )
    from geminifusion.segmentor import build_segmentor

    raw = read_checkpoint(checkpoint)
    state = unwrap_state_dict(raw, str(checkpoint))
    kept = {k: raw[k] for k in ("epoch_start", "best_val", "epoch") if k in raw}
    source = {k: v.item() if hasattr(v, "item") else v for k, v in kept.items()}
    if isinstance(raw.get("segmenter"), dict):
        source["layout"] = "saver"
    else:  # the DeLiVER branch saves a bare state dict
        prefixed = all(k.startswith("module.") for k in raw if isinstance(raw[k], torch.Tensor))
        source["layout"] = "module_state_dict" if prefixed else "state_dict"
    facts = describe_reference(state)
    count = facts["num_modalities"]
    if modalities is None:
        if count not in DEFAULT_MODALITIES:
            raise ValueError(f"the checkpoint has {count} modalities: name them with --modalities")
        modalities = DEFAULT_MODALITIES[count]
    if len(modalities) != count:
        raise ValueError(f"the checkpoint has {count} modalities, {len(modalities)} names given")
    if arch is None:
        arch = infer_reference_arch(state, count)
    model = build_segmentor(
        arch, facts["num_classes"], modalities=modalities, head_embed_dim=facts["head_embed_dim"]
    )
    converted = from_reference_state_dict(model, state, str(checkpoint))
    model.load_state_dict(converted, strict=True)
    save_pretrained(model, directory, class_names=class_names, source_checkpoint=source)
    return model


def folder_to_reference(directory: str | os.PathLike, checkpoint: str | os.PathLike) -> Path:
    """Write a model folder as a checkpoint of the paper's code.

    The layout is the one the folder was converted from (kept in ``config.json``): the ``Saver``
    format ``{"segmenter": {"module." + key: ...}, "epoch_start", "best_val"}`` by default, or a
    bare state dict as the DeLiVER branch writes it.
    """
    from geminifusion.checkpoints import to_reference_state_dict

    config = read_config(directory)
    model = from_pretrained(directory)
    facts = dict(config.get("source_checkpoint") or {})
    layout = facts.pop("layout", "saver")
    state = OrderedDict((k, v.clone()) for k, v in to_reference_state_dict(model).items())
    if layout == "state_dict":
        payload = state
    elif layout in ("saver", "module_state_dict"):
        payload = OrderedDict(("module." + k, v) for k, v in state.items())
        if layout == "saver":
            payload = {"segmenter": payload, **facts}
    else:
        raise ValueError(f"{directory}: unknown source checkpoint layout {layout!r}")
    checkpoint = Path(checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(checkpoint, lambda p: torch.save(payload, p))
    return checkpoint
