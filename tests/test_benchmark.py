"""``geminifusion benchmark``: counts checked by hand, the timing loop, the table and the JSON."""

from __future__ import annotations

import json

import pytest
import torch

import geminifusion as gf
from geminifusion.benchmark import (
    CudaEventClock,
    WallClock,
    benchmark,
    clock_for,
    count_flops,
    single_twin,
    time_calls,
)
from geminifusion.cli import main
from geminifusion.fusion import GeminiFusion

TINY = gf.MiTConfig(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 5, 8))


def fusion_flops(channels: int, tokens: int, heads: int = 8) -> int:
    """A GeminiFusion layer by hand, both directions, ``tokens`` positions per stream.

    Multiply-adds per position: the judger's first layer and the value slots from the streams'
    sum and difference (3C x C each), the judger's second layer, the queries, the key difference
    and the output projection (C x C for each of the two directions): 14 C^2. Heads narrower
    than 8 channels add two products with the (C, heads) 0/1 matrix per direction. A multiply-add
    is 2 FLOPs.
    """
    macs = 14 * channels**2 * tokens
    if channels // heads < 8:
        macs += 2 * 2 * tokens * channels * heads
    return 2 * macs


@pytest.mark.parametrize("channels", [32, 64, 160])
def test_fusion_layer_flops_are_the_hand_count(channels):
    layer = GeminiFusion(channels).eval()
    x = torch.randn(2, 3, 50, channels)  # 2 streams x batch 3 x 50 tokens
    assert count_flops(lambda: layer(x)) == fusion_flops(channels, 3 * 50)


def stage_tokens(height: int, width: int) -> list[int]:
    """Tokens of the four MiT stages (7x7 stride 4, then 3x3 stride 2, padded by half)."""
    tokens = []
    for kernel, stride in ((7, 4), (3, 2), (3, 2), (3, 2)):
        height = (height + 2 * (kernel // 2) - kernel) // stride + 1
        width = (width + 2 * (kernel // 2) - kernel) // stride + 1
        tokens.append(height * width)
    return tokens


def test_mit_b0_command_counts_and_json(tmp_path, capsys):
    out = tmp_path / "out.json"
    args = ["benchmark", "mit_b0", "--size", "240x320", "--json", str(out)]
    assert main([*args, "--warmup", "1", "--iters", "2", "--no-onnxruntime", "--no-memory"]) == 0
    printed = capsys.readouterr().out
    assert "| fused " in printed and "fused / single:" in printed
    result = json.loads(out.read_text())
    assert result["size"] == [240, 320] and result["batch"] == 1 and result["device"] == "cpu"
    assert result["torch"] == torch.__version__
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == ["fused", "single"]
    assert rows["fused"]["params"] == 5_863_562 and rows["single"]["params"] == 3_724_424
    assert rows["fused"]["inputs"] == ["rgb", "depth"] and rows["single"]["inputs"] == ["rgb"]

    # Both streams run every shared layer and the head, and the fusion layers come on top; the
    # head folds its embeddings into its fuse layer once per forward, whatever the streams
    # (a (E, E) by (E, C_s) product per stage).
    config = gf.VARIANTS["mit_b0"]
    head_fold = 2 * 256 * 256 * sum(config.embed_dims)
    fusion = sum(
        depth * fusion_flops(dim, tokens)
        for dim, depth, tokens in zip(
            config.embed_dims, config.depths, stage_tokens(240, 320), strict=True
        )
    )
    single = rows["single"]["gflops"] * 1e9
    fused = rows["fused"]["gflops"] * 1e9
    assert fused == pytest.approx(2 * single - head_fold + fusion, rel=1e-9)
    for row in rows.values():
        assert row["latency_p10_ms"] <= row["latency_ms"] <= row["latency_p90_ms"]
        assert row["throughput"] == pytest.approx(1e3 / row["latency_ms"])

    assert main(args) == 2  # the JSON file is there: kept unless --overwrite
    assert "exists; pass --overwrite" in capsys.readouterr().err


class RecordingClock(WallClock):
    def __init__(self, log: list) -> None:
        self.log = log

    def synchronize(self) -> None:
        self.log.append("sync")

    def mark(self) -> object:
        self.log.append("mark")
        return len(self.log)

    def elapsed_ms(self, start, end) -> float:
        return float(end - start)


def test_timing_loop_synchronises_around_every_run_and_interleaves():
    log: list = []
    clock = RecordingClock(log)
    calls = {name: (lambda name=name: log.append(name)) for name in ("a", "b")}
    times, first = time_calls(calls, {"a": clock, "b": clock}, warmup=2, iters=3)
    assert len(times["a"]) == len(times["b"]) == 3 and set(first) == {"a", "b"}
    timed = log[log.index("b", log.index("b") + 2) + 2 :]  # after both warm-ups
    one_run = ["sync", "mark", "a", "mark", "sync", "sync", "mark", "b", "mark", "sync"]
    assert timed == one_run * 3
    assert all(t == 2.0 for t in times["a"])  # the call (and the end mark) between the marks


def test_cuda_runs_get_cuda_events():
    assert isinstance(clock_for(torch.device("cuda", 0)), CudaEventClock)
    assert type(clock_for(torch.device("cpu"))) is WallClock


def test_twins_and_single_input_models():
    deliver = gf.build_segmentor(
        gf.DeliverConfig(**{k: getattr(TINY, k) for k in ("embed_dims", "depths", "num_heads")}),
        num_classes=4,
        modalities=("rgb", "depth", "event"),
    )
    twin = single_twin(deliver)
    assert twin.modalities == ("rgb",) and twin.head.embed_dim == deliver.head.embed_dim
    single = gf.build_segmentor(TINY, num_classes=4, modalities=("depth",))
    result = benchmark(single, size=(64, 64), warmup=1, iters=1, memory=False)
    assert [r["model"] for r in result.rows] == ["single"]
    assert "single" in result.table()


def test_peak_memory_is_measured_in_fresh_processes():
    model = gf.build_segmentor(TINY, num_classes=4)
    rows = benchmark(model, size=(128, 128), warmup=1, iters=1, onnxruntime=False).rows
    fused, single = (r["peak_memory_mib"] for r in rows)
    assert fused > single > 0


@pytest.mark.slow
def test_onnxruntime_row_and_memory_in_children(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    model = gf.build_segmentor(TINY, num_classes=4)
    result = benchmark(model, size=(64, 64), warmup=1, iters=2)
    rows = {r["model"]: r for r in result.rows}
    assert list(rows) == ["fused", "single", "fused-onnxruntime"]
    assert rows["fused-onnxruntime"]["params"] == rows["fused"]["params"]
    assert rows["fused-onnxruntime"]["peak_memory_mib"] > 0
