"""Single-modality pretrained weights: reading the files and renaming each format by rule.

Training starts from single-modality weights: the original SegFormer (``mit_b*.pth``) and Swin
(``{"model": ...}``) ImageNet files, their mmsegmentation checkpoints, and ``transformers``
checkpoints (a folder with ``config.json`` and ``model.safetensors`` / ``pytorch_model.bin``, or
one weights file). Each format is renamed to our single-modality names (``backbone.*``,
``head.*``) by a table here; :mod:`geminifusion.weights.pretrained` then fits the result into a
fused model and reports what it did. Nothing here touches the network.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from geminifusion.weights.io import read_checkpoint, read_json, read_safetensors
from geminifusion.weights.reference import unwrap_state_dict

FORMAT_NAMES = {
    "segformer-imagenet": "SegFormer ImageNet file (original MiT format)",
    "segformer-mmseg": "SegFormer mmsegmentation checkpoint",
    "segformer-hf": "Hugging Face transformers SegFormer checkpoint",
    "swin-imagenet": "Swin ImageNet file (original format)",
    "swin-mmseg": "Swin mmsegmentation backbone checkpoint",
    "swin-hf": "Hugging Face transformers Swin checkpoint",
}

# Weight files of a transformers folder, in the order transformers itself prefers them.
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def read_pretrained(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The tensors of a weights file or transformers folder, and its ``config.json`` if any.

    Safetensors files are read directly; everything else through ``torch.load`` with
    ``weights_only=True``. Sharded transformers folders (``*.index.json``) are joined.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    config = None
    if path.is_dir():
        folder = path
        weights = next((path / n for n in HF_WEIGHT_FILES if (path / n).is_file()), None)
        if weights is None:
            raise FileNotFoundError(
                f"{path}: no weights in this folder (expected one of {', '.join(HF_WEIGHT_FILES)})"
            )
    else:
        folder, weights = path.parent, path
    if (folder / "config.json").is_file():
        config = read_json(folder / "config.json")
        if config.get("format") == "geminifusion":
            raise ValueError(
                f"{path} is a geminifusion model folder, not backbone weights: "
                "load it with geminifusion.load_model or geminifusion.from_pretrained"
            )
        if "model_type" not in config:
            config = None  # not a transformers config: judge the weights by their keys
    return _read_weights(weights), config


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.name.endswith(".index.json"):
        index = read_json(path).get("weight_map")
        if not isinstance(index, dict):
            raise ValueError(f"{path}: a shard index needs a 'weight_map' object")
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index.values())):
            tensors.update(_read_weights(path.parent / shard))
        return tensors
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return unwrap_state_dict(read_checkpoint(path), str(path))


def detect_format(keys: Iterable[str], config: dict | None = None) -> str:
    """Which of :data:`FORMAT_NAMES` a state dict is, from its ``config.json`` or its keys."""
    keys = list(keys)
    if config is not None and config.get("model_type") in ("segformer", "swin"):
        return f"{config['model_type']}-hf"
    if any("cross_attn_" in k or ".ln_0." in k or k == "alpha" for k in keys):
        raise ValueError(
            "this is a GeminiFusion checkpoint of the paper's code, not single-modality backbone "
            "weights: load it with geminifusion.load_reference_checkpoint, or turn it into a "
            "model folder with `geminifusion convert`"
        )

    def has(*prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in keys)

    if has("segformer.", "encoder.patch_embeddings.", "encoder.block.", "stages.0.patch_emb"):
        return "segformer-hf"
    if has("swin.", "embeddings.patch_embeddings.", "encoder.layers."):
        return "swin-hf"
    if has("patch_embed1."):
        return "segformer-imagenet"
    if has("backbone.patch_embed1."):
        return "segformer-mmseg"
    if has("backbone.patch_embed.") and has("backbone.layers."):
        return "swin-mmseg"
    if has("patch_embed.") and has("layers.0.blocks."):
        return "swin-imagenet"
    raise ValueError(
        "not a known pretrained format (SegFormer / Swin ImageNet, mmsegmentation or "
        f"transformers); first keys: {', '.join(keys[:6])}"
    )


@dataclass
class Converted:
    """A file in our single-modality names: ``backbone.*`` and ``head.*`` keys."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)
    # Pieces of one of our tensors kept in several file tensors (q/k/v): key -> {index: tensor}.
    parts: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def put(self, ours: str, tensor: torch.Tensor, source: str) -> None:
        """Record ``tensor`` as ``ours``; ``attn.kv#1.weight`` is piece 1 of ``attn.kv.weight``."""
        split = re.fullmatch(r"(.+)#(\d+)(\..+)", ours)
        if split:
            name = split[1] + split[3]
            self.parts.setdefault(name, {})[int(split[2])] = tensor
            self.sources.setdefault(name, source)
        else:
            self.tensors[ours] = tensor
            self.sources[ours] = source

    def finish(self, sizes: dict[str, int]) -> None:
        """Concatenate split tensors (``kv`` from k and v, ``qkv`` from q, k and v)."""
        for name, pieces in self.parts.items():
            count = sizes[name.split(".")[-2]]
            if sorted(pieces) != list(range(count)):
                raise ValueError(
                    f"{self.sources[name]}: only parts {sorted(pieces)} of {count} found for {name}"
                )
            self.tensors[name] = torch.cat([pieces[i] for i in range(count)])
        self.parts.clear()


_UNUSED_CLASSIFIER = "image classifier (not part of a segmentation model)"
_UNUSED_DERIVED = "derived from the window size, rebuilt by the model"
_UNUSED_FINAL_NORM = (
    "final norm of the classification model; the four output norms start fresh, as in the reference"
)

# transformers' SegFormer names inside a block (4.x file names and 5.x module names) -> ours.
_HF_SEGFORMER_BLOCK = {
    "layer_norm_1": "norm1",
    "layernorm_before": "norm1",
    "layer_norm_2": "norm2",
    "layernorm_after": "norm2",
    "attention.self.query": "attn.q",
    "attention.q_proj": "attn.q",
    "attention.self.key": "attn.kv#0",
    "attention.k_proj": "attn.kv#0",
    "attention.self.value": "attn.kv#1",
    "attention.v_proj": "attn.kv#1",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "attention.self.sr": "attn.sr",
    "attention.sequence_reduction.sequence_reduction": "attn.sr",
    "attention.self.layer_norm": "attn.norm",
    "attention.sequence_reduction.layer_norm": "attn.norm",
    "mlp.dense1": "mlp.fc1",
    "mlp.fc1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.dwconv",
    "mlp.dense2": "mlp.fc2",
    "mlp.fc2": "mlp.fc2",
}
_HF_SEGFORMER_HEAD = {
    "linear_fuse.weight": "linear_fuse.conv.weight",
    "batch_norm": "linear_fuse.bn",
    "classifier": "linear_pred",
}
# transformers' Swin names inside a block -> ours.
_HF_SWIN_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.self.query": "attn.qkv#0",
    "attention.q_proj": "attn.qkv#0",
    "attention.self.key": "attn.qkv#1",
    "attention.k_proj": "attn.qkv#1",
    "attention.self.value": "attn.qkv#2",
    "attention.v_proj": "attn.qkv#2",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "mlp.fc1": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc2": "mlp.fc2",
}
_SPLIT_SIZES = {"kv": 2, "qkv": 3}


def _convert_segformer_hf(state: dict[str, torch.Tensor]) -> Converted:
    out = Converted()
    block = re.compile(r"(?:encoder\.block|stages)\.(\d+)\.(?:blocks\.)?(\d+)\.(.+)\.(weight|bias)")
    embed = re.compile(r"(?:encoder\.patch_embeddings\.(\d+)|stages\.(\d+)\.patch_embeddings)\.")
    stage_norm = re.compile(r"(?:encoder\.layer_norm\.(\d+)|stages\.(\d+)\.layer_norm)\.(\w+)")
    for key, tensor in state.items():
        name = key.removeprefix("segformer.")
        if m := block.fullmatch(name):
            inner = _HF_SEGFORMER_BLOCK.get(m[3])
            if inner is not None:
                out.put(f"backbone.block{int(m[1]) + 1}.{m[2]}.{inner}.{m[4]}", tensor, key)
                continue
        elif m := embed.match(name):
            stage = int(m[1] or m[2]) + 1
            rest = name[m.end() :].replace("layer_norm.", "norm.")
            out.put(f"backbone.patch_embed{stage}.{rest}", tensor, key)
            continue
        elif m := stage_norm.fullmatch(name):
            out.put(f"backbone.norm{int(m[1] or m[2]) + 1}.{m[3]}", tensor, key)
            continue
        elif m := re.fullmatch(r"decode_head\.linear_(?:c|projections)\.(\d+)\.proj\.(\w+)", name):
            out.put(f"head.linear_c{int(m[1]) + 1}.proj.{m[2]}", tensor, key)
            continue
        elif name.startswith("decode_head."):
            inner = name.removeprefix("decode_head.")
            for theirs, ours in _HF_SEGFORMER_HEAD.items():
                if inner == theirs or inner.startswith(theirs + "."):
                    out.put(f"head.{ours}{inner[len(theirs) :]}", tensor, key)
                    break
            else:
                out.unused[key] = "unknown decode-head tensor"
            continue
        elif name.startswith("classifier."):
            out.unused[key] = _UNUSED_CLASSIFIER
            continue
        out.unused[key] = "not part of a SegFormer encoder"
    return out


def _convert_segformer_original(state: dict[str, torch.Tensor], mmseg: bool) -> Converted:
    out = Converted()
    for key, tensor in state.items():
        name = key
        if mmseg:
            if key.startswith("decode_head."):
                inner = key.removeprefix("decode_head.")
                if re.match(r"(linear_c\d\.proj|linear_fuse\.(conv|bn)|linear_pred)\.", inner):
                    out.put(f"head.{inner}", tensor, key)
                else:
                    out.unused[key] = "mmsegmentation decode-head tensor unused by SegFormer"
                continue
            if not key.startswith("backbone."):
                out.unused[key] = "not part of the backbone or the SegFormer head"
                continue
            name = key.removeprefix("backbone.")
        if name.startswith("head."):
            out.unused[key] = _UNUSED_CLASSIFIER
            continue
        out.put("backbone." + name.replace(".mlp.dwconv.dwconv.", ".mlp.dwconv."), tensor, key)
    return out


def _convert_swin_hf(state: dict[str, torch.Tensor]) -> Converted:
    out = Converted()
    block = re.compile(r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.+)\.(\w+)")
    for key, tensor in state.items():
        name = key.removeprefix("swin.")
        if m := block.fullmatch(name):
            prefix = f"backbone.layers.{m[1]}.blocks.{m[2]}"
            inner, leaf = m[3], m[4]
            if leaf == "relative_position_bias_table":
                out.put(f"{prefix}.attn.relative_position_bias_table", tensor, key)
            elif leaf == "relative_position_index":
                out.unused[key] = _UNUSED_DERIVED
            elif inner in _HF_SWIN_BLOCK:
                out.put(f"{prefix}.{_HF_SWIN_BLOCK[inner]}.{leaf}", tensor, key)
            else:
                out.unused[key] = "not part of a Swin block"
        elif m := re.fullmatch(
            r"encoder\.layers\.(\d+)\.downsample\.(reduction|norm)\.(\w+)", name
        ):
            out.put(f"backbone.layers.{m[1]}.downsample.{m[2]}.{m[3]}", tensor, key)
        elif name.startswith("embeddings.patch_embeddings.projection."):
            out.put("backbone.patch_embed.proj." + name.rpartition(".")[2], tensor, key)
        elif name.startswith("embeddings.norm."):
            out.put("backbone.patch_embed.norm." + name.rpartition(".")[2], tensor, key)
        elif name.startswith("embeddings.position_embeddings"):
            out.put("backbone.absolute_pos_embed", tensor, key)  # we have none: an error later
        elif m := re.fullmatch(r"hidden_states_norms\.stage(\d)\.(\w+)", name):
            out.put(f"backbone.norm{int(m[1]) - 1}.{m[2]}", tensor, key)
        elif name.startswith("layernorm."):
            out.unused[key] = _UNUSED_FINAL_NORM
        elif name.startswith("classifier."):
            out.unused[key] = _UNUSED_CLASSIFIER
        elif name == "embeddings.mask_token":
            out.unused[key] = "masked-image-modelling token"
        else:
            out.unused[key] = "not part of a Swin encoder"
    return out


def _convert_swin_original(state: dict[str, torch.Tensor], mmseg: bool) -> Converted:
    out = Converted()
    for key, tensor in state.items():
        name = key
        if mmseg:
            if not key.startswith("backbone."):
                out.unused[key] = "not part of the backbone (a UperNet head is not ours)"
                continue
            name = key.removeprefix("backbone.")
        leaf = name.rpartition(".")[2]
        if leaf in ("relative_position_index", "attn_mask"):
            out.unused[key] = _UNUSED_DERIVED
        elif name.startswith("head."):
            out.unused[key] = _UNUSED_CLASSIFIER
        elif name.startswith("norm."):
            out.unused[key] = _UNUSED_FINAL_NORM
        elif name == "absolute_pos_embed":
            out.put("backbone.absolute_pos_embed", tensor, key)  # we have none: an error later
        else:
            out.put("backbone." + name, tensor, key)
    return out


CONVERTERS: dict[str, Callable[[dict[str, torch.Tensor]], Converted]] = {
    "segformer-imagenet": lambda s: _convert_segformer_original(s, mmseg=False),
    "segformer-mmseg": lambda s: _convert_segformer_original(s, mmseg=True),
    "segformer-hf": _convert_segformer_hf,
    "swin-imagenet": lambda s: _convert_swin_original(s, mmseg=False),
    "swin-mmseg": lambda s: _convert_swin_original(s, mmseg=True),
    "swin-hf": _convert_swin_hf,
}

# Backbone keys that every pretrained file of the family holds; a missing one is an error.
# Other backbone keys (fusion, DeLiVER score nets, Swin output norms) are new layers.
PRETRAINED_KEYS = {
    "mit": re.compile(
        r"backbone\.(patch_embed\d\.(proj|norm)|norm\d|block\d\.\d+\."
        r"(norm1|norm2|attn\.(q|kv|proj|sr|norm)|mlp\.(fc1|dwconv|fc2)))\.(weight|bias)"
    ),
    "swin": re.compile(
        r"backbone\.(patch_embed\.(proj|norm)\.(weight|bias)"
        r"|layers\.\d+\.blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
        r"|layers\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table"
        r"|layers\.\d+\.downsample\.(reduction|norm)\.(weight|bias))"
    ),
}


def convert_pretrained(
    state: dict[str, torch.Tensor], config: dict | None = None
) -> tuple[str, Converted]:
    """Detect the format of ``state`` and rename it to our single-modality keys."""
    fmt = detect_format(state, config)
    converted = CONVERTERS[fmt](state)
    converted.finish(_SPLIT_SIZES)
    return fmt, converted


def _same(a: object, b: object) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b)
    return a == b


def check_hf_config(family: str, hf: dict, config: object) -> tuple[list[str], list[str]]:
    """Compare a transformers ``config.json`` with our backbone config.

    Returns:
        ``(problems, notes)``: architecture contradictions (attention heads among them, which
        shapes cannot show) and harmless differences.
    """
    if family == "mit":
        expect = {
            "num_encoder_blocks": 4,
            "hidden_sizes": list(config.embed_dims),
            "depths": list(config.depths),
            "num_attention_heads": list(config.num_heads),
            "sr_ratios": list(config.sr_ratios),
            "mlp_ratios": [config.mlp_ratio] * 4,
            "patch_sizes": [7, 3, 3, 3],
            "strides": [4, 2, 2, 2],
            "num_channels": 3,
            "hidden_act": "gelu",
        }
    else:
        expect = {
            "embed_dim": config.embed_dim,
            "depths": list(config.depths),
            "num_heads": list(config.num_heads),
            "patch_size": config.patch_size,
            "mlp_ratio": config.mlp_ratio,
            "qkv_bias": config.qkv_bias,
            "use_absolute_embeddings": False,
            "num_channels": 3,
            "hidden_act": "gelu",
        }
    problems = [
        f"config.json has {name}={hf[name]!r}, the model {want!r}"
        for name, want in expect.items()
        if name in hf and not _same(hf[name], want)
    ]
    notes = []
    if family == "mit":
        notes.append(
            "transformers runs every SegFormer LayerNorm with eps 1e-5; this model keeps the "
            "reference's 1e-6 (outputs differ by that much, weights are the same)"
        )
    elif hf.get("window_size", config.window_size) != config.window_size:
        notes.append(f"window size {hf['window_size']} in the file, {config.window_size} here")
    return problems, notes


def resize_position_bias(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """Bicubic resize of a ``((2w-1)^2, heads)`` relative position bias table to ``window_size``."""
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0]:
        raise ValueError(f"a position bias table of {table.shape[0]} rows is not square")
    new = 2 * window_size - 1
    grid = table.T.reshape(1, table.shape[1], side, side).float()
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return grid.reshape(table.shape[1], new * new).T.to(table.dtype).contiguous()
