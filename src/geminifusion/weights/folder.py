"""Model folders: ``config.json`` + ``model.safetensors``, portable and pickle-free.

A folder holds everything needed to rebuild a model without this package's Python objects: the
``build_segmentor`` arguments (``model.spec``), the class names when known, the dtype, and the
weights as safetensors. :func:`from_pretrained` rebuilds the model and loads the weights
strictly, so a round trip is exact; every value of ``config.json`` is checked, and an error
names the file and the key.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from geminifusion._version import __version__
from geminifusion.backbones import CONFIG_TYPES
from geminifusion.files import OutputFolder
from geminifusion.segmentor import Segmentor, build_segmentor, check_backbone_config
from geminifusion.weights.io import read_json, read_safetensors
from geminifusion.weights.strict import load_strict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
# config.json entries that are not arguments of ``build_segmentor``.
META_KEYS = frozenset(
    {
        "format",
        "format_version",
        "geminifusion_version",
        "class_names",
        "dtype",
        "source_checkpoint",
    }
)


def is_model_folder(path: str | os.PathLike) -> bool:
    """A folder with a ``config.json`` that says it is one of ours."""
    config = Path(path) / CONFIG_NAME
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("format") == "geminifusion"
    except (OSError, ValueError, AttributeError):
        return False


MODEL_KIND = "model"  # what owns a model folder; its config.json marks it (no manifest)


def _model_folder_files(path: Path) -> list[str] | None:
    return [CONFIG_NAME, WEIGHTS_NAME] if is_model_folder(path) else None


def open_model_folder(directory: str | os.PathLike, option: str = "model folder") -> OutputFolder:
    """The folder a model is saved into, checked first: new, empty, or a model folder of
    ours (only its ``config.json`` and ``model.safetensors`` are replaced)."""
    folder = OutputFolder.open(
        directory,
        MODEL_KIND,
        option=option,
        adopt=_model_folder_files,
        record=False,
        hint="save the model into a new or empty folder",
    )
    folder.claim(CONFIG_NAME, WEIGHTS_NAME)
    return folder


def save_pretrained(
    model: Segmentor,
    directory: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    source_checkpoint: dict | None = None,
) -> Path:
    """Write ``model`` as ``directory/config.json`` + ``directory/model.safetensors``.

    Args:
        model: a segmentor built by ``build_segmentor`` (its ``spec`` rebuilds it).
        directory: created if missing; a folder of other files is refused, the two files of
            an earlier model folder are replaced atomically.
        class_names: one name per class; defaults to ``model.class_names``.
        source_checkpoint: JSON-able facts of the checkpoint this model was converted from
            (its layout, epoch, best score), so that converting back restores them.

    Returns:
        The folder.
    """
    from safetensors.torch import save

    spec = dict(model.spec or {})
    if "arch" not in spec or "num_classes" not in spec:
        raise ValueError("the model has no build spec; build it with geminifusion.build_segmentor")
    if class_names is None:
        class_names = model.class_names
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
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    folder = open_model_folder(directory)
    folder.write_bytes(WEIGHTS_NAME, save(tensors, {"format": "pt"}))
    folder.write_text(CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return folder.path


def config_from_dict(arch: dict, source: str = "arch") -> object:
    """A backbone config from its JSON form ``{"type": "MiTConfig", ...fields}``."""
    arch = dict(arch)
    type_name = arch.pop("type", None)
    if not isinstance(type_name, str) or type_name not in CONFIG_TYPES:
        raise ValueError(
            f"{source}: unknown backbone config type {type_name!r}; "
            f"known: {', '.join(sorted(CONFIG_TYPES))}"
        )
    cls = CONFIG_TYPES[type_name]
    fields = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(arch) - fields)
    if extra:
        raise ValueError(f"{source}: {type_name} has no fields {extra}")
    try:
        config = cls(**arch)
    except (TypeError, ValueError, ArithmeticError) as err:
        raise ValueError(f"{source}: {type(err).__name__ if not str(err) else err}") from None
    try:
        check_backbone_config(config)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    return config


def build_from_config(config: dict, source: str = CONFIG_NAME) -> Segmentor:
    """Rebuild a segmentor (random weights) from a ``config.json`` dict; errors name ``source``."""
    if config.get("format") != "geminifusion":
        raise ValueError(f'{source}: not a geminifusion model config (no "format": "geminifusion")')
    version = config.get("format_version", 0)
    if not isinstance(version, int):
        raise ValueError(f"{source}: 'format_version' must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{source}: model folder format {version} is newer than this geminifusion reads "
            f"({FORMAT_VERSION}); upgrade the package"
        )
    params = inspect.signature(build_segmentor).parameters
    kwargs = {k: v for k, v in config.items() if k not in META_KEYS}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"{source} has settings this version does not know: {unknown}")
    if isinstance(kwargs.get("arch"), dict):
        kwargs["arch"] = config_from_dict(kwargs["arch"], f"{source}: 'arch'")
    elif not isinstance(kwargs.get("arch"), str):
        raise ValueError(f"{source}: 'arch' must be a variant name or a config object")
    if "modalities" in kwargs:
        if not isinstance(kwargs["modalities"], list):
            raise ValueError(f"{source}: 'modalities' must be a list of names")
        kwargs["modalities"] = tuple(kwargs["modalities"])
    try:
        model = build_segmentor(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from None
    names = config.get("class_names")
    if names is not None:
        if not isinstance(names, list) or len(names) != model.num_classes:
            raise ValueError(
                f"{source}: 'class_names' must be a list of {model.num_classes} names, "
                f"got {names!r:.80}"
            )
        model.class_names = [str(n) for n in names]
    dtype = config.get("dtype")
    if dtype:
        value = getattr(torch, str(dtype), None)
        if not isinstance(value, torch.dtype) or not value.is_floating_point:
            raise ValueError(f"{source}: 'dtype' must name a floating dtype, got {dtype!r}")
        model.to(value)
    return model


def read_folder_config(directory: str | os.PathLike) -> dict:
    """The ``config.json`` of a model folder, as a dict."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        has = (
            " (it has model.safetensors: a model folder needs both)"
            if (Path(directory) / WEIGHTS_NAME).is_file()
            else " (not a geminifusion model folder)"
        )
        raise FileNotFoundError(f"{directory}: no {CONFIG_NAME}{has}")
    return read_json(path)


def from_pretrained(directory: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_pretrained`, weights loaded strictly, in eval mode."""
    directory = Path(directory)
    config = read_folder_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME}")
    model = build_from_config(config, str(directory / CONFIG_NAME))
    state = read_safetensors(weights)
    load_strict(model, state, f"{weights} (with its {CONFIG_NAME})")
    return model.to(device).eval()


def parse_arch(text: str) -> str | object:
    """``--arch``: a variant name, a JSON config object, or a path to a JSON file with one."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return config_from_dict(json.loads(text), "--arch")
        except json.JSONDecodeError as err:
            raise ValueError(f"--arch is not valid JSON ({err})") from None
    path = Path(text)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"--arch: file not found: {path}")
        return config_from_dict(read_json(path), str(path))
    return text
