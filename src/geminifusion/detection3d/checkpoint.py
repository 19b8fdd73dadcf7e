"""Conversion of the GeminiFusion reference's MVX-Net checkpoints to this package's layout.

The reference keeps the fusion as two ``nn.MultiheadAttention`` modules, an MLP judger and two
``nn.Embedding`` noises per point-fusion layer; :class:`~geminifusion.fusion.GeminiFusion` stacks
the two directions on a leading axis. Every other key (lateral convs, transforms, ``alpha``,
VFE layers, the rest of the detector) already has the reference's name and passes unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from geminifusion.fusion import REFERENCE_NAMES, reference_names

_MARKER = reference_names("in_proj_weight")[0]


def convert_reference_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the reference's ``Gemini_PointFusion`` parameters wherever they occur.

    Accepts a raw state dict or an MMEngine checkpoint (``{"state_dict": ...}``); raises
    ``KeyError`` naming any part of a fusion layer that is missing, so nothing is half-mapped.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
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
