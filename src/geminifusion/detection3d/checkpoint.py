"""Checkpoints from elsewhere in this package's layout: the GeminiFusion reference, stock MVX-Net.

Two foreign layouts map onto :class:`~geminifusion.detection3d.GeminiDynamicVFE`:

- **The GeminiFusion reference fork** (:func:`convert_reference_state_dict`): it keeps the fusion
  as two ``nn.MultiheadAttention`` modules, an MLP judger and two ``nn.Embedding`` noises per
  point-fusion layer; :class:`~geminifusion.fusion.GeminiFusion` stacks the two directions on a
  leading axis. Every other key already has the reference's name and passes unchanged; the
  result loads with ``strict=True``.
- **Stock MVX-Net** (:func:`convert_mvxnet_state_dict`, :func:`load_mvxnet_weights`):
  MMDetection3D's ``DynamicVFE`` holds one ``PointFusion`` after its last layer as
  ``<vfe>.fusion_layer.<name>``; the plug-in holds one fusion slot per VFE layer as
  ``<vfe>.fusion_layer.<i>.<name>``. The stock fusion is the plug-in's last slot (same lateral
  convs, transforms and shapes), so its keys move to ``fusion_layer.<last>.``; everything else
  (VFE layers, image branch, middle encoder, backbone, neck, head) keeps its name. What the stock
  model has no counterpart for (the GeminiFusion layers, the earlier fusion slots) keeps its
  initialisation, and :func:`load_mvxnet_weights` names it.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from geminifusion.fusion import REFERENCE_NAMES, reference_names

_MARKER = reference_names("in_proj_weight")[0]
_VFE_LAYER = re.compile(r"^(.*)vfe_layers\.(\d+)\.")
FUSION_SLOTS = "fusion_layer."  # the attribute name shared by DynamicVFE and GeminiDynamicVFE


def _renamed(
    state_dict: Mapping[str, Tensor], items: dict[str, Tensor], rename: Callable[[str], str]
) -> dict[str, Tensor]:
    """``items`` as a state dict that keeps ``state_dict``'s ``_metadata``, its module names
    renamed too: modules read their layout version from it (spconv's kernels are stored
    transposed in MMCV's version 1, for one)."""
    out = OrderedDict(items)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        out._metadata = type(
            metadata
        )(  # type: ignore[attr-defined]
            (rename(f"{name}.")[:-1] if name else name, value) for name, value in metadata.items()
        )
    return out


def _unwrap(state_dict: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """The state dict inside an MMEngine checkpoint (``{"state_dict": ...}``), or itself."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        return state_dict["state_dict"]
    return state_dict


def convert_reference_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the reference's ``Gemini_PointFusion`` parameters wherever they occur.

    Accepts a raw state dict or an MMEngine checkpoint (``{"state_dict": ...}``); raises
    ``KeyError`` naming any part of a fusion layer that is missing, so nothing is half-mapped.
    """
    state_dict = _unwrap(state_dict)
    out = dict(state_dict)
    prefixes = [key[: -len(_MARKER)] for key in state_dict if key.endswith(_MARKER)]
    for prefix in prefixes:
        wanted = {ours: [prefix + n for n in reference_names(ours)] for ours in REFERENCE_NAMES}
        missing = [key for keys in wanted.values() for key in keys if key not in out]
        if missing:
            raise KeyError(f"incomplete GeminiFusion layer at {prefix!r}: missing {missing}")
        for ours, keys in wanted.items():
            tensors = [out.pop(key) for key in keys]
            out[f"{prefix}fusion.{ours}"] = torch.stack(tensors) if len(keys) > 1 else tensors[0]
    return out


def stock_fusion_key(key: str, prefix: str, last: int) -> str | None:
    """The plug-in's name for ``key`` if it is a stock fusion key of the VFE at ``prefix``.

    ``<prefix>fusion_layer.<name>`` becomes ``<prefix>fusion_layer.<last>.<name>``; a key that
    already has a slot index (the plug-in's layout) or lies elsewhere gives ``None``.
    """
    head = prefix + FUSION_SLOTS
    if not key.startswith(head) or key[len(head) :].split(".", 1)[0].isdigit():
        return None
    return f"{head}{last}.{key[len(head) :]}"


def convert_mvxnet_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A stock MVX-Net state dict (``DynamicVFE`` + ``PointFusion``) in the plug-in's layout.

    Each ``DynamicVFE`` is found by its ``vfe_layers.<i>.`` keys; its ``fusion_layer.*`` keys
    move to ``fusion_layer.<last VFE layer>.*``. Accepts a raw state dict or an MMEngine
    checkpoint (``{"state_dict": ...}``); raises ``ValueError`` if a VFE holds both layouts.
    """
    state_dict = _unwrap(state_dict)
    last: dict[str, int] = {}
    for key in state_dict:
        match = _VFE_LAYER.match(key)
        if match:
            last[match[1]] = max(last.get(match[1], -1), int(match[2]))

    def rename(key: str) -> str:
        renamed = [n for p, i in last.items() if (n := stock_fusion_key(key, p, i)) is not None]
        return renamed[0] if renamed else key

    out = _renamed(state_dict, {rename(k): v for k, v in state_dict.items()}, rename)
    clash = sorted(k for k in state_dict if rename(k) != k and rename(k) in state_dict)
    if clash:
        raise ValueError(f"state dict holds both the stock and the plug-in fusion keys: {clash}")
    return out


@dataclass(frozen=True)
class WeightsReport:
    """What :func:`load_mvxnet_weights` did, key by key (model keys, sorted).

    Attributes:
        loaded: model keys that received the checkpoint's tensor.
        initialised: model keys the checkpoint has nothing for; they keep their initialisation
            (for the plug-in: the GeminiFusion layers and the fusion slots before the last).
        unused: checkpoint keys (after conversion) that the model has no place for.
    """

    loaded: tuple[str, ...]
    initialised: tuple[str, ...]
    unused: tuple[str, ...]

    def __str__(self) -> str:
        lines = [
            f"loaded {len(self.loaded)} tensors; {len(self.initialised)} keep their "
            f"initialisation; {len(self.unused)} checkpoint tensors unused"
        ]
        lines += [f"  initialised: {key}" for key in self.initialised]
        lines += [f"  unused: {key}" for key in self.unused]
        return "\n".join(lines)


def load_mvxnet_weights(
    model: nn.Module, checkpoint: Mapping[str, Tensor] | str | os.PathLike
) -> WeightsReport:
    """Load a stock MVX-Net checkpoint into a model built with the plug-in, and say what stayed.

    ``checkpoint`` is a path (read with ``torch.load(..., weights_only=True)``), an MMEngine
    checkpoint dict or a state dict; a ``module.`` prefix (distributed training) is dropped.
    The checkpoint goes through :func:`convert_mvxnet_state_dict`; every tensor whose key exists
    in both is copied, and nothing else, by the model's own ``load_state_dict`` (so layouts that
    modules convert on load, such as MMCV-era spconv kernels, convert as usual). A tensor that
    does not fit (different shapes: the two configs differ) is a ``ValueError`` naming it, and
    the model is left as it was.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = _unwrap(checkpoint)
    if state and all(key.startswith("module.") for key in state):

        def unwrapped(key: str) -> str:
            return key.removeprefix("module.")

        state = _renamed(state, {unwrapped(k): v for k, v in state.items()}, unwrapped)
    state = convert_mvxnet_state_dict(state)
    own = model.state_dict()
    common = sorted(set(own) & set(state))
    backup = {key: value.clone() for key, value in own.items()}
    try:
        model.load_state_dict(_renamed(state, {k: state[k] for k in common}, str), strict=False)
    except RuntimeError as err:
        with torch.no_grad():  # the live tensors of state_dict(): put every one back
            for key, value in model.state_dict().items():
                value.copy_(backup[key])
        raise ValueError(f"the checkpoint does not fit the model: {err}") from err
    return WeightsReport(
        loaded=tuple(common),
        initialised=tuple(sorted(set(own) - set(state))),
        unused=tuple(sorted(set(state) - set(own))),
    )
