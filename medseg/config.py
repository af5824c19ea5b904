"""Configuration as data: the one check every config dataclass uses when built from YAML/JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from medseg.errors import ConfigError, MedsegError

__all__ = ["checked_mapping"]


def checked_mapping(
    cls: type,
    data: Any,
    *,
    what: str,
    error: type[MedsegError] = ConfigError,
) -> dict[str, Any]:
    """Return ``data`` as a dict after checking it is a mapping of ``cls``'s dataclass fields.

    Parameters
    ----------
    cls
        A dataclass type whose field names are the allowed keys.
    data
        The parsed YAML/JSON value.
    what
        Names the config in the message (e.g. ``"metrics config"``, or a file path).
    error
        The :class:`~medseg.errors.MedsegError` subclass to raise.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Opt:
    ...     overlap: float = 0.5
    >>> checked_mapping(Opt, {"overlap": 0.25}, what="options")
    {'overlap': 0.25}
    >>> checked_mapping(Opt, {"overlpa": 0.25}, what="options")
    Traceback (most recent call last):
    ...
    medseg.errors.ConfigError: options: unknown keys ['overlpa']; known keys: ['overlap'].
    """
    if not isinstance(data, Mapping):
        raise error(f"{what}: expected a mapping of keys to values, got {type(data).__name__}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise error(f"{what}: unknown keys {unknown}; known keys: {sorted(known)}.")
    return dict(data)
