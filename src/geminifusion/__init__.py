"""geminifusion: multimodal semantic segmentation with GeminiFusion (Jia et al., ICML 2024)."""

from geminifusion.backbones import VARIANTS
from geminifusion.backbones.mit import MiTConfig
from geminifusion.checkpoints import load_reference_checkpoint, to_reference_state_dict
from geminifusion.fusion import GeminiFusion
from geminifusion.segmentor import Segmentor, build_segmentor

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "GeminiFusion",
    "MiTConfig",
    "Segmentor",
    "build_segmentor",
    "load_reference_checkpoint",
    "to_reference_state_dict",
]
