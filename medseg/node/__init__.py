"""A DICOM node: receive CTs from a PACS or planning system, contour them, send the results back.

``medseg listen --config pipelines/node.yaml`` runs :func:`run_node`; ``medseg send`` and
``medseg echo`` use :func:`send_files` and :func:`echo`. See ``docs/dicom-node.md``.
"""

from __future__ import annotations

from medseg.node.config import (
    Caller,
    Destination,
    NodeConfig,
    RetryPolicy,
    load_node_config,
    parse_address,
)
from medseg.node.network import DicomNetworkError, SendOutcome, echo, expand_files, send_files
from medseg.node.service import NodeService, NodeSummary, run_node
from medseg.node.spool import Spool
from medseg.node.state import NodeState

__all__ = [
    "Caller",
    "Destination",
    "DicomNetworkError",
    "NodeConfig",
    "NodeService",
    "NodeState",
    "NodeSummary",
    "RetryPolicy",
    "SendOutcome",
    "Spool",
    "echo",
    "expand_files",
    "load_node_config",
    "parse_address",
    "run_node",
    "send_files",
]
