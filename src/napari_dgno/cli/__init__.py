"""The ``dgno`` command: one module per subcommand (``deblur``, ``models``, ``train``, ``demo``, ``bench``).

Every failure the user can fix is one line, ``dgno: error: <reason>``, and exit status 2; an
interrupted run exits 130; a batch (several inputs) in which some files failed lists them, one line
each, and exits 1. Output files are written atomically, so a failed or interrupted run never
leaves a partial file. Each subcommand imports torch and the library inside its ``run``, so
``dgno --help`` stays quick; nothing else is imported lazily.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

from ..errors import DGNOError, one_line

# Subcommands: name -> module in this package. Each module has ``add_parser(subparsers)``, which adds
# its parser and sets ``func`` (``args -> int`` exit code) with ``set_defaults``.
SUBCOMMANDS: dict[str, str] = {
    "deblur": "napari_dgno.cli.deblur",
    "models": "napari_dgno.cli.models",
    "train": "napari_dgno.cli.train",
    "demo": "napari_dgno.cli.demo",
    "bench": "napari_dgno.cli.bench",
}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line through ``main`` instead of exiting."""

    def error(self, message):
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


# ---------------------------------------------------------------------------------------------------
# Entry point


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="dgno",
        description="Remove spatially varying defocus blur from microscopy images with DGNO.",
    )
    parser.add_argument("--version", action="version", version=f"napari-dgno {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``dgno``; returns the exit status (0 ok, 2 bad input or usage, 130 interrupted).

    Ctrl-C at any point in here (while the commands' modules import, while the arguments are
    parsed, while a command runs) ends with one line, ``dgno: interrupted``, and status 130: never
    a traceback.
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C while we say so
            print("dgno: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as err:
        print(f"dgno: error: {one_line(err)}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else 0
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except DGNOError as err:
        print(f"dgno: error: {one_line(err)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("dgno: error: out of memory; try a smaller --tile or another --device", file=sys.stderr)
        return 2
