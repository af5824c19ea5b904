"""The ``medseg`` command line: ``medseg <command> ...``.

Exit codes: 0 success, 2 bad input or configuration (a :class:`~medseg.errors.MedsegError`,
message on stderr), 1 unexpected failure. Only the CLI configures logging handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from medseg import __version__
from medseg.errors import MedsegError

logger = logging.getLogger("medseg")

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every command module in :mod:`medseg.commands`."""
    from medseg import commands

    parser = argparse.ArgumentParser(
        prog="medseg",
        description="Medical image segmentation with exact geometry.",
    )
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"medseg.commands.{info.name}")
        module.register(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record is emitted, not when the handler was
    made -- so a caller that swaps stderr (notebooks, test capture) never gets a closed file."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = (
        logging.ERROR
        if quiet
        else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose + 1, 2)]
    )
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("medseg")
    root.handlers[:] = [h for h in root.handlers if isinstance(h, logging.NullHandler)]
    root.addHandler(handler)
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used by ``python -m medseg``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    _configure_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args))
    except MedsegError as exc:
        sys.stderr.write(f"medseg {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
