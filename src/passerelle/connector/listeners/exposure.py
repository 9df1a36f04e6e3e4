"""The bind rule (docs/security.md, ADR 0023): a listener on a non-loopback address speaks TLS, or its
settings say on purpose that it may not (``allow_plaintext_on_network: true``, warned at every start).

:func:`exposures` lists the HTTP and MLLP listeners of a configuration; :meth:`Exposure.problem` is the
one line ``check-config`` and ``run`` print when the rule is broken, :meth:`Exposure.warning` the line
logged when plain text on the network was allowed. :func:`guard` applies both where a listener is built.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from passerelle.connector.settings import Settings

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback address, or a name that resolves to loopback addresses only.

    The wildcard addresses (``0.0.0.0``, ``::``, empty) listen on every interface: not loopback. A name
    that does not resolve is not loopback either (the bind will fail anyway, with its own message)."""
    name = host.strip().strip("[]")
    if not name:
        return False
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in found}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%", 1)[0]).is_loopback for a in addresses)


class PlaintextExposureError(ValueError):
    """A listener would serve plain text on the network without ``allow_plaintext_on_network``."""


@dataclass(frozen=True)
class Exposure:
    """One listener's address and transport, as the rule sees it. ``group`` is its settings group."""

    group: str  # "http" | "mllp"
    host: str
    tls: bool
    allow_plaintext: bool

    @property
    def plaintext_on_network(self) -> bool:
        return not self.tls and not is_loopback(self.host)

    def problem(self) -> str | None:
        """One line naming the setting, or None when the rule holds."""
        if not self.plaintext_on_network or self.allow_plaintext:
            return None
        return (
            f"{self.group}.host: {self.host or '(every interface)'} is not a loopback address and {self.group} "
            f"has no TLS: configure {self.group}.tls, or set {self.group}.allow_plaintext_on_network: true "
            "on purpose (a trusted segment)"
        )

    def warning(self) -> str | None:
        """The line logged at every start when plain text on the network was allowed, else None."""
        if not (self.plaintext_on_network and self.allow_plaintext):
            return None
        return (
            f"{self.group} listener serves PLAIN TEXT on {self.host or '(every interface)'} "
            f"({self.group}.allow_plaintext_on_network: true): anyone on that network segment can read "
            "and alter what it carries"
        )


def http_exposure(settings: Settings) -> Exposure:
    http = settings.http
    return Exposure("http", http.host, http.tls is not None, http.allow_plaintext_on_network)


def mllp_exposure(settings: Settings) -> Exposure:
    mllp = settings.mllp
    return Exposure("mllp", mllp.host, mllp.tls.enabled, mllp.allow_plaintext_on_network)


def exposures(settings: Settings) -> list[Exposure]:
    """The HTTP listener and, when enabled, the MLLP listener of ``settings``."""
    return [http_exposure(settings), *([mllp_exposure(settings)] if settings.mllp.enabled else [])]


def guard(exposure: Exposure) -> None:
    """Where a listener is built: refuse a broken rule (:class:`PlaintextExposureError`), warn when
    plain text on the network was allowed."""
    problem = exposure.problem()
    if problem is not None:
        raise PlaintextExposureError(problem)
    warning = exposure.warning()
    if warning is not None:
        log.warning(warning, extra={"component": f"{exposure.group} listener"})
