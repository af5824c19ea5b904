"""The node's spool: every received instance on disk, durably, before the sender hears success.

Layout::

    OUT/spool/<study hash>/<SOP Instance UID>.dcm   one file per instance, as received
    OUT/spool/.incoming/                            temporary files being written

``<study hash>`` is :func:`medseg.io.dicom_scan.uid_hash` of the Study Instance UID (the prefix
of the contour engine's study key); no patient identifier is in any path. A file is written in
``.incoming`` (outside the study folders, so the contour engine never sees a partial one),
flushed and ``fsync``-ed, renamed into its study folder, and the folder is ``fsync``-ed: once
:meth:`Spool.store` returns, the instance survives a kill or a power loss. An instance received
again (same SOP Instance UID) replaces the earlier file.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from medseg.io.atomic import fsync_folder
from medseg.io.dicom_scan import uid_hash

logger = logging.getLogger(__name__)

__all__ = ["Spool", "is_uid"]

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
INCOMING = ".incoming"


def is_uid(value: str) -> bool:
    """True for a syntactically valid DICOM UID (digits and dots, at most 64 characters).

    Examples
    --------
    >>> is_uid("1.2.840.10008.5.1.4.1.1.2"), is_uid("../etc/passwd"), is_uid("1." + "2" * 70)
    (True, False, False)
    """
    return 0 < len(value) <= 64 and bool(_UID.match(value))


class Spool:
    """Received instances grouped by study (see the module docstring).

    Parameters
    ----------
    root
        ``OUT/spool`` (created).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.incoming = self.root / INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def study_key(study_instance_uid: str) -> str:
        """The spool folder name of a study (a UID hash, never a patient identifier).

        Examples
        --------
        >>> Spool.study_key("1.2.3")
        'c47f5b18b8'
        """
        return uid_hash(study_instance_uid)

    def study_dir(self, study_key: str) -> Path:
        """Folder of one study's instances."""
        return self.root / study_key

    def store(self, study_key: str, sop_instance_uid: str, data: bytes) -> Path:
        """Write one instance (DICOM file bytes) durably; returns its path.

        Raises
        ------
        ValueError
            ``sop_instance_uid`` is not a valid UID (it becomes the file name).
        OSError
            Disk full, permissions (the caller answers Out of Resources).
        """
        if not is_uid(sop_instance_uid):
            raise ValueError(f"SOP Instance UID {sop_instance_uid!r} is not a valid UID")
        folder = self.study_dir(study_key)
        new_folder = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix="instance-", suffix=".dcm", dir=self.incoming)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp_name, 0o644)
            target = folder / f"{sop_instance_uid}.dcm"
            os.replace(tmp_name, target)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise
        fsync_folder(folder)
        if new_folder:
            fsync_folder(self.root)
        return target

    def studies(self) -> list[str]:
        """Study folder names present in the spool."""
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def count(self, study_key: str) -> int:
        """Number of instances spooled for a study."""
        folder = self.study_dir(study_key)
        if not folder.is_dir():
            return 0
        return sum(1 for p in folder.iterdir() if p.suffix == ".dcm" and p.is_file())

    def clean_incoming(self) -> int:
        """Remove temporary files of writes a kill interrupted (call before accepting any);
        returns how many were removed."""
        n = 0
        for p in self.incoming.iterdir():
            p.unlink(missing_ok=True)
            n += 1
        if n:
            logger.info("spool: removed %d partial instance file(s) left by a stopped node", n)
        return n
