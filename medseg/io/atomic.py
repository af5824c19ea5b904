"""Atomic file writes: the one way medseg puts a file in place.

A writer fills a temporary file beside the destination (same folder, so the rename is atomic,
same suffix, so libraries that choose the format by suffix — nibabel, matplotlib, Pillow — still
do); only a complete file is renamed over the target. A crash never leaves a half-written output.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomic"]


def _full_suffix(name: str) -> str:
    return ".nii.gz" if name.lower().endswith(".nii.gz") else Path(name).suffix


def write_atomic(path: str | os.PathLike[str], writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The temporary file keeps ``path``'s suffix and the result gets ordinary ``0o644``
    permissions (``mkstemp`` would leave ``0o600``). The parent folder is created.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "a" / "note.txt"
    >>> _ = write_atomic(out, lambda tmp: tmp.write_text("done"))
    >>> out.read_text(), sorted(p.name for p in out.parent.iterdir())
    ('done', ['note.txt'])
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{p.name}.", suffix=".tmp" + _full_suffix(p.name), dir=p.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p
