"""Backbone + shared head + learned ensemble: the GeminiFusion segmentor."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from geminifusion.backbones import Backbone, build_backbone, resolve_config
from geminifusion.head import HEAD_DROPOUT, SegFormerHead

Inputs = Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | torch.Tensor

# Smallest side that every stage's strided convolution and spatial reduction can take.
MIN_SIDE = 32


class Segmentor(nn.Module):
    """Runs all modalities through one backbone and one head, then ensembles the logits.

    ``forward`` returns one logit map per stream (``B x K x ceil(H/4) x ceil(W/4)``), followed by
    the ensemble ``sum_m softmax(alpha)_m * logits_m.detach()`` when there are several streams.
    As in the reference, ``alpha`` is a parameter that the training recipe leaves out of the
    optimiser unless asked; only checkpoints change it.

    Args:
        backbone: maps ``(M, B, 3, H, W)`` to four ``(S, B, C, h, w)`` feature maps (``S``
            streams) and exposes ``out_channels``.
        head: decode head applied to every stream as one batch.
        modalities: names of the inputs, in the order ``forward`` takes them.
        spec: the arguments that rebuild this model (kept for saving).
    """

    def __init__(
        self,
        backbone: Backbone,
        head: SegFormerHead,
        modalities: Sequence[str],
        spec: dict | None = None,
    ) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.num_streams = backbone.num_streams
        self.spec = spec or {}
        if self.num_streams > 1:
            self.alpha = nn.Parameter(torch.ones(self.num_streams))
        self.backbone = backbone
        self.head = head
        # Class names, when known (a dataset's, a model folder's); saved with the model.
        self.class_names: list[str] | None = None
        # Where the weights came from, set by geminifusion.load_model (a ModelSource).
        self.source = None

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def output_names(self) -> list[str]:
        names = list(self.backbone.stream_names or self.modalities)
        return names + ["ensemble"] if self.num_streams > 1 else names

    def stack_inputs(self, inputs: Inputs) -> torch.Tensor:
        """Check the inputs and stack them to ``(M, B, 3, H, W)``; errors name the modality."""
        names = self.modalities
        if isinstance(inputs, Mapping):
            missing = [n for n in names if n not in inputs]
            if missing:
                raise ValueError(f"missing modalities {missing}; the model takes {list(names)}")
            inputs = [inputs[n] for n in names]
        elif isinstance(inputs, torch.Tensor):
            if inputs.dim() != 5:
                raise ValueError(
                    f"a stacked input must be (M, B, 3, H, W), got {tuple(inputs.shape)}"
                )
            inputs = list(inputs.unbind(0))
        if len(inputs) != len(names):
            raise ValueError(
                f"the model takes {len(names)} inputs ({', '.join(names)}), got {len(inputs)}"
            )
        first = inputs[0]
        for name, x in zip(names, inputs, strict=True):
            if not isinstance(x, torch.Tensor) or x.dim() != 4:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"input {name!r} must be a B x 3 x H x W tensor, got {shape}")
            if x.shape[1] != 3:
                raise ValueError(f"input {name!r} must have 3 channels, got {x.shape[1]}")
            if x.shape != first.shape:
                raise ValueError(
                    f"input {name!r} has shape {tuple(x.shape)} but {names[0]!r} has "
                    f"{tuple(first.shape)}: modalities must be aligned and the same size"
                )
            if x.dtype != first.dtype or x.device != first.device:
                raise ValueError(f"input {name!r} is {x.dtype} on {x.device}, unlike {names[0]!r}")
        weight = self.head.linear_pred.weight
        if first.device != weight.device:
            raise ValueError(
                f"input {names[0]!r} is on {first.device} but the model is on {weight.device}"
            )
        if first.dtype != weight.dtype:
            raise ValueError(
                f"input {names[0]!r} is {first.dtype} but the model's weights are {weight.dtype}: "
                f"convert the inputs (x.to({weight.dtype})) or the model (model.to(...))"
            )
        if first.shape[0] == 0:
            raise ValueError(f"input {names[0]!r} is an empty batch (0 samples)")
        if min(first.shape[-2:]) < MIN_SIDE:
            raise ValueError(
                f"inputs must be at least {MIN_SIDE} x {MIN_SIDE} pixels, got "
                f"{first.shape[-2]} x {first.shape[-1]}"
            )
        return torch.stack(list(inputs))

    def forward_features(self, inputs: Inputs) -> list[torch.Tensor]:
        """The four backbone feature maps, each ``(S, B, C, h, w)``."""
        return self.backbone(self.stack_inputs(inputs))

    def forward(self, inputs: Inputs) -> list[torch.Tensor]:
        stacked = self.stack_inputs(inputs)
        features = self.backbone(stacked)
        s, b = features[0].shape[:2]
        logits = self.head([f.flatten(0, 1) for f in features])
        if self.backbone.upsample_logits:
            size = stacked.shape[-2:]
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        logits = logits.view(s, b, *logits.shape[1:])
        outputs = list(logits.unbind(0))
        if s > 1:
            weights = F.softmax(self.alpha, dim=0).to(logits.dtype).view(s, 1, 1, 1, 1)
            outputs.append((weights * logits.detach()).sum(0))
        return outputs


def architecture_defaults(arch: str | object) -> dict:
    """What ``build_segmentor(arch, ...)`` uses when the head width, drop-path rate or head
    dropout is not given: the config's values and SegFormer's head dropout.

    Run configs leave these keys at None to mean exactly this, so a config with only ``arch``
    builds the same model as ``build_segmentor``.
    """
    _, config = resolve_config(arch)
    return {
        "head_embed_dim": config.head_embed_dim,
        "drop_path_rate": config.drop_path_rate,
        "head_dropout": HEAD_DROPOUT,
    }


def build_segmentor(
    arch: str | object,
    num_classes: int,
    modalities: Sequence[str] = ("rgb", "depth"),
    head_embed_dim: int | None = None,
    drop_path_rate: float | None = None,
    head_dropout: float | None = None,
    activation_checkpointing: bool = False,
) -> Segmentor:
    """Build a segmentor from a variant name (``"mit_b3"``) or a config (``MiTConfig(...)``).

    Args:
        arch: variant name or backbone config.
        num_classes: output classes.
        modalities: input names in call order; one name gives a plain single-modality SegFormer.
        head_embed_dim: width of the SegFormer head; default the config's (256, DeLiVER 512).
        drop_path_rate: overrides the config's stochastic-depth rate.
        head_dropout: ``Dropout2d`` rate before the classifier; default 0.1, as in SegFormer.
        activation_checkpointing: while training, recompute every transformer block in backward
            instead of keeping its activations: less memory for more time, same gradients. Can
            be changed later with ``model.backbone.activation_checkpointing``.

    Raises:
        ValueError: an unknown architecture or an argument of the wrong type or range, named.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if isinstance(modalities, str) or not all(isinstance(m, str) and m for m in modalities):
        raise ValueError(f"modalities must be a sequence of names, got {modalities!r}")
    modalities = tuple(modalities)
    if len(set(modalities)) != len(modalities) or not modalities:
        raise ValueError(f"modalities must be distinct names, got {modalities}")
    name, config = resolve_config(arch)
    check_backbone_config(config)
    defaults = architecture_defaults(config)
    head_embed_dim = defaults["head_embed_dim"] if head_embed_dim is None else head_embed_dim
    drop_path_rate = defaults["drop_path_rate"] if drop_path_rate is None else drop_path_rate
    head_dropout = defaults["head_dropout"] if head_dropout is None else head_dropout
    _check_number("head_embed_dim", head_embed_dim, int, low=1)
    _check_number("drop_path_rate", drop_path_rate, float, low=0.0, below=1.0)
    _check_number("head_dropout", head_dropout, float, low=0.0, below=1.0)
    if not isinstance(activation_checkpointing, bool):
        raise ValueError(
            f"activation_checkpointing must be True or False, got {activation_checkpointing!r}"
        )
    if drop_path_rate != config.drop_path_rate:
        config = dataclasses.replace(config, drop_path_rate=drop_path_rate)
    try:
        backbone = build_backbone(config, len(modalities))
        head = SegFormerHead(backbone.out_channels, num_classes, head_embed_dim, head_dropout)
    except (RuntimeError, MemoryError, OverflowError) as err:  # sizes too large to allocate
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot build {name or type(config).__name__}: {first}") from None
    spec = {
        "arch": name or {"type": type(config).__name__, **dataclasses.asdict(config)},
        "drop_path_rate": config.drop_path_rate,
        "num_classes": num_classes,
        "modalities": list(modalities),
        "head_embed_dim": head_embed_dim,
        "head_dropout": head_dropout,
    }
    backbone.activation_checkpointing = activation_checkpointing
    return Segmentor(backbone, head, modalities, spec)


def check_backbone_config(config: object) -> None:
    """Every field of a backbone config has a value of its kind, or a ``ValueError`` names it.

    Whole numbers (and lists of them) must be positive integers, flags booleans, rates finite
    numbers; a ``drop_path_rate`` lies in [0, 1), a ``mlp_ratio`` is positive.
    """
    if not dataclasses.is_dataclass(config):
        return
    kind = type(config).__name__
    for f in dataclasses.fields(config):
        value, default = getattr(config, f.name), f.default
        where = f"{kind}.{f.name}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{where} must be true or false, got {value!r}")
        elif isinstance(default, int):
            _check_number(where, value, int, low=1)
        elif isinstance(default, float) and f.name == "drop_path_rate":
            _check_number(where, value, float, low=0.0, below=1.0)
        elif isinstance(default, float):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{where} must be a positive number, got {value!r}")
        elif isinstance(default, tuple) and all(isinstance(v, int) for v in default):
            ints = isinstance(value, (tuple, list)) and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
            )
            if not ints:
                raise ValueError(f"{where} must be positive integers, got {value!r}")


def _check_number(name: str, value, kind: type, low: float, below: float | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and isinstance(value, int)
    ok = ok and math.isfinite(value)
    if not ok or value < low or (below is not None and value >= below):
        bound = f"in [{low}, {below})" if below is not None else f">= {low}"
        article = "an" if kind is int else "a"
        raise ValueError(f"{name} must be {article} {kind.__name__} {bound}, got {value!r}")
