"""Output checks and atomic writers shared by the photo commands.

Every photo output is written through :func:`medseg.io.atomic.write_atomic`, and an existing
output is replaced only when the caller passes ``overwrite`` (``--overwrite``). The checks run
before any work, so a refused run leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from medseg.errors import ExportError, InputError
from medseg.io.atomic import nearest_existing, write_atomic

logger = logging.getLogger(__name__)

__all__ = ["check_output_file", "check_output_folder", "write_png", "write_text"]


def _writable_ancestor(path: Path) -> None:
    parent = nearest_existing(path)
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(
            f"cannot write {path}: {parent} is not a writable folder; choose another output."
        )


def check_output_folder(out: Path, names: Sequence[str], *, overwrite: bool) -> None:
    """Refuse an output folder that cannot receive ``names``, before any work is done.

    Raises
    ------
    InputError
        ``out`` is a file, or holds one of ``names`` and ``overwrite`` is False.
    ExportError
        ``out`` (or the folder it would be created in) is not writable.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is a file, not a folder; pass a folder to -o/--output.")
    existing = [out / n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} exists; pass --overwrite to replace outputs.")
    _writable_ancestor(out)


def check_output_file(path: Path, *, overwrite: bool) -> None:
    """Refuse an output file that exists (unless ``overwrite``) or cannot be written.

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is False, or is a folder.
    ExportError
        Its folder is not writable.
    """
    if path.is_dir():
        raise InputError(f"output {path} is a folder; pass a file name to -o/--output.")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass --overwrite to replace it.")
    _writable_ancestor(path.parent)


def write_text(path: Path, text: str, *, overwrite: bool) -> Path:
    """Atomically write ``text`` to ``path`` after :func:`check_output_file`.

    Raises
    ------
    InputError, ExportError
        As :func:`check_output_file`, or the write fails.
    """
    check_output_file(path, overwrite=overwrite)
    try:
        return write_atomic(path, lambda tmp: tmp.write_text(text))
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc}; choose a writable output.") from exc


def write_png(path: Path, array: npt.NDArray[np.uint8]) -> None:
    """Atomically write a uint8 array (rows, columns[, 3]) as PNG.

    Raises
    ------
    ExportError
        The file cannot be written (permissions, full disk).
    """
    try:
        write_atomic(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc}; choose a writable output folder.") from exc
