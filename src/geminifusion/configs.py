"""Run configurations: one dataclass, and a named preset per paper run (backbone x dataset).

A run is fully described by a :class:`RunConfig`. Presets hold the paper's recipe (the
reference ``main.py`` defaults and the per-run flags of its README); a YAML or JSON file or
``--set key=value`` changes any field, with the value checked against the field's type. The
resolved config is saved in the run folder, so a run can always be rebuilt from its own folder.

Numbers from the reference runs: NYUDv2 on 3 GPUs and SUN RGB-D on 4 GPUs, 2 images per GPU,
drop-path 0.4 except NYUDv2 MiT-B5 (0.35), NYUDv2 Swin-T and Swin-L/12 (0.2) and the NYUDv2
Swin-L/12 fine-tune from SUN RGB-D (0.15, stages of 100/200/100 epochs); SUN RGB-D MiT-B5 uses
weight decay 0.05. ``batch_size`` here is per process, as in the reference.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from geminifusion.backbones import resolve_config
from geminifusion.files import write_text
from geminifusion.segmentor import MIN_SIDE, Segmentor, architecture_defaults, build_segmentor

AMP_MODES = ("none", "bf16", "fp16")
LOSS_KINDS = ("ce", "ohem")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class RunConfig:
    """Every setting of one training run; defaults are the paper's NYUDv2 MiT-B3 recipe.

    The keys that belong to the architecture (``head_embed_dim``, ``drop_path_rate``,
    ``head_dropout``) default to None, "the architecture's value", so a config that names only
    ``arch`` builds exactly what ``build_segmentor(arch, ...)`` builds; the paper's presets set
    the rates of their runs. The run folder keeps the resolved values (:meth:`resolved`).

    Model:
        arch: backbone variant (``mit_b3``, ``swin_large_window12``, ...).
        arch_overrides: fields of the variant's config to change (``{"depths": [1, 1, 1, 1]}``).
        modalities: input names in model order; one name trains a single-modality SegFormer.
        num_classes: classes; None takes the dataset's.
        head_embed_dim: width of the SegFormer head; None: the architecture's (256, DeLiVER 512).
        head_dropout: Dropout2d before the classifier; None: the architecture's (0.1).
        drop_path_rate: stochastic depth of the last block; None: the architecture's. The
            paper's presets set their runs' rates (0.4 for most).
        train_alpha: give the ensemble weights to the optimiser (the reference never does).
        pretrained: ImageNet backbone weights to start from (issue #6's loader).
        finetune: checkpoint whose weights, all but the classifier, start the run.

    Data:
        dataset: a name of ``geminifusion.data.DATASETS``.
        data_root: the dataset folder; for ``synthetic`` a missing folder is generated.
        train_split, val_split: split names.
        crop_size: training crop (H, W).
        scale_range: random resize range before the crop.
        dataset_options: extra keyword arguments of the dataset class.
        synthetic_num, synthetic_size: scenes written when a synthetic set is generated.
        batch_size: training images per process.
        val_batch_size: validation images per process.
        num_workers: DataLoader workers per process.

    Recipe (PolyWarmupAdamW, a fresh optimiser per stage):
        stage_epochs: epochs of each stage.
        stage_lrs: base learning rate of each stage.
        decoder_lr_mult: learning-rate factor of the decode head.
        weight_decay, betas, eps: AdamW settings (encoder norms get no decay).
        warmup_iters, warmup_ratio: linear warm-up from ``warmup_ratio`` of the rate.
        max_iters, poly_power: poly decay, counted from the start of each stage.
        freeze_bn: keep BatchNorm statistics fixed while training.
        ignore_index: label value left out of the loss.
        loss: ``ce`` (NLL of the log-softmax, the main recipe) or ``ohem`` (online hard example
            mining, the DeLiVER recipe); either is summed over every output.
        modality_dropout: probability that a training sample loses one non-RGB input (set to
            zeros), to make the model robust to a missing sensor; 0 is the reference.

    Run:
        val_every: validate every this many epochs (and after the last one).
        checkpoint_every: also write the resumable checkpoint every this many iterations
            (0: only at the end of each epoch).
        log_every: write a training record to the metrics log every this many iterations.
        seed: seed of the model initialisation, the data order and the augmentations.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: ``none``, ``bf16`` or ``fp16`` autocast (CUDA only).
        tensorboard: also write TensorBoard events to ``RUN/tb/`` (the ``tensorboard`` extra).
        compile: train through ``torch.compile`` (validation stays eager).
        activation_checkpointing: recompute every transformer block in backward instead of
            keeping its activations (less memory, more time, the same weights).

    Evaluation (read by ``geminifusion eval`` and validation):
        eval_scales: test scales; ``[1.0]`` is the paper's single-scale evaluation.
        eval_flip: add horizontally flipped views.
        eval_window, eval_stride: sliding-window tile and step (None: whole image).
    """

    name: str = "nyudv2_mit_b3"
    arch: str = "mit_b3"
    arch_overrides: dict = field(default_factory=dict)
    modalities: tuple[str, ...] = ("rgb", "depth")
    num_classes: int | None = None
    head_embed_dim: int | None = None
    head_dropout: float | None = None
    drop_path_rate: float | None = None
    train_alpha: bool = False
    pretrained: str | None = None
    finetune: str | None = None

    dataset: str = "nyudv2"
    data_root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    crop_size: tuple[int, int] = (480, 640)
    scale_range: tuple[float, float] = (0.5, 2.0)
    dataset_options: dict = field(default_factory=dict)
    synthetic_num: int = 200
    synthetic_size: tuple[int, int] = (120, 160)
    batch_size: int = 2
    val_batch_size: int = 1
    num_workers: int = 4

    stage_epochs: tuple[int, ...] = (100, 100, 100)
    stage_lrs: tuple[float, ...] = (6e-5, 3e-5, 1.5e-5)
    decoder_lr_mult: float = 10.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    max_iters: int = 40000
    poly_power: float = 1.0
    freeze_bn: bool = True
    ignore_index: int = 255
    loss: str = "ce"
    modality_dropout: float = 0.0

    val_every: int = 5
    checkpoint_every: int = 0
    log_every: int = 1
    seed: int = 42
    device: str = "auto"
    amp: str = "none"
    tensorboard: bool = False
    compile: bool = False
    activation_checkpointing: bool = False

    eval_scales: tuple[float, ...] = (1.0,)
    eval_flip: bool = False
    eval_window: tuple[int, int] | None = None
    eval_stride: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.check()

    @property
    def total_epochs(self) -> int:
        return sum(self.stage_epochs)

    def check(self) -> None:
        """Raise ``ValueError`` naming the key of the first value that cannot work."""
        positive = ("batch_size", "val_batch_size", "val_every", "log_every", "max_iters")
        positive += ("synthetic_num",)
        if self.head_embed_dim is not None and self.head_embed_dim < 1:
            raise ValueError(
                f"config key 'head_embed_dim' must be positive, got {self.head_embed_dim}"
            )
        for key in positive:
            if getattr(self, key) < 1:
                raise ValueError(f"config key '{key}' must be positive, got {getattr(self, key)}")
        for key in ("num_workers", "checkpoint_every", "warmup_iters"):
            if getattr(self, key) < 0:
                raise ValueError(f"config key '{key}' must be >= 0, got {getattr(self, key)}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"config key 'num_classes' must be positive, got {self.num_classes}")
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"config key 'modalities' needs distinct names, got {self.modalities}")
        if not self.stage_epochs or len(self.stage_epochs) != len(self.stage_lrs):
            raise ValueError(
                f"config keys 'stage_epochs' {list(self.stage_epochs)} and 'stage_lrs' "
                f"{list(self.stage_lrs)} need one value per stage"
            )
        if any(e < 0 for e in self.stage_epochs) or self.total_epochs < 1:
            raise ValueError("config key 'stage_epochs' must be >= 0 with a positive sum")
        if any(lr <= 0 for lr in self.stage_lrs):
            raise ValueError(f"config key 'stage_lrs' must be positive, got {list(self.stage_lrs)}")
        for key in ("drop_path_rate", "head_dropout"):
            value = getattr(self, key)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"config key '{key}' must lie in [0, 1), got {value}")
        if not 0 < self.warmup_ratio <= 1:
            raise ValueError(
                f"config key 'warmup_ratio' must lie in (0, 1], got {self.warmup_ratio}"
            )
        if min(self.crop_size) < 1 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(
                "config keys 'crop_size' and 'scale_range' must be positive, low <= high"
            )
        if self.loss not in LOSS_KINDS:
            raise ValueError(f"config key 'loss' must be one of {LOSS_KINDS}, got {self.loss!r}")
        if not 0 <= self.modality_dropout <= 1:
            raise ValueError("config key 'modality_dropout' must lie in [0, 1]")
        if self.amp not in AMP_MODES:
            raise ValueError(f"config key 'amp' must be one of {AMP_MODES}, got {self.amp!r}")
        if self.device not in DEVICES:
            raise ValueError(f"config key 'device' must be one of {DEVICES}, got {self.device!r}")
        if not self.eval_scales or min(self.eval_scales) <= 0:
            raise ValueError(f"config key 'eval_scales' must be positive, got {self.eval_scales}")
        check_values(self)

    def to_dict(self) -> dict:
        """Plain YAML/JSON-ready values (tuples become lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes) -> RunConfig:
        """A copy with ``changes`` applied and checked like ``--set`` values."""
        return from_dict({**self.to_dict(), **changes})

    def architecture(self) -> str | object:
        """The variant name, or its config with ``arch_overrides`` applied."""
        if not self.arch_overrides:
            return self.arch
        _, base = resolve_config(self.arch)
        overrides = self.arch_overrides.items()
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides}
        try:
            return dataclasses.replace(base, **changes)
        except (TypeError, ValueError) as err:
            names = ", ".join(f.name for f in dataclasses.fields(base))
            raise ValueError(
                f"config key 'arch_overrides': {err}; {type(base).__name__} fields: {names}"
            ) from None

    def resolved(self) -> RunConfig:
        """A copy whose architecture keys left at None hold the architecture's values."""
        defaults = architecture_defaults(self.architecture())
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **changes) if changes else self


# Keys whose value is a float or a sequence of floats: each must be a finite number.
_FLOAT_KEYS = (
    "head_dropout", "drop_path_rate", "scale_range", "stage_lrs", "decoder_lr_mult",
    "weight_decay", "betas", "eps", "warmup_ratio", "poly_power", "modality_dropout",
    "eval_scales",
)  # fmt: skip
# Build arguments a run sets itself: not allowed in ``dataset_options``.
_DATASET_ARGS_SET_BY_THE_RUN = ("root", "split", "modalities", "seed", "transform", "train")


def check_values(config: RunConfig) -> None:
    """The checks of :meth:`RunConfig.check` beyond simple ranges, each naming its key: finite
    numbers, optimiser settings, sizes the model can take, the run name, the dataset and the
    ignore value its labels use, the dataset options, and the architecture."""
    for key in _FLOAT_KEYS:
        value = getattr(config, key)
        values = value if isinstance(value, tuple) else (value,)
        if any(v is not None and not math.isfinite(v) for v in values):
            raise ValueError(f"config key '{key}' must be a finite number, got {value}")
    for key, low in (("weight_decay", 0.0), ("poly_power", 0.0)):
        if getattr(config, key) < low:
            raise ValueError(f"config key '{key}' must be >= {low:g}, got {getattr(config, key)}")
    for key in ("decoder_lr_mult", "eps"):
        if getattr(config, key) <= 0:
            raise ValueError(f"config key '{key}' must be positive, got {getattr(config, key)}")
    if not all(0 <= b < 1 for b in config.betas):
        raise ValueError(f"config key 'betas' must lie in [0, 1), got {list(config.betas)}")
    if config.seed < 0:
        raise ValueError(f"config key 'seed' must be >= 0, got {config.seed}")
    for key in ("crop_size", "eval_window", "synthetic_size"):
        size = getattr(config, key)
        if size is not None and min(size) < MIN_SIDE:
            raise ValueError(
                f"config key '{key}' must be at least {MIN_SIDE} x {MIN_SIDE} (the smallest "
                f"input the model takes), got {list(size)}"
            )
    if config.eval_stride is not None and min(config.eval_stride) < 1:
        raise ValueError(f"config key 'eval_stride' must be positive, got {config.eval_stride}")
    name = config.name
    if not name.strip() or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(
            f"config key 'name' must be a plain name (it names the run folder runs/<name>), "
            f"got {name!r}"
        )
    for key in ("train_split", "val_split"):
        if not getattr(config, key).strip():
            raise ValueError(f"config key '{key}' must name a split, got an empty string")
    _check_dataset(config)
    config.architecture()  # an unknown name or field is an error naming 'arch' / 'arch_overrides'


def _check_dataset(config: RunConfig) -> None:
    import inspect

    from geminifusion.data.datasets import DATASETS

    if config.dataset not in DATASETS:
        close = difflib.get_close_matches(config.dataset, DATASETS, n=1)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(DATASETS)}"
        raise ValueError(f"config key 'dataset': unknown dataset {config.dataset!r}; {hint}")
    cls = DATASETS[config.dataset]
    if config.ignore_index != cls.ignore_index:
        raise ValueError(
            f"config key 'ignore_index' is {config.ignore_index} but the {config.dataset} "
            f"dataset marks ignored pixels with {cls.ignore_index} (its labels are decoded to "
            f"classes 0..K-1 and {cls.ignore_index}): leave ignore_index at {cls.ignore_index}"
        )
    taken = sorted(set(config.dataset_options) & set(_DATASET_ARGS_SET_BY_THE_RUN))
    if taken:
        raise ValueError(
            f"config key 'dataset_options' cannot set {taken}: the run sets them itself"
        )
    params: set[str] = set()
    for klass in cls.__mro__:  # a constructor passing **kwargs on takes its parent's options too
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(vars(klass)["__init__"]).parameters
        params |= {n for n, p in signature.items() if p.kind != p.VAR_KEYWORD}
        if not any(p.kind == p.VAR_KEYWORD for p in signature.values()):
            break
    unknown = sorted(set(config.dataset_options) - params - {"eval_short_side"})
    if unknown:
        known = sorted(params - {"self", "kwargs", *_DATASET_ARGS_SET_BY_THE_RUN})
        raise ValueError(
            f"config key 'dataset_options': the {config.dataset} dataset has no option "
            f"{', '.join(unknown)}; its options: {', '.join(known)}"
        )


def build_model(config: RunConfig, num_classes: int) -> Segmentor:
    """The segmentor a run config describes (random weights)."""
    return build_segmentor(
        config.architecture(),
        num_classes,
        modalities=config.modalities,
        head_embed_dim=config.head_embed_dim,
        drop_path_rate=config.drop_path_rate,
        head_dropout=config.head_dropout,
        activation_checkpointing=config.activation_checkpointing,
    )


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


_HINTS: dict[str, object] | None = None


def field_types() -> dict[str, object]:
    """Config key -> its annotated type."""
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(RunConfig)
    return _HINTS


def _type_name(tp) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def coerce(key: str, value, tp=None):
    """``value`` converted to the type of config key ``key``; ``ValueError`` when it cannot be.

    Ints are accepted for floats, one-element and plain sequences for tuples; nothing is guessed
    from strings except by YAML itself (``--set`` values are parsed as YAML first).
    """
    tp = field_types()[key] if tp is None else tp
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ValueError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ValueError:
                pass
        raise bad
    if origin is tuple:
        if isinstance(value, str) and args == (str, Ellipsis):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(key, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ValueError(f"config key '{key}' expects {len(args)} values, got {value!r}")
        return tuple(coerce(key, v, a) for v, a in zip(value, args, strict=True))
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        return {str(k): _plain(v) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise bad


def unknown_key_error(key: str) -> ValueError:
    names = list(field_types())
    close = difflib.get_close_matches(key, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(names)}"
    return ValueError(f"unknown config key '{key}'{hint}")


def from_dict(values: Mapping) -> RunConfig:
    """A config from a mapping of keys, every key and value checked."""
    kwargs = {}
    for key, value in values.items():
        if key not in field_types():
            raise unknown_key_error(str(key))
        kwargs[key] = coerce(key, value)
    return RunConfig(**kwargs)


# ---------------------------------------------------------------------------------------------
# Presets

PRESETS: dict[str, Callable[[], RunConfig]] = {}


def register_preset(name: str, factory: Callable[[], RunConfig]) -> None:
    """Add a named preset (a function returning a fresh config)."""
    PRESETS[name] = factory


def _paper(name: str, arch: str, dataset: str, **changes) -> None:
    base: dict = {"name": name, "arch": arch, "dataset": dataset}
    if dataset == "sunrgbd":
        base.update(crop_size=(480, 480), val_split="test")
    base.update(changes)
    register_preset(name, lambda: RunConfig(**base))


for _b in range(6):
    _paper(f"nyudv2_mit_b{_b}", f"mit_b{_b}", "nyudv2", drop_path_rate=0.35 if _b == 5 else 0.4)
    _paper(
        f"sunrgbd_mit_b{_b}",
        f"mit_b{_b}",
        "sunrgbd",
        drop_path_rate=0.4,
        weight_decay=0.05 if _b == 5 else 0.01,
    )
for _swin, _dpr in (("tiny", 0.2), ("small", 0.4), ("large", 0.4), ("large_window12", 0.2)):
    _paper(f"nyudv2_swin_{_swin}", f"swin_{_swin}", "nyudv2", drop_path_rate=_dpr)
    _paper(f"sunrgbd_swin_{_swin}", f"swin_{_swin}", "sunrgbd", drop_path_rate=0.4)
# The paper's best NYUDv2 number: Swin-L/12 fine-tuned from its SUN RGB-D run (--finetune CKPT).
_paper(
    "nyudv2_swin_large_window12_finetune",
    "swin_large_window12",
    "nyudv2",
    drop_path_rate=0.15,
    stage_epochs=(100, 200, 100),
)


def _synthetic(name: str, modalities: tuple[str, ...], **changes) -> None:
    """Small CPU runs on the generated scenes: the demo and the tests."""
    base: dict = {
        "name": name,
        "arch": "mit_b0",
        "modalities": modalities,
        "dataset": "synthetic",
        "crop_size": (96, 128),
        "scale_range": (0.75, 1.25),
        "synthetic_num": 200,
        "synthetic_size": (120, 160),
        "drop_path_rate": 0.1,
        "batch_size": 8,
        "val_batch_size": 8,
        "num_workers": 0,
        "stage_epochs": (4, 3, 3),
        "stage_lrs": (6e-4, 3e-4, 1.5e-4),
        "warmup_iters": 20,
        "max_iters": 400,
        "val_every": 2,
        "seed": 0,
        "device": "cpu",
    }
    base.update(changes)
    register_preset(name, lambda: RunConfig(**base))


_synthetic("synthetic_mit_b0", ("rgb", "depth"))
_synthetic("synthetic_mit_b0_rgb", ("rgb",))
_synthetic("synthetic_mit_b0_depth", ("depth",))
# A model of a few thousand weights, for tests that must take seconds (also the quick demo's).
TINY_ARCH = {
    "embed_dims": [8, 16, 32, 64],
    "depths": [1, 1, 1, 1],
    "num_heads": [1, 1, 2, 4],
    "fusion_heads": 2,
}
_synthetic(
    "synthetic_tiny",
    ("rgb", "depth"),
    arch_overrides=dict(TINY_ARCH),
    head_embed_dim=16,
    crop_size=(64, 64),
    scale_range=(1.0, 1.0),
    synthetic_num=10,
    synthetic_size=(64, 64),
    batch_size=2,
    val_batch_size=1,
    stage_epochs=(1, 1, 1),
    warmup_iters=2,
    max_iters=20,
    val_every=1,
)


def _deliver(name: str, arch: str, modalities: tuple[str, ...], drop_path_rate: float) -> None:
    """The DeLiVER branch's recipe (its ``configs/deliver_*_8cards_2e-4.yaml``).

    8 processes x 1 image of 1024 x 1024; one stage of 200 epochs at 2e-4 (decoder 10x, ``alpha``
    trained), linear warm-up over 10 epochs from 0.1 of the rate, then poly decay (power 0.9) to
    201 epochs; OHEM summed over the three outputs; BatchNorm statistics not frozen. Iteration
    counts assume those 8 processes: 3983 training images give 497 iterations per epoch.
    """
    per_epoch = 3983 // 8
    base: dict = {
        "name": name,
        "arch": arch,
        "modalities": modalities,
        "dataset": "deliver",
        "drop_path_rate": drop_path_rate,
        "crop_size": (1024, 1024),
        "batch_size": 1,
        "stage_epochs": (200,),
        "stage_lrs": (2e-4,),
        "warmup_iters": 10 * per_epoch,
        "warmup_ratio": 0.1,
        "max_iters": 201 * per_epoch,
        "poly_power": 0.9,
        "freeze_bn": False,
        "train_alpha": True,
        "loss": "ohem",
    }
    register_preset(name, lambda: RunConfig(**base))


for _b in range(6):
    _deliver(f"deliver_mit_b{_b}", f"deliver_mit_b{_b}", ("rgb", "depth", "event", "lidar"), 0.2)
for _extra in ("depth", "event", "lidar"):  # the released two-sensor runs
    _deliver(f"deliver_rgb{_extra[0]}_mit_b2", "deliver_mit_b2", ("rgb", _extra), 0.4)


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> RunConfig:
    """The preset called ``name``; ``ValueError`` with close names when there is none."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `geminifusion train --list`"
        raise ValueError(f"unknown preset {name!r}; {hint}")
    return PRESETS[name]()


def read_config_file(path: str | Path) -> dict:
    """The mapping in a YAML or JSON (``.json``) file."""
    path = Path(path)
    if path.is_dir():
        inside = (
            " (a run folder's config is its config.yaml)"
            if (path / "config.yaml").is_file()
            else ""
        )
        raise ValueError(f"{path} is a folder, not a config file{inside}")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (YAML or JSON config expected)") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: not valid {path.suffix[1:] or 'YAML'} ({err})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, found {type(data).__name__}")
    return data


def load_config(source: str | Path) -> RunConfig:
    """A preset name, or a YAML/JSON file of keys (``preset: NAME`` picks the defaults)."""
    text = str(source)
    if text in PRESETS:
        return get_preset(text)
    path = Path(text)
    if not path.suffix and not path.exists():
        return get_preset(text)  # names the unknown preset in its error
    data = read_config_file(path)
    preset = data.pop("preset", None)
    base = get_preset(str(preset)).to_dict() if preset is not None else RunConfig().to_dict()
    if preset is None and "name" not in data:
        data["name"] = path.stem
    for key in data:
        if key not in field_types():
            raise ValueError(f"{path}: {unknown_key_error(str(key))}")
    return from_dict({**base, **data})


def parse_overrides(items: Sequence[str]) -> list[tuple[str, str | None, object]]:
    """``["key=value", "dict_key.sub=value"]`` -> ``(key, sub-key or None, YAML-parsed value)``."""
    result = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        top, dot, sub = key.partition(".")
        if top not in field_types():
            raise unknown_key_error(top)
        if dot and field_types()[top] is not dict:
            raise ValueError(f"config key '{top}' has no sub-keys ('{key}')")
        result.append((top, sub if dot else None, value))
    return result


def apply_overrides(config: RunConfig, items: Sequence[str]) -> RunConfig:
    """``config`` with ``--set`` items applied in order; ``key.sub=value`` sets one dict entry."""
    values = config.to_dict()
    for key, sub, value in parse_overrides(items):
        if sub is None:
            values[key] = value
        else:
            values[key] = {**values[key], sub: value}
    return from_dict(values)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
    path = Path(path)
    data = config.to_dict()
    if path.suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    else:
        text = json.dumps(data, indent=2) + "\n"
    write_text(path, text)
