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

# Defined with the option helpers, so that ``python -m geminifusion.cli`` (this file run as
# ``__main__``, next to the imported ``geminifusion.cli`` the commands use) has one CLIError.
from geminifusion.commands.options import CLIError

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


def _warnings_as_lines(command: str) -> None:
    """Print the package's own warnings as ``geminifusion CMD: warning: ...``, one line each.

    Warnings of other libraries keep Python's format.
    """
    import os
    import warnings

    package = os.path.dirname(os.path.abspath(__file__))
    default = getattr(warnings.showwarning, "default", warnings.showwarning)

    def show(message, category, filename, lineno, file=None, line=None):
        if not os.path.abspath(filename).startswith(package + os.sep):
            return default(message, category, filename, lineno, file, line)
        text = " ".join(str(message).split())
        print(f"geminifusion {command}: warning: {text}", file=file or sys.stderr)

    show.default = default
    warnings.showwarning = show


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
    _warnings_as_lines(args.command)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, MissingExtraError) as err:
        print(f"geminifusion {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a missing file, a full disk, a read-only folder: named in one line
        from geminifusion.files import describe_os_error

        print(f"geminifusion {args.command}: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
