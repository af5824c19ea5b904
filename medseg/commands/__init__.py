"""Sub-commands of the ``medseg`` CLI.

Each module here defines ``register(subparsers) -> None`` that adds one sub-command whose handler
is stored as ``func`` in the parser defaults: ``func(args: argparse.Namespace) -> int``.
The CLI discovers the modules, so adding a command never touches :mod:`medseg.cli`.
"""

from __future__ import annotations

__all__: list[str] = []
