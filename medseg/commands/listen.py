"""``medseg listen --config pipelines/node.yaml [-o OUT]``: run the DICOM node.

A Storage SCP (C-ECHO, C-STORE of CT and RT/SEG objects) for the callers in the config. Every
instance is spooled durably before success is answered; a study is complete once no instance of
it arrived for ``quiet_time_s``; it is then contoured by the contour engine (same outputs and
manifest as ``medseg contour``) and its RTSTRUCT and SEG are sent back by C-STORE, retried while
the destination is down. Stop with SIGTERM or Ctrl-C; a restart (even after kill -9) resumes
everything. See docs/dicom-node.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["register", "run_listen"]


def register(subparsers: Any) -> None:
    """Add the ``listen`` sub-command."""
    p = subparsers.add_parser(
        "listen",
        help="run the DICOM node: receive CTs, contour them, send the results back",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, required=True, help="node config (YAML)")
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="output folder (replaces output_dir)"
    )
    p.set_defaults(func=run_listen)


def run_listen(args: argparse.Namespace) -> int:
    """Handler of ``medseg listen``: load the config, :func:`~medseg.node.run_node`, print."""
    from medseg.node import load_node_config, run_node

    config = load_node_config(args.config, output_dir=args.output)
    if not args.quiet and not args.verbose:  # a service reports what it does by default
        logging.getLogger("medseg").setLevel(logging.INFO)
    # pynetdicom's debug output would dump data sets (patient data): keep it at warnings
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    sys.stderr.write(
        f"medseg node {config.ae_title} on {config.host}:{config.port}, outputs in "
        f"{config.output_dir}\n"
    )
    sys.stderr.flush()
    summary = run_node(config)
    sys.stderr.write(f"node stopped; studies {summary.studies}, sends {summary.sends}\n")
    return 0
