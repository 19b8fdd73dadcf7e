"""Option helpers shared by the commands, each written once.

A command module exposes ``add_commands(subparsers)``; its functions parse the arguments and
call the library. Everything here is about reading the command line, nothing else.
"""

from __future__ import annotations

import argparse


class CLIError(Exception):
    """An error whose message is meant for the user: printed without a traceback."""


def size(text: str) -> tuple[int, int]:
    """``480x640``, ``480,640`` or ``512`` -> ``(H, W)`` (an argparse ``type``)."""
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


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def names(text: str) -> tuple[str, ...]:
    """``rgb,depth`` -> ``("rgb", "depth")``."""
    values = tuple(n.strip() for n in text.split(",") if n.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return values


def add_overrides(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE`` (repeatable), collected in ``args.overrides``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"change a config key ({example}); the value is read as YAML; repeatable",
    )


def add_device(parser: argparse.ArgumentParser, default: str = "the config's") -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help=f"default: {default}")


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (default: on a terminal)"
    )


def progress(args: argparse.Namespace) -> bool | None:
    """What the library's ``progress=`` takes: False when turned off, else None (a terminal)."""
    return False if args.no_progress else None


def add_test_options(parser: argparse.ArgumentParser) -> None:
    """The test-time options of ``eval`` and ``predict``."""
    g = parser.add_argument_group("test-time options")
    g.add_argument(
        "--multi-scale",
        action="store_true",
        help="average over scales 0.5..1.75 (or the config's eval_scales); default single scale",
    )
    g.add_argument("--scales", type=float, nargs="+", metavar="S", help="explicit test scales")
    g.add_argument("--flip", action="store_true", help="add horizontally mirrored views")
    g.add_argument(
        "--sliding-window",
        type=size,
        nargs="?",
        const="crop",
        default=None,
        metavar="HxW",
        help="infer in overlapping tiles (default tile: the config's eval_window or crop size)",
    )
    g.add_argument("--stride", type=size, metavar="HxW", help="sliding-window step (default 2/3)")


def test_options(args: argparse.Namespace, config=None) -> dict:
    """``scales``, ``flip``, ``window``, ``stride`` from the flags, else from the config."""
    from geminifusion.engine.inference import DEFAULT_SCALES
    from geminifusion.segmentor import MIN_SIDE

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
    if window is not None and min(window) < MIN_SIDE:
        raise ValueError(
            f"--sliding-window: tiles must be at least {MIN_SIDE}x{MIN_SIDE} pixels (the "
            f"smallest input the model takes), got {window[0]}x{window[1]}"
        )
    stride = args.stride or (tuple(config.eval_stride) if config and config.eval_stride else None)
    flip = args.flip or bool(config is not None and config.eval_flip)
    return {"scales": scales, "flip": flip, "window": window, "stride": stride}


def add_compile(parser: argparse.ArgumentParser) -> None:
    """``--compile``: run the model through ``torch.compile`` (``args.compile``)."""
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run the model through torch.compile (the first forward compiles: slow to start)",
    )


def compiled(model):
    """``torch.compile(model)``; the compiled module still answers ``model.modalities`` etc."""
    import torch

    return torch.compile(model)


def add_source(parser: argparse.ArgumentParser) -> None:
    """``SOURCE`` (weights or an architecture) and the options that qualify it."""
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="run folder, checkpoint (ours or the paper's), model folder, or an architecture "
        "name / JSON config (random weights)",
    )
    parser.add_argument("--arch", help="architecture of a paper checkpoint (default: recognised)")
    parser.add_argument(
        "--num-classes", type=positive_int, help="classes of an architecture (default 40)"
    )
    parser.add_argument(
        "--modalities", type=names, help="inputs of an architecture (default rgb,depth)"
    )


def load_source(args: argparse.Namespace, device: str = "cpu"):
    """The model ``add_source``'s options describe."""
    from geminifusion.weights.folder import parse_arch
    from geminifusion.weights.load import load_or_build_model

    arch = parse_arch(args.arch) if args.arch else None
    return load_or_build_model(
        args.source,
        arch=arch,
        modalities=args.modalities,
        num_classes=args.num_classes,
        device=device,
    )


def add_input_shape(parser: argparse.ArgumentParser) -> None:
    """``--size HxW`` (default 480x640) and ``--batch N`` (default 1) of model inputs."""
    parser.add_argument(
        "--size", type=size, default=(480, 640), metavar="HxW", help="default 480x640"
    )
    parser.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")


def add_overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {what}")
