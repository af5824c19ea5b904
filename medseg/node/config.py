"""Configuration of the DICOM node: a frozen dataclass loaded from YAML (unknown keys refused).

Example (``pipelines/node.yaml``)::

    ae_title: MEDSEG
    host: 0.0.0.0
    port: 11112
    output_dir: node_output
    quiet_time_s: 5
    callers:
      - {ae_title: ORTHANC, host: 127.0.0.1, port: 4242}
    destinations: []
    send_to_sender: true
    retry: {initial_s: 5, max_s: 300, give_up_after_s: 86400}
    contour: {model: hn_oar, formats: [nifti, seg, rtstruct]}
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.config import checked_mapping
from medseg.contour.config import ContourConfig
from medseg.errors import ConfigError

__all__ = [
    "Caller",
    "Destination",
    "NodeConfig",
    "RetryPolicy",
    "check_ae_title",
    "load_node_config",
    "parse_address",
]

#: What the node can send back (output name in a study folder of the contour engine).
SENDABLE = ("rtstruct", "seg")

_AE_CHARS = re.compile(r"^[\x20-\x5b\x5d-\x7e]*$")  # default character repertoire, no backslash


def check_ae_title(value: Any, what: str) -> str:
    """Return ``value`` as a valid DICOM AE title (1-16 characters, no backslash/control).

    Examples
    --------
    >>> check_ae_title("MEDSEG", "ae_title")
    'MEDSEG'
    >>> check_ae_title("A" * 17, "ae_title")
    Traceback (most recent call last):
    ...
    medseg.errors.ConfigError: ae_title: 'AAAAAAAAAAAAAAAAA' is 17 characters long; a DICOM AE \
title has 1 to 16 characters (letters, digits, spaces, no backslash).
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what}: give an AE title (1 to 16 characters), got {value!r}.")
    title = value.strip()
    if len(title) > 16 or not _AE_CHARS.match(title):
        reason = f"is {len(title)} characters long" if len(title) > 16 else "has bad characters"
        raise ConfigError(
            f"{what}: {title!r} {reason}; a DICOM AE title has 1 to 16 characters (letters, "
            "digits, spaces, no backslash)."
        )
    return title


def _check_port(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{what}: a TCP port is an integer 1..65535, got {value!r}.")
    return value


def _check_host(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ConfigError(f"{what}: give a host name or IP address, got {value!r}.")
    return value.strip()


@dataclass(frozen=True)
class Destination:
    """A DICOM peer the node sends results to: ``AE@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "ae_title"))
        object.__setattr__(self, "host", _check_host(self.host, f"{self.ae_title}: host"))
        object.__setattr__(self, "port", _check_port(self.port, f"{self.ae_title}: port"))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Caller:
    """A calling AE allowed to send to the node.

    Parameters
    ----------
    ae_title
        The Calling AE Title it uses.
    host
        IP address or host name it connects from (compared with the peer's address, names are
        resolved once when the node starts); ``"*"`` accepts any host (not recommended).
    port
        Its own Storage SCP port, where results go back when ``send_to_sender`` is on; ``None``
        when it only sends.
    """

    ae_title: str
    host: str = "*"
    port: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "callers: ae_title"))
        object.__setattr__(self, "host", _check_host(self.host, f"caller {self.ae_title}: host"))
        if self.port is not None:
            _check_port(self.port, f"caller {self.ae_title}: port")

    def destination(self) -> Destination | None:
        """Where results go back to this caller (``None`` without a port or a host)."""
        if self.port is None or self.host == "*":
            return None
        return Destination(self.ae_title, self.host, self.port)


@dataclass(frozen=True)
class RetryPolicy:
    """Send retries: delay ``initial_s`` doubling per failed attempt up to ``max_s``; a result
    not delivered ``give_up_after_s`` after its first attempt is marked ``failed``.

    Examples
    --------
    >>> [RetryPolicy(initial_s=2, max_s=10).delay_s(n) for n in (1, 2, 3, 4, 5)]
    [2.0, 4.0, 8.0, 10.0, 10.0]
    """

    initial_s: float = 5.0
    max_s: float = 300.0
    give_up_after_s: float = 86400.0

    def __post_init__(self) -> None:
        for name in ("initial_s", "max_s", "give_up_after_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise ConfigError(f"retry.{name} must be a number > 0 (seconds); got {v!r}.")
        if self.max_s < self.initial_s:
            raise ConfigError(
                f"retry.max_s ({self.max_s}) must be ≥ retry.initial_s ({self.initial_s})."
            )

    def delay_s(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1, 2, ...)."""
        return float(min(self.max_s, self.initial_s * 2.0 ** max(0, failures - 1)))


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``medseg listen`` needs.

    Parameters
    ----------
    ae_title, host, port
        The node's own AE title, the address it listens on (``0.0.0.0``: every interface) and
        its port.
    output_dir
        Holds ``spool/`` (received instances) and ``contour/``, the contour engine's batch
        folder (``studies/<key>/``, ``manifest.sqlite`` with the node's ``node_studies`` and
        ``sends`` tables beside the engine's).
    quiet_time_s
        A study is complete when no instance of it arrived for this long (any association).
    callers
        The calling AEs allowed to associate (AE title + host); everyone else is refused.
    destinations
        Where results are sent besides (or instead of) the sender.
    send_to_sender
        Send results back to the caller that sent the study (its ``port`` must be configured).
    send
        Which outputs to send: ``rtstruct``, ``seg``.
    max_associations
        Most simultaneous associations; more are refused (transient, local limit exceeded).
    max_instance_mb
        Largest instance accepted (status Out of Resources beyond it).
    retry
        Send retries (:class:`RetryPolicy`).
    scheduler
        Address or scheduler file of an existing Dask cluster; ``None``: the node starts its
        own LocalCluster (``contour.cluster``) and keeps it warm.
    contour
        The contour engine's configuration (:class:`medseg.contour.ContourConfig`).
    """

    output_dir: Path
    ae_title: str = "MEDSEG"
    host: str = "0.0.0.0"
    port: int = 11112
    quiet_time_s: float = 5.0
    callers: tuple[Caller, ...] = ()
    destinations: tuple[Destination, ...] = ()
    send_to_sender: bool = True
    send: tuple[str, ...] = SENDABLE
    max_associations: int = 10
    max_instance_mb: float = 1024.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    scheduler: str | None = None
    contour: ContourConfig = field(default_factory=ContourConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "ae_title"))
        object.__setattr__(self, "host", _check_host(self.host, "host"))
        _check_port(self.port, "port")
        if not isinstance(self.quiet_time_s, int | float) or self.quiet_time_s <= 0:
            raise ConfigError(f"quiet_time_s must be > 0 seconds; got {self.quiet_time_s!r}.")
        if not self.callers:
            raise ConfigError(
                "callers: no calling AE is allowed, so every association would be refused; list "
                "the PACS/planning systems that send CTs, e.g. "
                "callers: [{ae_title: ORTHANC, host: 127.0.0.1, port: 4242}]."
            )
        bad = [s for s in self.send if s not in SENDABLE]
        if bad or not self.send:
            raise ConfigError(f"send: choose from {list(SENDABLE)}; got {list(self.send)}.")
        missing = [s for s in self.send if s not in self.contour.formats]
        if missing:
            raise ConfigError(
                f"send: {missing} are not made by the contour engine (contour.formats "
                f"{list(self.contour.formats)}); add them to contour.formats."
            )
        if self.send_to_sender:
            no_port = [c.ae_title for c in self.callers if c.destination() is None]
            if no_port and not self.destinations:
                raise ConfigError(
                    f"callers {no_port}: send_to_sender is on but these callers have no port "
                    "(or host '*'), so results could not go back; give their Storage SCP port, "
                    "or add destinations, or set send_to_sender: false."
                )
        elif not self.destinations:
            raise ConfigError(
                "send_to_sender is false and no destinations are given: results would go "
                "nowhere. Add destinations: [{ae_title: ..., host: ..., port: ...}]."
            )
        for name in ("max_associations",):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer ≥ 1; got {v!r}.")
        if not isinstance(self.max_instance_mb, int | float) or self.max_instance_mb <= 0:
            raise ConfigError(f"max_instance_mb must be > 0; got {self.max_instance_mb!r}.")

    @property
    def spool_dir(self) -> Path:
        """``output_dir/spool``: received instances, one folder per study (UID hash)."""
        return self.output_dir / "spool"

    @property
    def batch_dir(self) -> Path:
        """``output_dir/contour``: the contour engine's batch folder (``studies/<key>/``,
        ``manifest.sqlite``), as ``medseg contour -o`` would make it."""
        return self.output_dir / "contour"

    def caller(self, ae_title: str, host: str) -> Caller | None:
        """The configured caller matching a calling AE title and peer address, or ``None``."""
        title = ae_title.strip()
        for c in self.callers:
            if c.ae_title == title and (c.host == "*" or _same_host(c.host, host)):
                return c
        return None

    def destinations_for(self, caller: Caller | None) -> list[Destination]:
        """Where a study sent by ``caller`` goes: the sender (if on) then ``destinations``."""
        out: list[Destination] = []
        if self.send_to_sender and caller is not None:
            d = caller.destination()
            if d is not None:
                out.append(d)
        out.extend(d for d in self.destinations if d not in out)
        return out

    @classmethod
    def from_dict(cls, data: Any, *, what: str = "node config") -> NodeConfig:
        """Build from a parsed YAML mapping; unknown keys anywhere raise ConfigError."""
        top = checked_mapping(cls, data if data is not None else {}, what=what)
        if "output_dir" not in top or top["output_dir"] in (None, ""):
            raise ConfigError(f"{what}: output_dir is required (spool, studies and manifest).")
        try:
            if "callers" in top:
                top["callers"] = tuple(
                    Caller(**checked_mapping(Caller, c, what=f"{what}: callers[{i}]"))
                    for i, c in enumerate(_as_list(top["callers"], f"{what}: callers"))
                )
            if "destinations" in top:
                top["destinations"] = tuple(
                    Destination(**checked_mapping(Destination, d, what=f"{what}: destinations"))
                    for d in _as_list(top["destinations"], f"{what}: destinations")
                )
            if "retry" in top:
                top["retry"] = RetryPolicy(
                    **checked_mapping(RetryPolicy, top["retry"] or {}, what=f"{what}: retry")
                )
            if "send" in top:
                top["send"] = tuple(str(s).lower() for s in _as_list(top["send"], "send"))
            top["contour"] = ContourConfig.from_dict(
                top.get("contour") or {}, what=f"{what}: contour"
            )
            return cls(**top)
        except TypeError as exc:
            raise ConfigError(f"{what}: {exc}") from exc


def _as_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{what}: expected a list, got {type(value).__name__}.")
    return list(value)


def _same_host(configured: str, peer: str) -> bool:
    """True when the configured host (address or name) is the peer address."""
    if configured == peer:
        return True
    try:
        return ipaddress.ip_address(configured) == ipaddress.ip_address(peer)
    except ValueError:
        pass
    import socket

    try:
        infos = socket.getaddrinfo(configured, None)
    except OSError:
        return False
    return any(info[4][0] == peer for info in infos)


_ADDRESS = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d{1,5})$")


def parse_address(text: str) -> Destination:
    """Parse ``AE@HOST:PORT`` (an IPv6 host in brackets).

    Examples
    --------
    >>> parse_address("ORTHANC@127.0.0.1:4242")
    Destination(ae_title='ORTHANC', host='127.0.0.1', port=4242)
    >>> parse_address("127.0.0.1:4242")
    Traceback (most recent call last):
    ...
    medseg.errors.ConfigError: address '127.0.0.1:4242': expected AE@HOST:PORT, e.g. \
ORTHANC@127.0.0.1:4242.
    """
    m = _ADDRESS.match(text.strip())
    ae = text.strip().split("@", 1)[0]
    if not m and "@" in text and len(ae) > 16:
        raise ConfigError(
            f"address {text!r}: the AE title {ae!r} is {len(ae)} characters long; DICOM allows "
            "at most 16."
        )
    if not m:
        raise ConfigError(f"address {text!r}: expected AE@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242.")
    host = m["host"].strip("[]")
    return Destination(m["ae"], host, int(m["port"]))


def load_node_config(
    path: str | os.PathLike[str], *, output_dir: str | os.PathLike[str] | None = None
) -> NodeConfig:
    """Read a YAML node config; ``output_dir`` (``-o``) replaces the file's.

    Raises
    ------
    ConfigError
        Unreadable file, invalid YAML, unknown keys or bad values (message names the file).
    """
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"config {p}: cannot be read ({exc.strerror}).") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {p}: invalid YAML ({exc}).") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {p}: expected a mapping of keys to values.")
    if output_dir is not None:
        data = {**data, "output_dir": os.fspath(output_dir)}
    return NodeConfig.from_dict(data, what=f"config {p}")
