"""Parameters, FLOPs, latency, throughput and peak memory of a model and its single-modality twin.

Measured the way papers report them (DFormer's latency harness): batch 1, a fixed input size,
warm-up runs, then timed runs one by one; on CUDA each run is timed with CUDA events and followed
by ``torch.cuda.synchronize()``, on the CPU with ``time.perf_counter``. The compared models run
side by side, one call each per round, so a busy machine slows all of them alike.

- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one eager forward (a multiply-add is
  2 FLOPs; matrix products, convolutions and attention are counted, element-wise work is not),
  reported per image.
- Peak memory: each model alone in a fresh child process, over one forward after a warm-up. On
  CUDA, ``torch.cuda.max_memory_allocated`` (weights and activations); on the CPU, the peak
  resident memory minus what the process held before the model was built (weights,
  activations and what the allocator keeps).
- ONNX Runtime (when installed): the fused model exported to ONNX and run by ONNX Runtime with
  as many threads as torch (wall clock around ``session.run``, inputs in host memory).

The timing code is the same on both devices: only the clock differs (:class:`WallClock`,
:class:`CudaEventClock`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geminifusion.export import random_inputs
from geminifusion.segmentor import Segmentor

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Warm-up and timed runs: DFormer's numbers on CUDA; fewer on the CPU, where a run takes seconds.
DEFAULT_RUNS = {"cuda": (100, 300), "cpu": (3, 10)}
MIB = 2**20


# ------------------------------------------------------------------------------ clocks


class WallClock:
    """Host time: ``time.perf_counter`` (the work of a CPU forward is done when it returns)."""

    def synchronize(self) -> None:
        pass

    def mark(self) -> object:
        return time.perf_counter()

    def elapsed_ms(self, start: object, end: object) -> float:
        return (end - start) * 1e3


class CudaEventClock(WallClock):
    """Device time: CUDA events recorded on the current stream around the call."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def mark(self) -> object:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def elapsed_ms(self, start: object, end: object) -> float:
        return start.elapsed_time(end)


def clock_for(device: torch.device) -> WallClock:
    """The clock that times work on ``device``."""
    return CudaEventClock(device) if device.type == "cuda" else WallClock()


def time_calls(
    calls: dict[str, Callable[[], object]],
    clocks: dict[str, WallClock],
    warmup: int,
    iters: int,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Milliseconds of each call, run in turn ``iters`` times after ``warmup`` runs each.

    Every timed run starts after a synchronisation and is read after another, so that no queued
    work of one call is counted in another.

    Returns:
        The times of each call, and the seconds its first call took (with ``torch.compile``,
        the compilation).
    """
    first = {}
    for name, fn in calls.items():
        clock = clocks[name]
        clock.synchronize()
        start = time.perf_counter()
        fn()
        clock.synchronize()
        first[name] = time.perf_counter() - start
        for _ in range(warmup - 1):
            fn()
        clock.synchronize()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(iters):
        for name, fn in calls.items():
            clock = clocks[name]
            clock.synchronize()
            start = clock.mark()
            fn()
            end = clock.mark()
            clock.synchronize()
            times[name].append(clock.elapsed_ms(start, end))
    return times, first


def latency_summary(times_ms: Sequence[float], batch: int) -> dict[str, float]:
    """Median, 10th and 90th percentile and mean latency (ms), and images per second."""
    median = statistics.median(times_ms)
    p10, p90 = np.percentile(times_ms, [10, 90])
    return {
        "latency_ms": median,
        "latency_p10_ms": float(p10),
        "latency_p90_ms": float(p90),
        "latency_mean_ms": statistics.fmean(times_ms),
        "throughput": batch * 1e3 / median,
    }


# ------------------------------------------------------------------------------ counts


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products, convolutions and attention of ``fn()`` (multiply-add = 2).

    Counted on a second call, so that one-time work (the fusion layers fold their weights on
    the first call and keep them) is left out.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        fn()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def single_twin(model: Segmentor) -> Segmentor:
    """The same architecture and head taking only the model's first input (random weights)."""
    from geminifusion.backbones.deliver import DeliverConfig
    from geminifusion.backbones.mit import MiTConfig
    from geminifusion.segmentor import build_segmentor

    config = model.backbone.config
    if isinstance(config, DeliverConfig):  # its blocks need two streams: the plain MiT
        config = MiTConfig(**dataclasses.asdict(config))
    twin = build_segmentor(
        config,
        model.num_classes,
        modalities=model.modalities[:1],
        head_embed_dim=model.head.embed_dim,
    )
    weight = next(model.parameters())
    return twin.to(device=weight.device, dtype=weight.dtype).eval()


# ------------------------------------------------------------------------------ the run


@dataclass
class BenchmarkResult:
    """Rows (one per measured model) and how they were measured; ``to_dict`` for JSON."""

    rows: list[dict]
    device: str
    size: tuple[int, int]
    batch: int
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "device": self.device,
            "torch": torch.__version__,
            "size": list(self.size),
            "batch": self.batch,
            **self.settings,
            "notes": self.notes,
        }

    def table(self) -> str:
        """The rows as a Markdown table, with a header line and the fused / single ratios."""
        s = self.settings
        h, w = self.size
        threads = f"{s['threads']} thread{'s' if s['threads'] != 1 else ''}"
        head = (
            f"{s['name']}: batch {self.batch}, {h} x {w}, {self.device} ({threads}), "
            f"{s['precision']}{', compiled' if s['compile'] else ''}; torch {torch.__version__}; "
            f"{s['warmup']} warm-up + {s['iters']} timed runs; {s['date']}"
        )
        header = ["model", "inputs", "params", "GFLOPs", "latency ms", "p10-p90 ms", "images/s"]
        header.append("peak MiB")
        lines = [head, ""]
        cells = []
        for r in self.rows:
            memory = r.get("peak_memory_mib")
            cells.append(
                [
                    r["model"],
                    ", ".join(r["inputs"]),
                    f"{r['params']:,}",
                    f"{r['gflops']:.2f}",
                    f"{r['latency_ms']:.1f}",
                    f"{r['latency_p10_ms']:.1f}-{r['latency_p90_ms']:.1f}",
                    f"{r['throughput']:.1f}",
                    "-" if memory is None else f"{memory:.0f}",
                ]
            )
        lines += markdown_table(header, cells)
        by_name = {r["model"]: r for r in self.rows}
        if "fused" in by_name and "single" in by_name:
            f, o = by_name["fused"], by_name["single"]
            lines.append(
                f"fused / single: params {f['params'] / o['params']:.2f}, GFLOPs "
                f"{f['gflops'] / o['gflops']:.2f}, latency {f['latency_ms'] / o['latency_ms']:.2f}"
            )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a Markdown table with padded columns."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [
        line(r) for r in rows
    ]


def benchmark(
    model: Segmentor,
    *,
    size: Sequence[int] = (480, 640),
    batch: int = 1,
    amp: str | None = None,
    compile: bool = False,
    warmup: int | None = None,
    iters: int | None = None,
    onnxruntime: bool = True,
    memory: bool = True,
    name: str | None = None,
) -> BenchmarkResult:
    """Measure ``model`` (on its device) and its single-modality twin side by side.

    Args:
        model: a segmentor in float32; with one input it is measured alone.
        size: ``(H, W)`` of the random inputs.
        batch: images per forward.
        amp: ``"bf16"`` or ``"fp16"`` autocast, or None for float32.
        compile: run the PyTorch models through ``torch.compile`` (FLOPs are counted eagerly).
        warmup, iters: untimed and timed runs (default 100 and 300 on CUDA, 3 and 10 on CPU).
        onnxruntime: also time the fused model in ONNX Runtime, when installed.
        memory: measure peak memory (in child processes).
        name: what to call the model in the table (default: its architecture).

    Returns:
        A :class:`BenchmarkResult`; rows are named ``fused``, ``single`` and
        ``fused-onnxruntime``.
    """
    from geminifusion.extras import available

    size = tuple(size)
    device = next(model.parameters()).device
    default_warmup, default_iters = DEFAULT_RUNS["cuda" if device.type == "cuda" else "cpu"]
    warmup = default_warmup if warmup is None else warmup
    iters = default_iters if iters is None else iters
    if warmup < 1 or iters < 1:
        raise ValueError(f"warmup and iters must be at least 1, got {warmup} and {iters}")
    if amp not in (None, *AMP_DTYPES):
        raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)} or None, got {amp!r}")
    model = model.eval()
    models = {"fused": model, "single": single_twin(model)} if len(model.modalities) > 1 else {}
    if not models:
        models = {"single": model}
    inputs = {key: random_inputs(m, batch, size) for key, m in models.items()}
    notes: list[str] = []

    def forward(key: str, net: nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad(), autocast(device, amp):
                return net(inputs[key])

        return run

    calls = {key: forward(key, m) for key, m in models.items()}
    flops = {key: count_flops(fn) for key, fn in calls.items()}
    if compile:
        calls = {key: forward(key, torch.compile(m)) for key, m in models.items()}
    clocks = {key: clock_for(device) for key in calls}
    onnx_path = None
    if onnxruntime and "fused" in models:
        missing = [p for p in ("onnx", "onnxscript", "onnxruntime") if not available(p)]
        if missing:
            notes.append(f"no ONNX Runtime row: {', '.join(missing)} not installed")
        else:
            onnx_path, session_call, provider = _onnxruntime_call(model, inputs["fused"], size)
            calls["fused-onnxruntime"] = session_call
            clocks["fused-onnxruntime"] = WallClock()
            notes.append(f"fused-onnxruntime: float32 graph on {provider}")
    try:
        times, first = time_calls(calls, clocks, warmup, iters)
        rows = []
        for key in calls:
            source = models[key.split("-")[0]]
            row = {
                "model": key,
                "inputs": list(source.modalities),
                "params": count_parameters(source),
                "gflops": flops[key.split("-")[0]] / batch / 1e9,
                **latency_summary(times[key], batch),
                "first_call_s": first[key],
                "runtime": "onnxruntime" if key.endswith("onnxruntime") else "pytorch",
                "peak_memory_mib": None,
            }
            if memory:
                spec = _child_spec(key, source, size, batch, amp, compile, device, onnx_path)
                if spec is not None:
                    row["peak_memory_mib"] = peak_memory_in_child(spec)
            rows.append(row)
    finally:
        if onnx_path is not None:
            Path(onnx_path).unlink(missing_ok=True)
    settings = {
        "name": name or _name(model),
        "precision": amp or "float32",
        "compile": compile,
        "warmup": warmup,
        "iters": iters,
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
        "machine": machine_name(),
    }
    if device.type == "cuda":
        settings["gpu"] = torch.cuda.get_device_name(device)
    return BenchmarkResult(rows, str(device), size, batch, settings, notes)


def autocast(device: torch.device, amp: str | None):
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def machine_name() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), else the platform's words."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _name(model: Segmentor) -> str:
    arch = model.spec.get("arch")
    return arch if isinstance(arch, str) else type(model.backbone.config).__name__


def _onnxruntime_call(model: Segmentor, inputs: list[torch.Tensor], size: tuple[int, int]):
    from geminifusion.export import export_onnx, onnx_names, onnx_session

    folder = tempfile.mkdtemp(prefix="geminifusion-benchmark-")
    path = Path(folder) / "fused.onnx"
    export_onnx(model, path, size=size, batch=inputs[0].shape[0], check=False)
    providers = ["CPUExecutionProvider"]
    if inputs[0].device.type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # Spinning workers would slow the PyTorch runs timed between ONNX Runtime's.
    session = onnx_session(path, providers, threads=torch.get_num_threads(), spinning=False)
    names = onnx_names(model)[0]
    feed = {n: x.cpu().numpy() for n, x in zip(names, inputs, strict=True)}
    return str(path), lambda: session.run(None, feed), session.get_providers()[0]


# ------------------------------------------------------------------------------ memory


def _child_spec(key, model, size, batch, amp, compile, device, onnx_path) -> dict | None:
    spec = {"size": list(size), "batch": batch, "threads": torch.get_num_threads()}
    spec["device"] = str(device)
    if key.endswith("onnxruntime"):
        if device.type == "cuda":
            return None  # ONNX Runtime's device memory is not torch's to count
        return {**spec, "onnx": onnx_path, "modalities": list(model.modalities)}
    return {**spec, "model": model.spec, "amp": amp, "compile": compile}


class MemoryProbe:
    """Peak memory of what happens between :meth:`reset` and :meth:`peak_mib`, in a process
    that did little before it was made (its baseline is subtracted)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline = self._current()

    def _current(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return resident_bytes()

    def reset(self) -> None:
        """Start a new peak from what is held now (weights stay counted)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_resident_peak()

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = resident_peak_bytes()
        return (peak - self.baseline) / MIB


def resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc``; elsewhere its peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return resident_peak_bytes()
    return pages * os.sysconf("SC_PAGE_SIZE")


def resident_peak_bytes() -> int:
    """This process's peak resident memory since start or :func:`reset_resident_peak`."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_resident_peak() -> bool:
    """Lower the recorded peak to the current resident memory (Linux); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_memory_in_child(spec: dict) -> float:
    """Peak memory (MiB) of one forward that ``spec`` describes, in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-m", "geminifusion.benchmark", json.dumps(spec)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"the memory measurement failed:\n{out.stderr.strip()}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_memory_mib"])


def _measure_in_this_process(spec: dict) -> float:
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    probe = MemoryProbe(device)
    size, batch = tuple(spec["size"]), spec["batch"]
    generator = torch.Generator().manual_seed(0)
    if "onnx" in spec:
        from geminifusion.export import onnx_session

        session = onnx_session(spec["onnx"], threads=spec["threads"])
        names = spec["modalities"]
        feed = {n: torch.randn(batch, 3, *size, generator=generator).numpy() for n in names}

        def run() -> object:
            return session.run(None, feed)
    else:
        from geminifusion.weights.folder import build_from_config

        model = build_from_config({"format": "geminifusion", **spec["model"]}, "benchmark")
        model = model.to(device).eval()
        net = torch.compile(model) if spec["compile"] else model
        inputs = [
            torch.randn(batch, 3, *size, generator=generator).to(device) for _ in model.modalities
        ]

        def run() -> object:
            with torch.no_grad(), autocast(device, spec["amp"]):
                return net(inputs)

    run()  # warm-up: caches, kernels, compilation
    probe.reset()
    run()
    return probe.peak_mib()


if __name__ == "__main__":
    print(json.dumps({"peak_memory_mib": _measure_in_this_process(json.loads(sys.argv[1]))}))
