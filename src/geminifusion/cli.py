"""The ``geminifusion`` command line.

Each sub-command has its module in ``geminifusion.commands``; this file only gathers them. A
command module exposes ``add_commands(subparsers)`` and sets ``func`` on its parsers; the
function parses and calls the library, which does the work (and has no argparse).
Heavy imports happen inside the command functions, so ``geminifusion --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute sub-commands, in the order they appear in ``--help``.
COMMAND_MODULES: tuple[str, ...] = (
    "geminifusion.commands.model",
    "geminifusion.commands.convert",
    "geminifusion.commands.data",
    "geminifusion.commands.train",
    "geminifusion.commands.eval",
    "geminifusion.commands.predict",
    "geminifusion.commands.export",
    "geminifusion.commands.benchmark",
    "geminifusion.commands.demo",
    "geminifusion.commands.detection3d",
)


class CLIError(Exception):
    """An error whose message is meant for the user: printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    from geminifusion._version import __version__

    parser = argparse.ArgumentParser(
        prog="geminifusion",
        description="Multimodal semantic segmentation with GeminiFusion.",
    )
    parser.add_argument("--version", action="version", version=f"geminifusion {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from geminifusion.extras import MissingExtraError
    from geminifusion.runtime import configure_from_environment

    configure_from_environment()  # reuse freed activation memory (geminifusion.runtime)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed by argparse
        return int(exit_.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, MissingExtraError) as err:
        print(f"geminifusion {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
