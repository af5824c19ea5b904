"""``medseg send FILES... --to AE@HOST:PORT [--calling-ae MEDSEG]``: DICOM C-STORE files.

Folders are sent recursively (hidden entries skipped), each file in the transfer syntax it is
stored in, over one association. Prints one line per file that was not stored and a summary;
exit status 0 when every file was stored, 1 when some were not, 2 when the peer could not be
reached or refused the association.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run_send"]


def register(subparsers: Any) -> None:
    """Add the ``send`` sub-command."""
    p = subparsers.add_parser(
        "send",
        help="DICOM C-STORE files or folders to a peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", type=Path, help="DICOM files or folders")
    p.add_argument(
        "--to", required=True, dest="address", help="the peer as AE@HOST:PORT (its Storage SCP)"
    )
    p.add_argument("--calling-ae", default="MEDSEG", help="our AE title (default MEDSEG)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per step (default 30)")
    p.set_defaults(func=run_send)


def run_send(args: argparse.Namespace) -> int:
    """Handler of ``medseg send``: :func:`~medseg.node.send_files`, print what failed."""
    from medseg.node import expand_files, parse_address, send_files

    dest = parse_address(args.address)
    outcomes = send_files(
        expand_files(args.files), dest, calling_ae=args.calling_ae, timeout_s=args.timeout
    )
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        sys.stderr.write(f"not stored: {o.path}: {o.error}\n")
    sys.stdout.write(f"{len(outcomes) - len(failed)} of {len(outcomes)} file(s) stored on {dest}\n")
    return 1 if failed else 0
