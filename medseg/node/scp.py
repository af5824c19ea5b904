"""The node's Storage SCP (pynetdicom): C-ECHO and C-STORE, into the spool.

Association checks, in order: the Called AE Title must be the node's; the Calling AE Title and
the peer's address must match a configured caller (else A-ASSOCIATE-RJ, permanent, "calling AE
title not recognised"); at most ``max_associations`` at once (else transient rejection, "local
limit exceeded"). A C-STORE is answered ``0x0000`` only after the instance is on disk
(:meth:`medseg.node.spool.Spool.store`) and counted in ``node_studies``.

Failure statuses: ``0xA700`` (Out of Resources: larger than ``max_instance_mb``, disk full),
``0xC000`` (Cannot Understand: no valid Study/SOP Instance UID, undecodable data set).
Logs name studies by UID hash and peers by AE title and address, never by patient data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from medseg.node.spool import Spool, is_uid
from medseg.node.state import NodeState

if TYPE_CHECKING:
    from medseg.node.config import NodeConfig

logger = logging.getLogger(__name__)

__all__ = ["STORAGE_SOP_CLASSES", "TRANSFER_SYNTAXES", "build_scp"]

#: SOP classes accepted for storage (name → UID): the planning CT and the RT/SEG objects that
#: travel with it.
STORAGE_SOP_CLASSES = {
    "CT Image Storage": "1.2.840.10008.5.1.4.1.1.2",
    "Enhanced CT Image Storage": "1.2.840.10008.5.1.4.1.1.2.1",
    "RT Structure Set Storage": "1.2.840.10008.5.1.4.1.1.481.3",
    "RT Plan Storage": "1.2.840.10008.5.1.4.1.1.481.5",
    "RT Dose Storage": "1.2.840.10008.5.1.4.1.1.481.2",
    "RT Image Storage": "1.2.840.10008.5.1.4.1.1.481.1",
    "Segmentation Storage": "1.2.840.10008.5.1.4.1.1.66.4",
    "Spatial Registration Storage": "1.2.840.10008.5.1.4.1.1.66.1",
}

#: Transfer syntaxes accepted (name → UID): the ones medseg's readers decode.
TRANSFER_SYNTAXES = {
    "Explicit VR Little Endian": "1.2.840.10008.1.2.1",
    "Implicit VR Little Endian": "1.2.840.10008.1.2",
    "Deflated Explicit VR Little Endian": "1.2.840.10008.1.2.1.99",
    "Explicit VR Big Endian (retired)": "1.2.840.10008.1.2.2",
    "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 SV1)": (
        "1.2.840.10008.1.2.4.70"
    ),
    "JPEG Lossless, Non-Hierarchical (Process 14)": "1.2.840.10008.1.2.4.57",
    "JPEG-LS Lossless": "1.2.840.10008.1.2.4.80",
    "JPEG 2000 Image Compression (Lossless Only)": "1.2.840.10008.1.2.4.90",
    "JPEG 2000 Image Compression": "1.2.840.10008.1.2.4.91",
    "RLE Lossless": "1.2.840.10008.1.2.5",
}

VERIFICATION = "1.2.840.10008.1.1"

# C-STORE statuses
_SUCCESS = 0x0000
_OUT_OF_RESOURCES = 0xA700
_CANNOT_UNDERSTAND = 0xC000


def _peer(event: Any) -> tuple[str, str]:
    requestor = event.assoc.requestor
    title = requestor.ae_title
    if not title and requestor.primitive is not None:  # EVT_REQUESTED: not negotiated yet
        title = requestor.primitive.calling_ae_title
    return str(title or "").strip(), str(requestor.address)


def build_scp(
    config: NodeConfig,
    spool: Spool,
    state: NodeState,
    *,
    on_instance: Callable[[str], None] | None = None,
) -> tuple[Any, list[tuple[Any, Callable[..., Any]]]]:
    """The pynetdicom ``AE`` of the node and its event handlers (for ``AE.start_server``).

    Parameters
    ----------
    config
        AE title, callers, limits.
    spool, state
        Where instances go and where they are counted.
    on_instance
        Called with the study hash after each spooled instance.

    Returns
    -------
    (ae, handlers)
    """
    from pynetdicom import AE, evt

    ae = AE(ae_title=config.ae_title)
    ae.require_called_aet = True
    ae.maximum_associations = config.max_associations
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    syntaxes = list(TRANSFER_SYNTAXES.values())
    ae.add_supported_context(VERIFICATION, list(TRANSFER_SYNTAXES.values())[:2])
    for uid in STORAGE_SOP_CLASSES.values():
        ae.add_supported_context(uid, syntaxes)
    max_bytes = int(config.max_instance_mb * 1024 * 1024)

    def on_requested(event: Any) -> None:
        ae_title, host = _peer(event)
        if config.caller(ae_title, host) is None:
            logger.warning(
                "refused an association from %r at %s: not a configured caller (add it to "
                "callers in the node config if it should send)",
                ae_title,
                host,
            )
            # rejected-permanent, service-user, calling AE title not recognised
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)
            event.assoc.kill()  # waits until the A-ASSOCIATE-RJ is out (as pynetdicom's own)

    def on_echo(event: Any) -> int:
        ae_title, host = _peer(event)
        logger.info("C-ECHO from %s at %s", ae_title, host)
        return _SUCCESS

    def on_store(event: Any) -> int:
        ae_title, host = _peer(event)
        try:
            data = event.encoded_dataset(include_meta=True)
        except Exception as exc:  # pynetdicom/pydicom raise many kinds on bad input
            logger.warning("C-STORE from %s: cannot encode the file meta (%s)", ae_title, exc)
            return _CANNOT_UNDERSTAND
        if len(data) > max_bytes:
            logger.warning(
                "C-STORE from %s refused: instance of %.1f MB is over max_instance_mb %g",
                ae_title,
                len(data) / 1e6,
                config.max_instance_mb,
            )
            return _OUT_OF_RESOURCES
        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        try:
            study_uid = str(event.dataset.get("StudyInstanceUID", "") or "")
        except Exception as exc:  # undecodable data set
            logger.warning("C-STORE from %s: data set cannot be decoded (%s)", ae_title, exc)
            return _CANNOT_UNDERSTAND
        if not is_uid(sop_uid) or not is_uid(study_uid):
            logger.warning(
                "C-STORE from %s refused: %s is not a valid UID",
                ae_title,
                "Study Instance UID" if is_uid(sop_uid) else "SOP Instance UID",
            )
            return _CANNOT_UNDERSTAND
        study = spool.study_key(study_uid)
        try:
            state.record_instance(study, caller_ae=ae_title, caller_host=host)
            spool.store(study, sop_uid, data)
        except OSError as exc:
            logger.error("C-STORE from %s: cannot write the spool (%s)", ae_title, exc)
            return _OUT_OF_RESOURCES
        logger.debug("study %s: instance %s spooled", study, sop_uid)
        if on_instance is not None:
            on_instance(study)
        return _SUCCESS

    def on_released(event: Any) -> None:
        ae_title, host = _peer(event)
        logger.info("association with %s at %s released", ae_title, host)

    handlers = [
        (evt.EVT_REQUESTED, on_requested),
        (evt.EVT_C_ECHO, on_echo),
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_RELEASED, on_released),
    ]
    return ae, handlers
