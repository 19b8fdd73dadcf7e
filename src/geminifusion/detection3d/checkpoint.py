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

_ATTENTIONS = ("cross_attn_0_to_1", "cross_attn_1_to_0")  # direction 0: the image queries
_STACKED = {
    "in_proj_weight": "in_proj_weight",
    "in_proj_bias": "in_proj_bias",
    "out_proj.weight": "out_proj_weight",
    "out_proj.bias": "out_proj_bias",
}
_RENAMED = {
    "relation_judger.0.fc1.weight": "fusion.judger_fc1.weight",
    "relation_judger.0.fc1.bias": "fusion.judger_fc1.bias",
    "relation_judger.0.fc2.weight": "fusion.judger_fc2.weight",
    "relation_judger.0.fc2.bias": "fusion.judger_fc2.bias",
    "k_noise.weight": "fusion.k_noise",
    "v_noise.weight": "fusion.v_noise",
}
_MARKER = f"{_ATTENTIONS[0]}.in_proj_weight"


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
        wanted = [f"{prefix}{a}.{name}" for a in _ATTENTIONS for name in _STACKED]
        wanted += [prefix + name for name in _RENAMED]
        missing = [key for key in wanted if key not in out]
        if missing:
            raise KeyError(f"incomplete GeminiFusion layer at {prefix!r}: missing {missing}")
        for name, ours in _STACKED.items():
            pair = [out.pop(f"{prefix}{a}.{name}") for a in _ATTENTIONS]
            out[f"{prefix}fusion.{ours}"] = torch.stack(pair)
        for name, ours in _RENAMED.items():
            out[prefix + ours] = out.pop(prefix + name)
    return out
