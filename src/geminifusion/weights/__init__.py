"""The one home for reading and writing weights.

- :mod:`~geminifusion.weights.io`: reading any checkpoint safely; writing one atomically.
- :mod:`~geminifusion.weights.strict`: the strict state-dict check and its named report.
- :mod:`~geminifusion.weights.reference`: the paper's checkpoint formats.
- :mod:`~geminifusion.weights.formats` and :mod:`~geminifusion.weights.pretrained`:
  single-modality ImageNet and Hugging Face weights into a fused model.
- :mod:`~geminifusion.weights.folder`: model folders (``config.json`` + ``model.safetensors``).
- :mod:`~geminifusion.weights.training`: our ``last.pt`` / ``best.pt``.
- :mod:`~geminifusion.weights.convert`: paper checkpoint <-> model folder.
- :mod:`~geminifusion.weights.load`: :func:`load_model`, for any of the above.
"""

from geminifusion.weights.convert import folder_to_reference, reference_to_folder
from geminifusion.weights.folder import from_pretrained, parse_arch, save_pretrained
from geminifusion.weights.io import read_checkpoint, read_safetensors, save_checkpoint
from geminifusion.weights.load import ModelSource, load_model, load_weights
from geminifusion.weights.pretrained import LoadReport, load_pretrained_backbone
from geminifusion.weights.reference import (
    from_reference_state_dict,
    load_reference_checkpoint,
    reference_key_map,
    to_reference_state_dict,
    unwrap_state_dict,
)
from geminifusion.weights.strict import load_strict

__all__ = [
    "LoadReport",
    "ModelSource",
    "folder_to_reference",
    "from_pretrained",
    "from_reference_state_dict",
    "load_model",
    "load_pretrained_backbone",
    "load_reference_checkpoint",
    "load_strict",
    "load_weights",
    "parse_arch",
    "read_checkpoint",
    "read_safetensors",
    "reference_key_map",
    "reference_to_folder",
    "save_checkpoint",
    "save_pretrained",
    "to_reference_state_dict",
    "unwrap_state_dict",
]
