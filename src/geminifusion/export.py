"""ONNX export of a segmentor, checked against PyTorch in ONNX Runtime.

The graph takes one float32 ``B x 3 x H x W`` input per modality, named after the modality
(``rgb``, ``depth``, ...), and returns one logit map per output, named ``<output>_logits``
(``rgb_logits``, ``depth_logits``, ``ensemble_logits``): ONNX needs input and output names to
differ. It is traced for one input size. Everything the model caches for a size or for its
weights becomes a constant of the graph: the GeminiFusion layers' folded weights, and, in Swin,
the window layouts (gather and scatter indices, shift masks) of each stage. With
``dynamic_batch`` only the batch dimension is left free; the size stays fixed.

``onnx``, ``onnxruntime`` and ``onnxscript`` (torch's exporter is written with it) are the
``export`` extra: ``pip install "geminifusion[export]"``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geminifusion.extras import require
from geminifusion.files import write_bytes, write_file_bytes
from geminifusion.fusion import FoldedWeights, GeminiFusion

# Largest |ONNX Runtime - PyTorch| accepted by the check (float32 logits).
TOLERANCE = 1e-4
PURPOSE = "ONNX export"


class ExportError(RuntimeError):
    """The exporter failed or the exported graph does not compute what the model computes."""


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote, and how far ONNX Runtime is from PyTorch on it.

    Attributes:
        path: the ONNX file.
        input_names, output_names: the graph's names, in order.
        size: ``(H, W)`` the graph takes.
        batch: the batch it was traced with; ``None`` in ``input_shape`` when it is dynamic.
        opset: the default-domain opset of the file.
        dynamic_batch: whether the batch dimension is free.
        differences: per checked batch size, the largest |ONNX Runtime - PyTorch| of each output
            (empty when not checked).
    """

    path: Path
    input_names: list[str]
    output_names: list[str]
    size: tuple[int, int]
    batch: int
    opset: int
    dynamic_batch: bool
    num_bytes: int
    differences: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def max_difference(self) -> float | None:
        """The largest difference over every checked output and batch, or None if unchecked."""
        values = [v for d in self.differences.values() for v in d.values()]
        return max(values) if values else None

    def describe(self) -> str:
        batch = "dynamic batch" if self.dynamic_batch else f"batch {self.batch}"
        h, w = self.size
        lines = [
            f"wrote {self.path} ({self.num_bytes / 2**20:.1f} MiB, opset {self.opset}, {batch}, "
            f"{h} x {w})",
            f"  inputs:  {', '.join(self.input_names)} (B x 3 x {h} x {w}, float32)",
            f"  outputs: {', '.join(self.output_names)}",
        ]
        for b, diffs in self.differences.items():
            worst = max(diffs.values())
            lines.append(
                f"  ONNX Runtime vs PyTorch, batch {b}: largest difference {worst:.2e} "
                f"({', '.join(f'{k} {v:.1e}' for k, v in diffs.items())})"
            )
        return "\n".join(lines)


class PositionalInputs(nn.Module):
    """A segmentor taking one positional tensor per modality and returning a tuple: the
    calling convention of a graph with named inputs and outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(list(inputs)))


def onnx_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """The graph's input names (the modalities) and output names (``<output>_logits``)."""
    return list(model.modalities), [f"{name}_logits" for name in model.output_names]


@contextlib.contextmanager
def fusion_constants(model: nn.Module) -> Iterator[None]:
    """While tracing, every GeminiFusion layer hands out its folded weights as fixed tensors.

    Traced parameters have no storage, so the layer cannot look up its cache and would fold in
    the graph (which the exporter's optimiser does not fold back); here the fold is done once,
    eagerly, and the graph receives the result as constants.
    """
    layers = [m for m in model.modules() if isinstance(m, GeminiFusion)]
    with torch.no_grad():
        folded = [
            FoldedWeights(*(t if t is None else t.detach().clone() for t in m.folded_weights()))
            for m in layers
        ]
    for layer, weights in zip(layers, folded, strict=True):
        layer.folded_weights = lambda weights=weights: weights  # shadows the method
    try:
        yield
    finally:
        for layer in layers:
            del layer.folded_weights


def random_inputs(
    model: nn.Module, batch: int, size: Sequence[int], seed: int = 0
) -> list[torch.Tensor]:
    """One ``batch x 3 x H x W`` float32 tensor per modality, on the model's device."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, *size, generator=generator).to(device) for _ in model.modalities]


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    size: Sequence[int] = (480, 640),
    *,
    batch: int = 1,
    dynamic_batch: bool = False,
    opset: int | None = None,
    check: bool = True,
    tolerance: float = TOLERANCE,
    optimize: bool = True,
    command: str | None = None,
) -> ExportResult:
    """Export ``model`` (a float32 segmentor) to an ONNX file for inputs of ``size``.

    Args:
        model: a segmentor (``gf.build_segmentor``, ``gf.load_model``); it is exported in eval
            mode and left in the mode it was in.
        path: the ``.onnx`` file, written atomically (complete or not at all).
        size: ``(H, W)`` of the inputs the graph takes.
        batch: the batch size of the graph (with ``dynamic_batch``: the first one checked).
        dynamic_batch: leave the batch dimension free (MiT and DeLiVER backbones; a Swin
            graph is traced for one batch size, since its window layouts depend on it).
        opset: the ONNX opset (default: the exporter's).
        check: validate the file with ``onnx.checker``, run it in ONNX Runtime (CPU) on random
            inputs and compare with PyTorch; with ``dynamic_batch`` also at ``batch + 1``.
        tolerance: the largest accepted difference.
        optimize: let the exporter simplify the graph (constant folding, fused patterns); off,
            the graph computes the same but has about three times as many nodes.
        command: record the file in its folder's output manifest as written by this command
            (what the command line does, so that its ``--overwrite`` may replace it later).

    Raises:
        MissingExtraError: ``onnx``, ``onnxruntime`` or ``onnxscript`` is not installed.
        ValueError: a model or setting that cannot be exported (the message says why).
        ExportError: the exporter failed, or ONNX Runtime differs from PyTorch by more than
            ``tolerance``.
    """
    require_export(check)
    import onnx

    size = _check_size(size)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    weight = next(model.parameters())
    if weight.dtype != torch.float32:
        raise ValueError(f"export takes a float32 model; this one is {weight.dtype}")
    if dynamic_batch and getattr(model.backbone, "family", "") == "swin":
        raise ValueError(
            "a Swin graph cannot have a dynamic batch: its window layouts are traced for one "
            "batch size; export one file per batch size (--batch N)"
        )
    input_names, output_names = onnx_names(model)
    # A free dimension must not be traced at size 1, which the tracer would take as a constant.
    traced_batch = max(batch, 2) if dynamic_batch else batch
    was_training = model.training
    model.eval()
    try:
        example = random_inputs(model, traced_batch, size)
        with torch.no_grad():
            model(example)  # builds the caches (Swin window layouts) the graph takes as constants
            proto = _export(
                model, example, (input_names, output_names), dynamic_batch, opset, optimize
            )
        _add_metadata(onnx, proto, model, size)
        data = proto.SerializeToString()
        result = ExportResult(
            path=Path(path),
            input_names=input_names,
            output_names=output_names,
            size=size,
            batch=batch,
            opset=next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
            dynamic_batch=dynamic_batch,
            num_bytes=len(data),
        )
        if check:
            onnx.checker.check_model(proto)
            batches = [batch, batch + 1] if dynamic_batch else [batch]
            result.differences = compare_with_pytorch(model, data, size, batches)
    finally:
        model.train(was_training)
    worst = result.max_difference
    if worst is not None and worst > tolerance:
        raise ExportError(
            f"ONNX Runtime differs from PyTorch by {worst:.2e} (more than {tolerance:g}); "
            f"the file was not written: {result.differences}"
        )
    if command is None:
        write_bytes(path, data)
    else:
        write_file_bytes(path, data, command)
    return result


def require_export(check: bool = True) -> None:
    """Raise :class:`MissingExtraError` unless the packages of an export (and its check) import."""
    for name in ("onnx", "onnxscript") + (("onnxruntime",) if check else ()):
        require(name, PURPOSE)


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"size must be (H, W) with positive ints, got {size!r}")
    return size


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's progress lines and notes (missing torchvision ops, skipped folds) off."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export(
    model: nn.Module,
    example: list[torch.Tensor],
    names: tuple[list[str], list[str]],
    dynamic_batch: bool,
    opset: int | None,
    optimize: bool,
):
    """The ONNX ``ModelProto`` of ``model`` traced on ``example``."""
    wrapper = PositionalInputs(model).eval()
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1)
        dynamic_shapes = (tuple({0: batch} for _ in example),)  # the one *inputs argument
    try:
        with _quiet_exporter(), fusion_constants(model):
            program = torch.export.export(
                wrapper, tuple(example), dynamic_shapes=dynamic_shapes, strict=False
            )
            onnx_program = torch.onnx.export(
                program,
                tuple(example),
                input_names=names[0],
                output_names=names[1],
                opset_version=opset,
                dynamo=True,
                optimize=optimize,
                verbose=False,
            )
    except Exception as err:  # the exporters raise many kinds; the first line says what
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"the ONNX exporter failed: {first}") from err
    return onnx_program.model_proto


def _add_metadata(onnx, proto, model: nn.Module, size: tuple[int, int]) -> None:
    from geminifusion._version import __version__

    props = {
        "producer": f"geminifusion {__version__}",
        "modalities": json.dumps(list(model.modalities)),
        "outputs": json.dumps(list(model.output_names)),
        "input_size": json.dumps(list(size)),
        "num_classes": str(model.num_classes),
        "input_note": "rgb: ImageNet mean/std normalised; other modalities: divided by 255",
    }
    if model.class_names:
        props["class_names"] = json.dumps(list(model.class_names))
    onnx.helper.set_model_props(proto, props)


def onnx_session(
    model: bytes | str | os.PathLike,
    providers: Sequence[str] = (),
    threads: int | None = None,
    spinning: bool = True,
):
    """An ONNX Runtime session of an ONNX file or its bytes.

    Args:
        model: the file or its bytes.
        providers: execution providers (default: the CPU).
        threads: intra-op threads (default: ONNX Runtime's choice).
        spinning: let idle worker threads spin-wait for the next run (ONNX Runtime's default);
            off when other work shares the cores, which spinning threads would slow.
    """
    ort = require("onnxruntime", "running an ONNX file")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(
        source, options, providers=list(providers) or ["CPUExecutionProvider"]
    )


def compare_with_pytorch(
    model: nn.Module, onnx_model: bytes | str | os.PathLike, size: Sequence[int], batches
) -> dict[int, dict[str, float]]:
    """Largest |ONNX Runtime - PyTorch| of each output, on random inputs of each batch size."""
    session = onnx_session(onnx_model)
    input_names, output_names = onnx_names(model)
    differences = {}
    for b in batches:
        inputs = random_inputs(model, b, size, seed=b)
        with torch.no_grad():
            expected = model(inputs)
        feed = {n: x.cpu().numpy() for n, x in zip(input_names, inputs, strict=True)}
        got = session.run(output_names, feed)
        differences[b] = {
            name: float(np.abs(g - e.cpu().numpy()).max())
            for name, g, e in zip(output_names, got, expected, strict=True)
        }
    return differences
