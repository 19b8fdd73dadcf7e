"""The demo: on a machine with no data, show that fusing RGB and depth beats either one alone.

It writes the synthetic RGB-D scenes of :mod:`geminifusion.data.synthetic` (each object class is
a colour x distance pair, so colour alone or depth alone leaves classes ambiguous), trains three
small models with the paper's recipe (the fused GeminiFusion model, an RGB-only and a depth-only
SegFormer of the same size) through :func:`geminifusion.engine.train.train`, evaluates them on the
held-out scenes, prints the table and draws ground truth next to the three predictions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from geminifusion.configs import TINY_ARCH, RunConfig, get_preset
from geminifusion.engine.evaluate import build_eval_loader, evaluate
from geminifusion.engine.metrics import format_table, to_json_ready
from geminifusion.engine.visualize import colorize, comparison_figure, image_to_uint8, save_image
from geminifusion.files import OutputError, OutputFolder
from geminifusion.runs import BEST

MARKER = "demo.json"
DEMO_KIND = "demo"  # the manifest kind of a demo folder
# (run folder, preset, label) of the three models, the fused one first.
MODELS: tuple[tuple[str, str, str], ...] = (
    ("fused", "synthetic_mit_b0", "fused (rgb + depth)"),
    ("rgb_only", "synthetic_mit_b0_rgb", "rgb only"),
    ("depth_only", "synthetic_mit_b0_depth", "depth only"),
)
REQUIRED_MARGIN = 10.0


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo; the defaults finish in a few minutes on a 2-core CPU.

    The backbone is MiT-B0 narrowed and with one block per stage: the task needs little capacity,
    and a CPU demo must train three models quickly. Everything else is the paper's recipe.
    """

    num_scenes: int = 240
    size: tuple[int, int] = (120, 160)
    arch_overrides: dict = field(
        default_factory=lambda: {
            "embed_dims": [16, 32, 64, 128],
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 2, 4, 8],
        }
    )
    head_embed_dim: int = 64
    crop_size: tuple[int, int] = (96, 128)
    scale_range: tuple[float, float] = (0.75, 1.25)
    batch_size: int = 8
    iters: int = 240
    stage_lrs: tuple[float, float, float] = (1e-3, 5e-4, 2.5e-4)
    warmup_iters: int = 20
    drop_path_rate: float = 0.0
    figure_samples: int = 3
    seed: int = 0


# A run of seconds for the tests: a tiny model, a handful of scenes.
QUICK = DemoSettings(
    num_scenes=10,
    size=(64, 64),
    arch_overrides=dict(TINY_ARCH),
    head_embed_dim=16,
    crop_size=(64, 64),
    scale_range=(1.0, 1.0),
    batch_size=2,
    iters=6,
    warmup_iters=2,
    figure_samples=2,
)


@dataclass
class DemoResult:
    """What the demo measured and wrote."""

    out_dir: Path
    results: dict[str, dict]  # run folder name -> scores of the model's main output
    margins: dict[str, float]  # fused mIoU minus each single-modality mIoU
    passed: bool
    table: str
    figure: Path
    seconds: float
    class_names: list[str] = field(default_factory=list)


def demo_config(preset: str, settings: DemoSettings, data_root: Path) -> RunConfig:
    """A demo model's run config: the synthetic preset, resized to ``settings``."""
    train_scenes = settings.num_scenes - round(settings.num_scenes * 0.2)
    per_epoch = max(1, train_scenes // settings.batch_size)
    epochs = max(3, math.ceil(settings.iters / per_epoch))
    stages = (epochs - 2 * (epochs // 3), epochs // 3, epochs // 3)
    return get_preset(preset).replace(
        name=f"demo_{preset}",
        data_root=str(data_root),
        arch_overrides=settings.arch_overrides,
        head_embed_dim=settings.head_embed_dim,
        drop_path_rate=settings.drop_path_rate,
        crop_size=list(settings.crop_size),
        scale_range=list(settings.scale_range),
        batch_size=settings.batch_size,
        val_batch_size=8,
        stage_epochs=list(stages),
        stage_lrs=list(settings.stage_lrs),
        warmup_iters=settings.warmup_iters,
        max_iters=max(stages) * per_epoch,
        val_every=epochs,  # once, at the end: the demo reports the final weights
        seed=settings.seed,
        device="cpu",
    )


DEMO_FILES = ("data/", *(m[0] + "/" for m in MODELS), "comparison.png", "table.txt", MARKER)


def _earlier_demo(folder: Path) -> list[str] | None:
    """The files of a demo written before folders carried a manifest (its ``demo.json``)."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or "status" not in marker:
        return None
    return [n for n in DEMO_FILES if (folder / n.rstrip("/")).exists()]


def prepare_out_dir(out_dir: Path, overwrite: bool) -> OutputFolder:
    """A new or empty folder, or one holding an earlier demo, whose files are replaced only with
    ``overwrite`` (nothing the demo did not write is ever touched or deleted)."""
    folder = OutputFolder.open(
        out_dir, DEMO_KIND, adopt=_earlier_demo, hint="choose a new or empty --out"
    )
    earlier = [n for n in DEMO_FILES if folder.owns(n) and (Path(out_dir) / n.rstrip("/")).exists()]
    if earlier and not overwrite:
        raise OutputError(
            f"{out_dir} holds an earlier demo; pass --overwrite to replace it (only the files "
            "the demo wrote are removed) or choose another --out"
        )
    folder.remove(DEMO_FILES)
    folder.claim(*DEMO_FILES)
    return folder


def _load_final(run_dir: Path) -> torch.nn.Module:
    from geminifusion.weights.load import load_model

    return load_model(run_dir / BEST)


def _figure(models, dataset, count: int, names: dict[str, str], scores: dict[str, float]):
    rows = []
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        label = sample["label"]
        panels = [
            ("RGB", image_to_uint8(sample["rgb"], normalized=True)),
            ("depth", image_to_uint8(sample["depth"])),
            ("ground truth", colorize(label)),
        ]
        for key, model in models.items():
            inputs = [sample[m][None] for m in model.modalities]
            with torch.no_grad():
                pred = model(inputs)[-1]
            pred = torch.nn.functional.interpolate(
                pred, size=label.shape, mode="bicubic", align_corners=False
            )
            panels.append((f"{names[key]} {scores[key]:.1f}", colorize(pred[0].argmax(0))))
        rows.append(panels)
    return comparison_figure(rows, title="GeminiFusion demo: held-out synthetic scenes (mIoU)")


def run_demo(
    out_dir: str | Path = "runs/demo",
    settings: DemoSettings | None = None,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    threads: int | None = 1,
    log=print,
) -> DemoResult:
    """Generate the data, train the three models, evaluate them and draw the comparison.

    Args:
        out_dir: the demo's folder (data, one run folder per model, table, picture).
        settings: demo sizes; :data:`QUICK` runs in seconds.
        overwrite: replace an earlier demo in ``out_dir`` (only the files it wrote).
        progress: progress bars (None: only on a terminal).
        threads: torch CPU threads while the demo runs (None: leave as is). One by default: the
            demo's tensors are small, and several threads slow down many times over when other
            processes share the CPU.
        log: where the messages go.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    try:
        return _run_demo(out_dir, settings or DemoSettings(), overwrite, progress, log)
    finally:
        torch.set_num_threads(previous)


def _run_demo(out_dir, settings: DemoSettings, overwrite: bool, progress, log) -> DemoResult:
    from geminifusion.data import build_dataset, generate_synthetic_dataset
    from geminifusion.engine.train import train

    start = time.perf_counter()
    out = Path(out_dir)
    folder = prepare_out_dir(out, overwrite)
    data_root = out / "data"
    log(f"writing {settings.num_scenes} synthetic RGB-D scenes to {data_root}")
    generate_synthetic_dataset(  # an earlier demo's set: only its own files are replaced
        data_root, num=settings.num_scenes, size=settings.size, seed=settings.seed, overwrite=True
    )
    folder.write_json(MARKER, {"status": "running"})

    val_set = build_dataset("synthetic", data_root, "val", train=False)
    class_names = list(val_set.class_names)
    models, results, labels = {}, {}, {}
    for key, preset, label in MODELS:
        config = demo_config(preset, settings, data_root)
        log(f"\n== training {label}: {config.total_epochs} epochs ==")
        run = train(config, out / key, overwrite=True, progress=progress)
        model = _load_final(run.run_dir)
        scores = evaluate(model, build_eval_loader(val_set, 8), len(class_names), progress=False)
        models[key], labels[key] = model, label
        results[key] = list(scores.values())[-1]  # the ensemble of the fused model

    fused = results["fused"]["mIoU"]
    margins = {key: fused - results[key]["mIoU"] for key in results if key != "fused"}
    passed = all(m >= REQUIRED_MARGIN for m in margins.values())
    table = demo_table(results, labels, class_names, margins, passed)
    figure_path = out / "comparison.png"
    scores = {k: r["mIoU"] for k, r in results.items()}
    save_image(figure_path, _figure(models, val_set, settings.figure_samples, labels, scores))
    seconds = time.perf_counter() - start
    folder.write_text("table.txt", table + "\n")
    summary = {
        "status": "done",
        "passed": passed,
        "required_margin": REQUIRED_MARGIN,
        "margins": margins,
        "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "class_names": class_names,
        "settings": dataclasses.asdict(settings),
        "results": results,
    }
    folder.write_json(MARKER, to_json_ready(summary))
    return DemoResult(out, results, margins, passed, table, figure_path, seconds, class_names)


def demo_table(
    results: dict[str, dict],
    labels: dict[str, str],
    class_names: list[str],
    margins: dict[str, float],
    passed: bool,
) -> str:
    """The summary (one row per model), per-class IoU side by side, and the verdict."""
    keys = list(results)
    summary = format_table(
        ("Model", "mIoU", "aAcc", "mAcc"),
        [[labels[k], results[k]["mIoU"], results[k]["aAcc"], results[k]["mAcc"]] for k in keys],
    )
    per_class = format_table(
        ("Class", *(labels[k] for k in keys)),
        [[name, *(results[k]["IoU"][i] for k in keys)] for i, name in enumerate(class_names)],
    )
    gaps = ", ".join(f"{labels[k]} by {m:+.1f}" for k, m in margins.items())
    verdict = "PASS" if passed else "FAIL"
    return (
        f"{summary}\nper-class IoU:\n{per_class}\n"
        f"fused mIoU beats {gaps} points (needed: +{REQUIRED_MARGIN:.0f} each): {verdict}"
    )
