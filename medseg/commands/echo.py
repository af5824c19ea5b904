"""``medseg echo AE@HOST:PORT [--calling-ae MEDSEG]``: DICOM C-ECHO (verification) of a peer.

Prints the round trip in milliseconds; exit status 0 when the peer answered success, 2 when it
could not be reached, refused the association or answered a failure.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run_echo"]


def register(subparsers: Any) -> None:
    """Add the ``echo`` sub-command."""
    p = subparsers.add_parser(
        "echo",
        help="DICOM C-ECHO a peer (AE@HOST:PORT)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("address", help="the peer as AE@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242")
    p.add_argument("--calling-ae", default="MEDSEG", help="our AE title (default MEDSEG)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    p.set_defaults(func=run_echo)


def run_echo(args: argparse.Namespace) -> int:
    """Handler of ``medseg echo``: :func:`~medseg.node.echo`, print the round trip."""
    from medseg.node import echo, parse_address

    dest = parse_address(args.address)
    ms = echo(dest, calling_ae=args.calling_ae, timeout_s=args.timeout)
    sys.stdout.write(f"C-ECHO {dest}: success in {ms:.1f} ms\n")
    return 0
