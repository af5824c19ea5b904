"""The one exception hierarchy of medseg.

Every error a user can cause (bad input, bad config, mismatched grids, unloadable model, invalid
export request) ends in a :class:`MedsegError` subclass whose message says what is wrong, where,
what was expected versus what was found, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ExportError",
    "GeometryError",
    "InputError",
    "MedsegError",
    "ModelError",
]


class MedsegError(Exception):
    """Base class of all errors raised by medseg on purpose."""


class InputError(MedsegError):
    """An input file or folder cannot be read or is not what the operation needs."""


class GeometryError(MedsegError):
    """Image geometry is inconsistent: tilt, gaps, mixed orientations, mismatched grids."""


class ConfigError(MedsegError):
    """A configuration file or option is invalid (unknown key, wrong type, bad value)."""


class ModelError(MedsegError):
    """A model or checkpoint cannot be built, loaded or used as asked."""


class ExportError(MedsegError):
    """An output (DICOM-SEG, RTSTRUCT, NIfTI, report) cannot be written as asked."""
