"""DICOM network client side: C-ECHO and C-STORE to a peer (``medseg echo``, ``medseg send``, and
the node's sender).

Files are sent in the transfer syntax they are stored in; an uncompressed file may also go as
Explicit or Implicit VR Little Endian when the peer prefers. One association per call.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import InputError
from medseg.node.config import Destination, check_ae_title

logger = logging.getLogger(__name__)

__all__ = [
    "DicomNetworkError",
    "SendOutcome",
    "echo",
    "expand_files",
    "send_files",
    "status_ok",
]

#: Uncompressed transfer syntaxes a file stored in one of them may be sent in.
_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


class DicomNetworkError(InputError):
    """A DICOM peer cannot be reached, refuses the association, or answers with a failure."""


@dataclass(frozen=True)
class SendOutcome:
    """What happened to one file sent by C-STORE.

    Attributes
    ----------
    path
        The file.
    sop_instance_uid
        Its SOP Instance UID ('' when it could not be read).
    status
        The peer's C-STORE status (``None``: not sent, see ``error``).
    error
        Why it was not stored ('' when it was).
    """

    path: Path
    sop_instance_uid: str
    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when the peer stored it (success or a warning status)."""
        return self.status is not None and status_ok(self.status)


def status_ok(status: int) -> bool:
    """True for C-STORE success (0x0000) and warnings (0x0001, 0xB000-0xBFFF): stored.

    Examples
    --------
    >>> [status_ok(s) for s in (0x0000, 0xB000, 0xA700, 0xC000)]
    [True, True, False, False]
    """
    return status in (0x0000, 0x0001) or 0xB000 <= status <= 0xBFFF


def _application_entity(calling_ae: str, timeout_s: float) -> object:
    from pynetdicom import AE

    ae = AE(ae_title=check_ae_title(calling_ae, "calling AE title"))
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    return ae


def _refused(dest: Destination, assoc: object) -> str:
    if getattr(assoc, "is_rejected", False):
        return (
            f"{dest} rejected the association (check that it knows this calling AE title and "
            "host, and that its AE title is right)"
        )
    return (
        f"no association with {dest}: nothing answered at {dest.host}:{dest.port} "
        "(peer down, wrong host/port, or a firewall)"
    )


def echo(dest: Destination, *, calling_ae: str = "MEDSEG", timeout_s: float = 10.0) -> float:
    """C-ECHO ``dest``; return the round trip (association + echo + release) in milliseconds.

    Raises
    ------
    DicomNetworkError
        Peer unreachable, association rejected, or a non-success echo status.
    """
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = _application_entity(calling_ae, timeout_s)
    ae.add_requested_context(Verification)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)  # type: ignore[attr-defined]
    if not assoc.is_established:
        raise DicomNetworkError(_refused(dest, assoc))
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    code = int(getattr(status, "Status", -1)) if status else -1
    if code != 0x0000:
        raise DicomNetworkError(
            f"{dest} answered the C-ECHO with status {_hex(code)} (expected 0x0000)."
            if code >= 0
            else f"{dest} did not answer the C-ECHO within {timeout_s:g} s."
        )
    return (time.perf_counter() - t0) * 1000.0


def expand_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files given, folders expanded recursively (hidden entries skipped), sorted per folder.

    Raises
    ------
    InputError
        A path that does not exist, or nothing to send.
    """
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
        else:
            raise InputError(f"{p}: no such file or folder; give DICOM files or folders.")
    if not out:
        raise InputError("nothing to send: the folders given hold no files.")
    return out


def _hex(code: int) -> str:
    return f"0x{code:04X}"


def send_files(
    files: Sequence[str | os.PathLike[str]],
    dest: Destination,
    *,
    calling_ae: str = "MEDSEG",
    timeout_s: float = 30.0,
) -> list[SendOutcome]:
    """C-STORE ``files`` to ``dest`` over one association.

    A file that is not DICOM, or whose SOP class/transfer syntax the peer did not accept, gets
    an outcome with ``error`` (the others are still sent).

    Returns
    -------
    list of SendOutcome
        One per file, in order.

    Raises
    ------
    DicomNetworkError
        The association could not be made (peer down, rejected); nothing was sent.
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError
    from pynetdicom import build_context

    headers: list[tuple[Path, str, str, str] | SendOutcome] = []
    wanted: dict[str, set[str]] = {}
    for f in files:
        p = Path(f)
        try:
            ds = dcmread(p, stop_before_pixels=True)
            sop_class = str(ds.SOPClassUID)
            sop_uid = str(ds.SOPInstanceUID)
            ts = str(ds.file_meta.TransferSyntaxUID)
        except (InvalidDicomError, OSError, AttributeError, ValueError) as exc:
            headers.append(SendOutcome(p, "", None, f"not a DICOM file with file meta ({exc})"))
            continue
        headers.append((p, sop_class, sop_uid, ts))
        syntaxes = wanted.setdefault(sop_class, set())
        syntaxes.add(ts)
        if ts in _UNCOMPRESSED:
            syntaxes.update(_UNCOMPRESSED)
    if len(wanted) > 128:
        raise InputError(
            f"{len(wanted)} SOP classes in one send; an association carries at most 128. Send "
            "the files in smaller groups."
        )
    ae = _application_entity(calling_ae, timeout_s)
    contexts = [build_context(uid, sorted(ts)) for uid, ts in sorted(wanted.items())]
    if not contexts:
        return [h for h in headers if isinstance(h, SendOutcome)]
    assoc = ae.associate(  # type: ignore[attr-defined]
        dest.host, dest.port, contexts=contexts, ae_title=dest.ae_title
    )
    if not assoc.is_established:
        raise DicomNetworkError(_refused(dest, assoc))
    outcomes: list[SendOutcome] = []
    try:
        for h in headers:
            if isinstance(h, SendOutcome):
                outcomes.append(h)
                continue
            path, sop_class, sop_uid, _ = h
            if not assoc.is_established:
                outcomes.append(SendOutcome(path, sop_uid, None, "association lost"))
                continue
            try:
                status = assoc.send_c_store(path)
            except ValueError as exc:  # no accepted context for this SOP class/transfer syntax
                outcomes.append(SendOutcome(path, sop_uid, None, f"not accepted by {dest}: {exc}"))
                continue
            code = int(status.Status) if status and "Status" in status else None
            error = ""
            if code is None:
                error = f"no C-STORE response within {timeout_s:g} s (association aborted?)"
            elif not status_ok(code):
                error = f"{dest} answered status {_hex(code)}"
            outcomes.append(SendOutcome(path, sop_uid, code, error))
    finally:
        if assoc.is_established:
            assoc.release()
    return outcomes
