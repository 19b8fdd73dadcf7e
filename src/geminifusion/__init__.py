"""geminifusion: multimodal semantic segmentation with GeminiFusion (Jia et al., ICML 2024)."""

from geminifusion.backbones import VARIANTS
from geminifusion.backbones.deliver import DeliverConfig
from geminifusion.backbones.mit import MiTConfig
from geminifusion.backbones.swin import SwinConfig
from geminifusion.checkpoints import load_reference_checkpoint, to_reference_state_dict
from geminifusion.fusion import GeminiFusion
from geminifusion.hub import from_pretrained
from geminifusion.pretrained import load_pretrained_backbone
from geminifusion.segmentor import Segmentor, build_segmentor

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "DeliverConfig",
    "GeminiFusion",
    "MiTConfig",
    "Segmentor",
    "SwinConfig",
    "build_segmentor",
    "from_pretrained",
    "load_pretrained_backbone",
    "load_reference_checkpoint",
    "to_reference_state_dict",
]
