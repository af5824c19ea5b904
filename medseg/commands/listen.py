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


def _check_output_folder(out: Path) -> None:
    """Refuse, before the port is opened, an output folder that a file is in the way of."""
    from medseg.errors import InputError
    from medseg.io.atomic import nearest_existing

    parent = nearest_existing(out)
    if not parent.is_dir():
        raise InputError(
            f"output {out}: {parent} is a file, not a folder; give another output folder (-o or "
            "output_dir)."
        )


def _check_port_free(host: str, port: int) -> None:
    """Refuse, before anything starts or is written, a port that another program listens on."""
    import socket

    from medseg.errors import InputError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the node's server does
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(
                f"cannot listen on {host}:{port} ({exc.strerror}): another program (or another "
                "medseg node) uses this port; stop it, or set another port in the config."
            ) from exc


def run_listen(args: argparse.Namespace) -> int:
    """Handler of ``medseg listen``: load the config, :func:`~medseg.node.run_node`, print."""
    from medseg.node import load_node_config, run_node

    config = load_node_config(args.config, output_dir=args.output)
    _check_output_folder(Path(config.output_dir))
    _check_port_free(config.host, config.port)
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
