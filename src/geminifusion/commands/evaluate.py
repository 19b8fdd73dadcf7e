"""``geminifusion eval``, ``predict`` and ``demo``: scores, pictures and the no-data demo."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

EVAL_EPILOG = """\
examples:
  geminifusion eval nyudv2_mit_b3 --checkpoint best.pt --set data_root=data/nyudv2
  geminifusion eval runs/nyudv2_mit_b3                   (a run folder: its config and best.pt)
  geminifusion eval sunrgbd_mit_b3 --checkpoint paper.pth.tar --set data_root=data/sun \\
      --multi-scale --flip
  torchrun --nproc_per_node 4 -m geminifusion.cli eval runs/nyudv2_mit_b3
"""

PREDICT_EPILOG = """\
examples:
  geminifusion predict runs/demo/fused --rgb scene.png --depth scene_depth.png --out preds
  geminifusion predict best.pt --rgb data/rgb --depth data/depth --out preds       (folders)
  geminifusion predict paper.pth.tar --list data/nyudv2/val.txt --root data/nyudv2 --out preds
"""


def _size(text: str) -> tuple[int, int]:
    """``480x640``, ``480,640`` or ``512`` -> (H, W)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 480x640), got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW with positive sides, got {text!r}")
    return values


def _add_test_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("test-time options")
    g.add_argument(
        "--multi-scale",
        action="store_true",
        help="average over scales 0.5..1.75 (or the config's eval_scales); default single scale",
    )
    g.add_argument("--scales", type=float, nargs="+", metavar="S", help="explicit test scales")
    g.add_argument("--flip", action="store_true", help="add horizontally mirrored views")
    g.add_argument(
        "--sliding-window",
        type=_size,
        nargs="?",
        const="crop",
        default=None,
        metavar="HxW",
        help="infer in overlapping tiles (default tile: the config's eval_window or crop size)",
    )
    g.add_argument("--stride", type=_size, metavar="HxW", help="sliding-window step (default 2/3)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: the config's")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score a checkpoint: aAcc, mAcc, mIoU and per-class IoU for every output",
        description="Evaluate a checkpoint (ours, or the paper's) on a config's validation split. "
        "Every output is scored (each modality's and the ensemble); the per-class table of the "
        "ensemble and a summary are printed in the mmsegmentation layout and saved as JSON. "
        "Under torchrun the data is sharded and the confusion matrices are summed.",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="preset name, YAML/JSON config file, or a run folder")
    p.add_argument("--checkpoint", "-c", help="weights (default for a run folder: its best.pt)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a config key (data_root=..., val_split=test, ...); repeatable",
    )
    p.add_argument("--split", help="split to score (default: the config's val_split)")
    p.add_argument("--out", type=Path, help="folder for the JSON and text results")
    p.add_argument("--batch-size", type=int, help="images per forward (default: val_batch_size)")
    _add_test_options(p)
    from geminifusion.engine.robustness import add_robustness_options

    add_robustness_options(p)
    p.set_defaults(func=run_eval)

    p = subparsers.add_parser(
        "predict",
        help="segment image pairs: class-map PNG, coloured PNG and overlay per image",
        description="Predict with a checkpoint (ours, a model folder, a run folder, or the "
        "paper's checkpoint) on a file pair, two folders matched by file name, or a split list. "
        "Writes <name>_classes.png (class indices), <name>_color.png (the reference palette: "
        "class k in cmap[k + 1]) and <name>_overlay.png (over the RGB image).",
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="checkpoint file, model folder or run folder")
    p.add_argument("--rgb", help="RGB image or folder of images")
    p.add_argument("--depth", help="depth image or folder of images")
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="another modality (event=..., lidar=...); repeatable",
    )
    p.add_argument("--list", type=Path, help="split list (image, label, depth per line)")
    p.add_argument("--root", type=Path, help="folder the split list's paths are relative to")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--depth-format", default="png8", help="png8 (default), png16_mm or hha")
    p.add_argument("--depth-max-m", type=float, default=10.0, help="png16_mm: metres mapped to 1")
    p.add_argument("--arch", help="architecture of a reference checkpoint (default: recognised)")
    p.add_argument("--output", help="which output to draw (default: the last, the ensemble)")
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity (default 0.5)")
    _add_test_options(p)
    p.set_defaults(func=run_predict)

    p = subparsers.add_parser(
        "demo",
        help="no data needed: train fused, RGB-only and depth-only models and compare them",
        description="Generate synthetic RGB-D scenes, train a fused GeminiFusion model and "
        "RGB-only and depth-only models of the same size on the CPU with the paper's recipe, "
        "evaluate them, print the table and write comparison.png (ground truth next to the three "
        "predictions). Exits with 1 when the fused model does not beat both by 10 mIoU points.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="default: runs/demo")
    p.add_argument("--iters", type=int, help="training iterations per model (default 240)")
    p.add_argument("--quick", action="store_true", help="a tiny run of seconds (for tests)")
    p.add_argument("--overwrite", action="store_true", help="use an --out that holds other files")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: small tensors, and robust on a shared CPU)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_demo)


# ------------------------------------------------------------------------------------- helpers


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def _test_options(args: argparse.Namespace, config=None) -> dict:
    """scales / flip / window / stride from the flags, falling back on the config's."""
    from geminifusion.engine.inference import DEFAULT_SCALES

    config_scales = tuple(config.eval_scales) if config is not None else (1.0,)
    if args.scales:
        scales = tuple(args.scales)
    elif args.multi_scale:
        scales = config_scales if config_scales != (1.0,) else DEFAULT_SCALES
    else:
        scales = config_scales
    if min(scales) <= 0:
        raise ValueError(f"--scales must be positive, got {list(scales)}")
    window = args.sliding_window
    if window == "crop":
        if config is None:
            raise ValueError(
                "--sliding-window needs a tile size here, e.g. --sliding-window 480x640"
            )
        window = tuple(config.eval_window or config.crop_size)
    elif window is None and config is not None and config.eval_window:
        window = tuple(config.eval_window)
    stride = args.stride or (tuple(config.eval_stride) if config and config.eval_stride else None)
    flip = args.flip or bool(config is not None and config.eval_flip)
    return {"scales": scales, "flip": flip, "window": window, "stride": stride}


def _describe_options(options: dict) -> str:
    parts = ["single scale" if options["scales"] == (1.0,) else f"scales {list(options['scales'])}"]
    if options["flip"]:
        parts.append("flip")
    if options["window"]:
        parts.append(f"sliding window {options['window'][0]}x{options['window'][1]}")
    return ", ".join(parts)


def _run_folder_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint sits in (``<run>/checkpoints/x.pt``), if any."""
    run = checkpoint.resolve().parent.parent
    return run if (run / "config.yaml").is_file() else None


def _default_checkpoint(run_dir: Path) -> Path:
    for name in ("checkpoints/best.pt", "checkpoints/last.pt"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir}: no checkpoints/best.pt or checkpoints/last.pt")


# ---------------------------------------------------------------------------------------- eval


def run_eval(args: argparse.Namespace) -> int:
    from geminifusion.cli import CLIError
    from geminifusion.configs import apply_overrides, load_config
    from geminifusion.engine import distributed as D
    from geminifusion.engine.train import CONFIG_FILE, load_run_config

    source = Path(args.config)
    run_dir = source if source.is_dir() else None
    if run_dir is not None:
        if not (run_dir / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{run_dir}: no {CONFIG_FILE} (not a run folder)")
        config = apply_overrides(load_run_config(run_dir), args.overrides)
    else:
        config = apply_overrides(load_config(args.config), args.overrides)
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"--checkpoint: file not found: {checkpoint}")
        run_dir = run_dir or _run_folder_of(checkpoint)
    elif run_dir is not None:
        checkpoint = _default_checkpoint(run_dir)
    else:
        raise CLIError("give --checkpoint CKPT (or a run folder instead of a config)")
    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size must be positive, got {args.batch_size}")
    options = _test_options(args, config)
    out = args.out or (run_dir / "eval" if run_dir else Path("runs") / config.name / "eval")

    ctx = D.setup_distributed(args.device or config.device)
    try:
        return _evaluate_checkpoint(args, config, checkpoint, run_dir, out, options, ctx)
    finally:
        D.cleanup_distributed()


def _data_root(config, run_dir: Path | None, out: Path, is_main: bool) -> Path:
    """The dataset folder; a synthetic set is found in its run folder or generated once."""
    from geminifusion.engine import distributed as D

    if config.data_root:
        root = Path(config.data_root)
        if not root.exists():
            raise FileNotFoundError(f"data_root {root} does not exist")
        return root
    if config.dataset != "synthetic":
        raise ValueError(
            f"config key 'data_root' is not set: pass --set data_root=/path/to/{config.dataset}"
        )
    if run_dir is not None and (run_dir / "data" / "classes.json").is_file():
        return run_dir / "data"
    root = out / "data"
    if is_main and not (root / "classes.json").is_file():
        from geminifusion.data import generate_synthetic_dataset

        generate_synthetic_dataset(
            root, num=config.synthetic_num, size=tuple(config.synthetic_size), seed=config.seed
        )
    D.barrier()
    return root


def _evaluate_checkpoint(args, config, checkpoint, run_dir, out, options, ctx) -> int:
    import torch

    from geminifusion.data import build_dataset
    from geminifusion.engine.evaluate import build_eval_loader, evaluate
    from geminifusion.engine.metrics import format_report, to_json_ready
    from geminifusion.engine.robustness import run_robustness, wants_robustness
    from geminifusion.engine.state import load_weights
    from geminifusion.engine.train import build_model

    root = _data_root(config, run_dir, out, ctx.is_main)
    split = args.split or config.val_split
    dataset = build_dataset(
        config.dataset,
        root,
        split,
        modalities=config.modalities,
        train=False,
        seed=config.seed,
        **config.dataset_options,
    )
    num_classes = dataset.num_classes
    if config.num_classes is not None and config.num_classes != num_classes:
        raise ValueError(
            f"config key 'num_classes' is {config.num_classes} but the {config.dataset} data at "
            f"{root} has {num_classes} classes"
        )
    model = build_model(config, num_classes)
    meta = load_weights(model, checkpoint)
    model.to(ctx.device).eval()
    amp = None
    if ctx.device.type == "cuda" and config.amp != "none":
        amp = torch.bfloat16 if config.amp == "bf16" else torch.float16
    loader = build_eval_loader(
        dataset, args.batch_size or config.val_batch_size, config.num_workers
    )
    if ctx.is_main:
        print(
            f"evaluating {checkpoint} ({meta['kind']}) on {config.dataset} {split}: "
            f"{len(dataset)} images, {num_classes} classes, {_describe_options(options)}, "
            f"{ctx.world_size} process(es) on {ctx.device}",
            flush=True,
        )
    if wants_robustness(args):  # per condition and/or with dead sensors; then the usual report
        tables = run_robustness(
            args,
            model,
            dataset,
            num_classes,
            ctx.device,
            out,
            ctx.is_main,
            batch_size=args.batch_size or config.val_batch_size,
            num_workers=config.num_workers,
            **options,
            autocast_dtype=amp,
            progress=_progress(args),
        )
        results = tables["none"]["overall"]
    else:
        results = evaluate(
            model,
            loader,
            num_classes,
            ctx.device,
            **options,
            autocast_dtype=amp,
            progress=_progress(args),
        )
    if not ctx.is_main:
        return 0
    report = format_report(results, dataset.class_names)
    print(report)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"eval_{split}" + "".join(
        tag
        for tag, on in (
            ("_ms", options["scales"] != (1.0,)),
            ("_flip", options["flip"]),
            ("_slide", bool(options["window"])),
        )
        if on
    )
    record = {
        "checkpoint": str(checkpoint),
        "checkpoint_kind": meta["kind"],
        "config": config.name,
        "arch": config.arch,
        "dataset": config.dataset,
        "data_root": str(root),
        "split": split,
        "num_images": len(dataset),
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        "processes": ctx.world_size,
        "class_names": list(dataset.class_names),
        "results": results,
    }
    (out / f"{stem}.json").write_text(
        json.dumps(to_json_ready(record), indent=2) + "\n", encoding="utf-8"
    )
    (out / f"{stem}.txt").write_text(report + "\n", encoding="utf-8")
    print(f"saved {out / (stem + '.json')} and {stem}.txt")
    return 0


# ------------------------------------------------------------------------------------- predict


def load_model(source: str | os.PathLike, arch: str | None = None):
    """A model ready for inference from a checkpoint file, a model folder or a run folder.

    Our checkpoints rebuild the model from the config they carry; model folders from their
    ``config.json``; the paper's checkpoints from their keys and shapes (``arch`` when the shapes
    fit no named variant or several).
    """
    from geminifusion.checkpoints import (
        from_reference_state_dict,
        read_checkpoint,
        unwrap_state_dict,
    )
    from geminifusion.configs import from_dict
    from geminifusion.engine.state import is_training_checkpoint, load_model_state
    from geminifusion.engine.train import build_model

    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"checkpoint not found: {source}")
    if source.is_dir():
        if (source / "config.json").is_file():
            from geminifusion.hub import from_pretrained

            return from_pretrained(source)
        source = _default_checkpoint(source)
    checkpoint = read_checkpoint(source)
    if is_training_checkpoint(checkpoint):
        config = from_dict(checkpoint["config"])
        model = build_model(config, int(checkpoint["spec"]["num_classes"]))
        load_model_state(model, checkpoint["model"], str(source))
        return model.eval()

    from geminifusion.hub import (
        DEFAULT_MODALITIES,
        describe_reference,
        infer_reference_arch,
        parse_arch,
    )
    from geminifusion.segmentor import build_segmentor

    state = unwrap_state_dict(checkpoint, str(source))
    facts = describe_reference(state)
    count = facts["num_modalities"]
    if count not in DEFAULT_MODALITIES:
        raise ValueError(f"{source}: a checkpoint with {count} inputs; convert it first")
    architecture = parse_arch(arch) if arch else infer_reference_arch(state, count)
    model = build_segmentor(
        architecture,
        facts["num_classes"],
        modalities=DEFAULT_MODALITIES[count],
        head_embed_dim=facts["head_embed_dim"],
    )
    model.load_state_dict(from_reference_state_dict(model, state, str(source)), strict=True)
    return model.eval()


def _parse_inputs(args: argparse.Namespace) -> dict[str, str]:
    paths = {}
    for name in ("rgb", "depth"):
        if getattr(args, name):
            paths[name] = getattr(args, name)
    for item in args.inputs:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path:
            raise ValueError(f"--input expects NAME=PATH, got {item!r}")
        paths[name.strip()] = path
    return paths


def collect_samples(
    modalities: Sequence[str],
    paths: dict[str, str],
    split_list: Path | None = None,
    root: Path | None = None,
) -> list[tuple[str, dict[str, str]]]:
    """``(name, modality -> file)`` per sample, from files, folders (matched by stem) or a list."""
    from geminifusion.data.datasets import _index_folder, read_split_list

    if split_list is not None:
        if paths:
            raise ValueError("give either --list or image paths, not both")
        base = root if root is not None else split_list.parent
        if not base.is_dir():
            raise FileNotFoundError(f"--root: folder not found: {base}")
        columns = {"rgb": 0, "depth": 2}
        extra = [m for m in modalities if m not in columns]
        if extra:
            raise ValueError(f"a split list names rgb and depth only; the model also takes {extra}")
        samples = []
        for _, fields in read_split_list(split_list):
            files = {m: str(base / fields[columns[m]]) for m in modalities}
            samples.append((Path(fields[0]).stem, files))
        missing = [f for _, s in samples for f in s.values() if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} files of {split_list} missing: {missing[0]}")
        return samples

    absent = [m for m in modalities if m not in paths]
    if absent:
        flags = ", ".join(
            f"--{m}" if m in ("rgb", "depth") else f"--input {m}=PATH" for m in absent
        )
        raise ValueError(f"the model takes {list(modalities)}: give {flags} (or --list)")
    unused = [m for m in paths if m not in modalities]
    if unused:
        raise ValueError(f"the model does not take {unused}; it takes {list(modalities)}")
    for m in modalities:
        if not Path(paths[m]).exists():
            raise FileNotFoundError(f"--{m}: not found: {paths[m]}")
    kinds = {Path(paths[m]).is_dir() for m in modalities}
    if kinds == {False}:
        return [(Path(paths[modalities[0]]).stem, {m: paths[m] for m in modalities})]
    if kinds != {True}:
        raise ValueError("give every input as a file, or every input as a folder")
    indexes = {m: _index_folder(Path(paths[m])) for m in modalities}
    first = indexes[modalities[0]]
    if not first:
        raise FileNotFoundError(f"no images in {paths[modalities[0]]}")
    for m in modalities[1:]:
        lacking = sorted(set(first) - set(indexes[m]))
        if lacking:
            raise FileNotFoundError(
                f"{len(lacking)} images of {paths[modalities[0]]} have no match in {paths[m]} "
                f"(matched by file name without extension), e.g. {lacking[0]}"
            )
    return [(stem, {m: indexes[m][stem] for m in modalities}) for stem in first]


def _read_inputs(files: dict[str, str], depth_format: str, depth_max_m: float):
    import numpy as np
    import torch

    from geminifusion.data.io import DataError, read_modality
    from geminifusion.data.transforms import normalize_rgb

    tensors, rgb_image = {}, None
    first: tuple[str, tuple[int, ...]] | None = None
    for name, path in files.items():
        fmt = "rgb" if name == "rgb" else depth_format if name == "depth" else "png8"
        array = read_modality(path, fmt, depth_max_m)
        if first is None:
            first = (name, array.shape[:2])
        elif array.shape[:2] != first[1]:
            raise DataError(
                f"{name} image is {array.shape[0]}x{array.shape[1]} but the {first[0]} image "
                f"is {first[1][0]}x{first[1][1]}; the inputs must be aligned",
                path,
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        if name == "rgb":
            rgb_image = np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)
            tensor = normalize_rgb(tensor)
        tensors[name] = tensor[None]
    return tensors, rgb_image


def run_predict(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from geminifusion.engine.distributed import resolve_device
    from geminifusion.engine.inference import predict_scores
    from geminifusion.engine.visualize import image_to_uint8, write_prediction

    if args.list is None and args.root is not None:
        raise ValueError("--root goes with --list")
    if args.list is not None and not args.list.is_file():
        raise FileNotFoundError(f"--list: file not found: {args.list}")
    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f"--opacity must lie in [0, 1], got {args.opacity}")
    paths = _parse_inputs(args)
    model = load_model(args.checkpoint, args.arch)
    names = list(model.output_names)
    output = args.output or names[-1]
    if output not in names:
        raise ValueError(f"--output: the model has no output {output!r}; it has {names}")
    samples = collect_samples(model.modalities, paths, args.list, args.root)
    options = _test_options(args)
    device = resolve_device(args.device or "auto")
    model.to(device)
    args.out.mkdir(parents=True, exist_ok=True)
    used: dict[str, int] = {}
    quiet = args.no_progress or not os.isatty(2)
    for stem, files in tqdm(samples, desc="predict", unit="image", disable=quiet):
        count = used.get(stem, 0)
        used[stem] = count + 1
        name = stem if count == 0 else f"{stem}_{count}"
        inputs, rgb = _read_inputs(files, args.depth_format, args.depth_max_m)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with torch.no_grad():
            scores = predict_scores(model, inputs, **options)
        classes = scores[names.index(output)][0].argmax(0).cpu()
        background = rgb if rgb is not None else image_to_uint8(inputs[model.modalities[0]][0])
        write_prediction(args.out, name, classes, background, args.opacity)
    print(f"wrote {len(samples)} predictions ({output}) to {args.out}")
    return 0


# ---------------------------------------------------------------------------------------- demo


def run_demo(args: argparse.Namespace) -> int:
    import dataclasses

    from geminifusion.engine.demo import QUICK, DemoSettings
    from geminifusion.engine.demo import run_demo as demo

    settings = QUICK if args.quick else DemoSettings()
    if args.iters is not None:
        if args.iters < 1:
            raise ValueError(f"--iters must be positive, got {args.iters}")
        settings = dataclasses.replace(settings, iters=args.iters)
    result = demo(
        args.out,
        settings,
        overwrite=args.overwrite,
        progress=_progress(args),
        threads=args.threads,
    )
    print()
    print(result.table)
    print(f"\nwrote {result.figure} and {args.out / 'demo.json'} in {result.seconds / 60:.1f} min")
    if args.quick:
        print("(--quick trains for seconds, to check the machinery: no margin is expected)")
        return 0
    return 0 if result.passed else 1
