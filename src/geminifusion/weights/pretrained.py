"""Initialising a fused model from single-modality pretrained weights, with a named report.

Every weight the model shares across modalities is copied once from the file, and every
per-modality LayerNorm gets a copy of the single norm in each of its rows. Layers no
single-modality model has (GeminiFusion, the DeLiVER score nets, ``alpha``) keep their
initialisation. Nothing is silent: the returned :class:`LoadReport` names what was loaded, what
was left initialised and what in the file went unused, and any key or shape that contradicts the
model's architecture is an error naming it. The formats themselves are in
:mod:`geminifusion.weights.formats`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from geminifusion.layers import ModalityLayerNorm
from geminifusion.weights.formats import (
    FORMAT_NAMES,
    PRETRAINED_KEYS,
    Converted,
    check_hf_config,
    convert_pretrained,
    read_pretrained,
    resize_position_bias,
)
from geminifusion.weights.strict import name_list


@dataclass
class LoadReport:
    """What :func:`load_pretrained_backbone` did, by name.

    Attributes:
        source: the path that was read.
        format: one of :data:`FORMAT_NAMES`.
        loaded: model keys whose values came from the file.
        initialised: model keys left as built (fusion layers, a head the file lacks, ``alpha``).
        unused: file key -> why it was not used (classifier, derived buffer, ...).
        notes: other facts worth knowing (norm copies, resized tables, unchecked head counts).
    """

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    unused: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for people: counts, then names grouped by pattern (``block*`` etc.)."""
        lines = [
            f"pretrained weights from {self.source} ({FORMAT_NAMES.get(self.format, self.format)})"
        ]
        lines.append(f"  loaded {len(self.loaded)} tensors:")
        lines += [f"    {g}" for g in group_names(self.loaded)]
        lines.append(f"  newly initialised {len(self.initialised)} tensors:")
        lines += [f"    {g}" for g in group_names(self.initialised)] or ["    (none)"]
        lines.append(f"  not used from the file {len(self.unused)} tensors:")
        by_reason: dict[str, list[str]] = {}
        for key, reason in self.unused.items():
            by_reason.setdefault(reason, []).append(key)
        for reason, keys in by_reason.items():
            lines += [f"    {g}  [{reason}]" for g in group_names(keys)]
        if not self.unused:
            lines.append("    (none)")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def group_names(keys: Iterable[str]) -> list[str]:
    """Collapse indices (``block1.0`` -> ``block*.*``) and leaves; each group with its count."""
    groups: dict[str, tuple[set[str], int]] = {}
    for key in keys:
        module, _, leaf = key.rpartition(".")
        pattern = re.sub(r"\d+", "*", module) if module else leaf
        leaves, count = groups.get(pattern, (set(), 0))
        leaves.add(leaf if module else "")
        groups[pattern] = (leaves, count + 1)
    out = []
    for pattern, (leaves, count) in groups.items():
        leaves.discard("")
        if len(leaves) == 1:
            name = f"{pattern}.{next(iter(leaves))}"
        elif leaves:
            name = f"{pattern}.{{{','.join(sorted(leaves))}}}"
        else:
            name = pattern
        out.append(f"{name} ({count})" if count > 1 else name)
    return out


def load_pretrained_backbone(
    model: nn.Module, path: str | os.PathLike, head: bool | str = "auto"
) -> LoadReport:
    """Initialise ``model`` from single-modality pretrained weights; no network, nothing silent.

    Accepts the original SegFormer (``mit_b0.pth`` ...) and Swin (``{"model": ...}``) ImageNet
    files, their mmsegmentation checkpoints, and transformers ``SegformerModel`` /
    ``SegformerForSemanticSegmentation`` / ``SwinModel`` checkpoints (folder or file). Weights
    shared by the modalities are copied once; each per-modality LayerNorm gets the single norm in
    every row. Swin position-bias tables are resized (bicubic) to the model's window.

    Args:
        model: a :class:`~geminifusion.segmentor.Segmentor` (or a bare backbone).
        path: weights file or transformers folder.
        head: the SegFormer decode head in the file: ``"auto"`` loads it when every tensor fits
            the model's head (else it stays initialised and is listed unused); ``True`` requires
            it to fit; ``False`` never loads it.

    Returns:
        A :class:`LoadReport` naming what was loaded, initialised and unused.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: unknown format, or a key or shape that contradicts the architecture (named).
    """
    state, hf_config = read_pretrained(path)
    fmt, converted = convert_pretrained(state, hf_config)
    report = LoadReport(source=str(path), format=fmt)
    report.unused.update(converted.unused)

    backbone = getattr(model, "backbone", model)
    family = backbone.family
    if family not in PRETRAINED_KEYS:
        raise ValueError(f"no pretrained weights are known for {type(backbone).__name__}")
    file_family = fmt.partition("-")[0]
    if (file_family == "segformer") != (family == "mit"):
        raise ValueError(
            f"{path}: a {FORMAT_NAMES[fmt]} does not fit a {type(backbone).__name__} backbone"
        )
    problems: list[str] = []
    config = backbone.config
    if hf_config is not None:
        bad, notes = check_hf_config(family, hf_config, config)
        problems += bad
        report.notes += notes
    elif family == "mit":
        report.notes.append(
            f"attention head counts are not stored in this format; assumed {list(config.num_heads)}"
        )

    prefix = "backbone." if backbone is not model else ""
    ours = {prefix + k: v for k, v in backbone.state_dict().items()}
    norms = {
        f"{prefix}{name}.{leaf}"
        for name, module in backbone.named_modules()
        if isinstance(module, ModalityLayerNorm)
        for leaf in ("weight", "bias")
    }
    file_backbone = {k: v for k, v in converted.tensors.items() if k.startswith("backbone.")}
    values: dict[str, torch.Tensor] = {}
    resized, copied_norms, provided = [], 0, set()
    for key, tensor in file_backbone.items():
        target = prefix + key.removeprefix("backbone.")
        source = converted.sources[key]
        provided.add(target)
        if target not in ours:
            problems.append(f"{source}: the model has no {target} (architecture mismatch)")
            continue
        want = ours[target].shape
        if tensor.shape == want:
            values[target] = tensor
        elif target in norms and tensor.shape == want[1:]:
            values[target] = tensor.expand(want)
            copied_norms += 1
        elif target.endswith("relative_position_bias_table") and tensor.shape[1:] == want[1:]:
            window = (math.isqrt(want[0]) + 1) // 2
            values[target] = resize_position_bias(tensor, window)
            resized.append(target)
        else:
            problems.append(f"{source} {tuple(tensor.shape)} != {target} {tuple(want)}")
    pattern = PRETRAINED_KEYS[family]
    missing = [
        k for k in ours if k not in provided and pattern.fullmatch("backbone." + k[len(prefix) :])
    ]
    if missing:
        problems.append(f"the file lacks {name_list(missing)} (architecture mismatch)")
    if problems:
        raise ValueError(
            f"{path} ({FORMAT_NAMES[fmt]}) does not fit this model:\n  " + "\n  ".join(problems)
        )

    if prefix:
        head_values = _match_head(model, converted, head, report, str(path))
    else:
        head_values = {}
        for key in converted.tensors:
            if key.startswith("head."):
                report.unused[converted.sources[key]] = "decode head (loading a bare backbone)"
    if copied_norms and any(ours[k].shape[0] > 1 for k in norms if k in values):
        report.notes.append(
            f"{copied_norms} per-modality LayerNorm tensors got the file's single norm in every row"
        )
    embed_norm = prefix + "patch_embed.norm.weight"
    if family == "swin" and embed_norm in values and ours[embed_norm].shape[0] > 1:
        report.notes.append(
            "the paper's Swin loader leaves its per-modality patch-embedding norm at ones/zeros "
            "(its renaming misses them); here it starts from the file's norm"
        )
    if resized:
        report.notes.append(
            f"{len(resized)} relative position bias tables resized (bicubic) to window "
            f"{config.window_size}"
        )
    values.update(head_values)
    with torch.no_grad():
        full = model.state_dict()
        for key, value in values.items():
            full[key].copy_(value)
    report.loaded = [k for k in full if k in values]
    report.initialised = [k for k in full if k not in values]
    return report


def _match_head(
    model: nn.Module, converted: Converted, mode: bool | str, report: LoadReport, path: str
) -> dict[str, torch.Tensor]:
    """The file's decode head in our keys when it fits (all or nothing), per ``mode``."""
    if mode not in (True, False, "auto"):
        raise ValueError(f"head must be True, False or 'auto', got {mode!r}")
    file_head = {k: v for k, v in converted.tensors.items() if k.startswith("head.")}
    if not file_head:
        if mode is True:
            raise ValueError(f"{path}: head=True but the file has no SegFormer decode head")
        return {}
    if mode is False:
        for key in file_head:
            report.unused[converted.sources[key]] = "decode head (head=False)"
        return {}
    ours = {k: v for k, v in model.state_dict().items() if k.startswith("head.")}
    problems = [
        f"{converted.sources[k]} {tuple(v.shape)} != {k} {tuple(ours[k].shape)}"
        for k, v in file_head.items()
        if k in ours and v.shape != ours[k].shape
    ]
    problems += [
        f"{converted.sources[k]} has no place in this head" for k in file_head if k not in ours
    ]
    problems += [f"the file's head lacks {k}" for k in ours if k not in file_head]
    if not problems:
        return file_head
    if mode is True:
        raise ValueError(f"{path}: the decode head does not fit:\n  " + "\n  ".join(problems))
    reason = f"decode head does not fit this model ({problems[0]})"
    for key in file_head:
        report.unused[converted.sources[key]] = reason
    return {}
