"""Atomic file writes: the one way medseg puts a file in place.

A writer fills a temporary file beside the destination (same folder, so the rename is atomic,
same suffix, so libraries that choose the format by suffix — nibabel, matplotlib, Pillow — still
do); only a complete file is renamed over the target. A crash never leaves a half-written output.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "clean_stale_files",
    "clean_stale_folders",
    "fsync_folder",
    "nearest_existing",
    "write_atomic",
    "write_folder_atomic",
]


def nearest_existing(path: str | os.PathLike[str]) -> Path:
    """``path`` itself or its nearest ancestor that exists: where a write would have to start.

    When it is a regular file, no folder can be made under it; output checks use this to fail
    before any work instead of with a traceback at the end.

    Examples
    --------
    >>> nearest_existing("/")
    PosixPath('/')
    """
    parent = Path(path)
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def _full_suffix(name: str) -> str:
    return ".nii.gz" if name.lower().endswith(".nii.gz") else Path(name).suffix


def write_atomic(path: str | os.PathLike[str], writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The temporary file keeps ``path``'s suffix and the result gets ordinary ``0o644``
    permissions (``mkstemp`` would leave ``0o600``). The parent folder is created. Temporary
    files that a killed earlier writer of the same ``path`` left behind are removed first (their
    names carry the writer's host and process id).

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
    clean_stale_files(p)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{p.name}.{_owner_tag()}-", suffix=".tmp" + _full_suffix(p.name), dir=p.parent
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


def clean_stale_files(path: str | os.PathLike[str], *, max_age_s: float = 86400.0) -> list[Path]:
    """Remove temporary files of :func:`write_atomic` for ``path`` whose writer is gone.

    A writer killed between creating its temporary file and renaming it leaves
    ``.<name>.<host>-<pid>-<random>.tmp<suffix>``; it is removed when that process no longer runs
    on this host (or, from another host, when older than ``max_age_s``).
    """
    p = Path(path)
    prefix = f".{p.name}."
    removed: list[Path] = []
    if not p.parent.is_dir():
        return removed
    for tmp in p.parent.glob(glob_escape(prefix) + "*.tmp*"):
        tag = tmp.name[len(prefix) :].split(".tmp", 1)[0]
        try:
            mtime = tmp.lstat().st_mtime
        except FileNotFoundError:
            continue
        if tmp.is_file() and _is_stale(tag, "", max_age_s, mtime):
            tmp.unlink(missing_ok=True)
            logger.info("removed leftover %s of an interrupted write", tmp)
            removed.append(tmp)
    return removed


# ---------------------------------------------------------------------------------------------
# Whole folders: a study's outputs appear together or not at all.

_PARTIAL = ".partial-"
_OLD = ".old-"


def _owner_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(name: str, prefix: str, max_age_s: float, mtime: float) -> bool:
    """A leftover of a dead process on this host, or older than ``max_age_s`` on any host."""
    parts = name[len(prefix) :].rsplit("-", 2)  # host (may hold dashes), pid, random
    if len(parts) == 3 and parts[0] == socket.gethostname() and parts[1].isdigit():
        return not _pid_alive(int(parts[1]))
    return time.time() - mtime > max_age_s


def clean_stale_folders(dest: str | os.PathLike[str], *, max_age_s: float = 86400.0) -> list[Path]:
    """Remove what an interrupted :func:`write_folder_atomic` left beside ``dest``.

    A ``.<name>.partial-*`` folder of a process that is no longer running (or older than
    ``max_age_s`` when written by another host) is deleted. A ``.<name>.old-*`` folder (the
    previous outputs, moved aside during a replacement) is put back when ``dest`` is missing,
    else deleted. Returns the paths removed or restored.
    """
    d = Path(dest)
    if not d.parent.is_dir():
        return []
    done: list[Path] = []
    for prefix in (f".{d.name}{_PARTIAL}", f".{d.name}{_OLD}"):
        for p in sorted(d.parent.glob(glob_escape(prefix) + "*")):
            try:
                mtime = p.lstat().st_mtime
            except FileNotFoundError:
                continue
            if not _is_stale(p.name, prefix, max_age_s, mtime):
                continue
            if prefix.endswith(_OLD) and not d.exists():
                os.rename(p, d)
                logger.warning("restored %s from an interrupted replacement (%s)", d, p.name)
            else:
                shutil.rmtree(p, ignore_errors=True)
                logger.info("removed leftover %s of an interrupted write", p)
            done.append(p)
    return done


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_folder(folder)


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """``fsync`` a folder, so that a rename or a new file in it survives a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def write_folder_atomic(
    dest: str | os.PathLike[str], *, replace: bool = False, durable: bool = True
) -> Iterator[Path]:
    """Fill a hidden temporary folder beside ``dest``, then rename it into place as a whole.

    After a crash or ``SIGKILL`` at any moment ``dest`` is either complete (the new or, during
    a replacement, the previous contents) or absent; never half written. Leftovers of killed
    writers are removed (or the previous folder restored) by the next call for the same
    ``dest`` (:func:`clean_stale_folders`).

    Parameters
    ----------
    dest
        Final folder.
    replace
        Allow an existing ``dest`` to be replaced (it is moved aside, the new folder renamed in,
        then the old one deleted). Without it an existing non-empty ``dest`` raises
        :class:`FileExistsError` before the body runs; an existing empty one is replaced.
    durable
        ``fsync`` the files and folders before and after the rename (power-loss safe).

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "study"
    >>> with write_folder_atomic(out) as tmp:
    ...     _ = (tmp / "a.txt").write_text("1")
    >>> sorted(p.name for p in out.iterdir()), sorted(p.name for p in out.parent.iterdir())
    (['a.txt'], ['study'])
    """
    d = Path(dest)
    d.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_folders(d)
    if d.exists() and not replace and (not d.is_dir() or any(d.iterdir())):
        raise FileExistsError(f"{d} exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}{_PARTIAL}{_owner_tag()}-", dir=d.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if durable:
            _fsync_tree(tmp)
        old: Path | None = None
        if d.exists() or d.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{d.name}{_OLD}{_owner_tag()}-", dir=d.parent))
            os.rmdir(old)
            os.rename(d, old)
        os.rename(tmp, d)
        if durable:
            fsync_folder(d.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
