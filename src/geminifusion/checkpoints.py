"""The paper's checkpoint format (kept for scripts that import it from here).

Everything lives in :mod:`geminifusion.weights`; this module re-exports the reference-format
names under their old path.
"""

from geminifusion.weights.io import read_checkpoint
from geminifusion.weights.reference import (
    from_reference_state_dict,
    load_reference_checkpoint,
    reference_key_map,
    to_reference_state_dict,
    unwrap_state_dict,
)

__all__ = [
    "from_reference_state_dict",
    "load_reference_checkpoint",
    "read_checkpoint",
    "reference_key_map",
    "to_reference_state_dict",
    "unwrap_state_dict",
]
