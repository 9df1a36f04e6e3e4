"""Refusals in the audit trail, coalesced so that a scanner or a misconfigured client cannot flood it
(ADR 0030, docs/audit.md).

Every listener that refuses a peer before any business happens — a TLS handshake on the MLLP port, a
request without a valid identity on the HTTP port, a DICOM association from an unknown AE title —
records it through one :class:`RefusalLog` per gateway. A refusal is keyed by its :class:`Surface`, the
peer's address, its class (why: ``not_tls``, ``api missing_token``, ``calling_ae``...) and an optional
``tag`` (the SHA-256 fingerprint of a refused certificate), and by the minute it happened in:

* the first refusal of a key in a minute is written at once (``<class> first in minute <minute>``,
  followed by ``note``: the route, the calling AE title — never a credential);
* when the minute is over, one more record gives the total (``<class> count=N in minute <minute>``),
  only when more came;
* at most :data:`MAX_ADDRESSES` addresses are tracked per surface and minute; refusals from more share
  the actor ``<surface>:other-addresses``, so records and memory stay bounded under a distributed scan.

So a key costs at most two records a minute, whatever the rate. Metrics still count every refusal (the
listeners do that, it is cheap). :meth:`RefusalLog.tick` writes the totals of the minutes that are over;
:class:`~passerelle.connector.listeners.refusals.RefusalFlush` calls it each minute as a part of the
gateway's life (started before the listeners, stopped after them, writing the totals still open); a
listener built alone (tests, a tool) may own a log and its flush.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from passerelle.observability.audit import AuditTrail

log = logging.getLogger(__name__)

#: Most addresses tracked per surface and minute; refusals from more share ``<surface>:other-addresses``.
MAX_ADDRESSES = 64


@dataclass(frozen=True, slots=True)
class Surface:
    """Where refusals come from: the actor's prefix (``<name>:<address>``) and the audit record's fixed
    action, outcome and reason."""

    name: str
    action: str = "admin"
    outcome: str = "failure"
    reason: str = "access-refused"


def other_addresses(surface: Surface) -> str:
    """The actor shared by the refusals past :data:`MAX_ADDRESSES` addresses in a minute."""
    return f"{surface.name}:other-addresses"


#: (surface, actor, class, tag, minute)
_Key = tuple[Surface, str, str, str, int]


class RefusalLog:
    """The coalesced audit side of refusals (see the module). ``clock`` gives seconds since the epoch
    (the minute buckets); :meth:`flush` writes the totals of the minutes that are over."""

    def __init__(
        self, audit: AuditTrail, *, clock: Callable[[], float] = time.time, max_addresses: int = MAX_ADDRESSES
    ) -> None:
        self.audit, self.clock, self.max_addresses = audit, clock, max_addresses
        self._counts: dict[_Key, int] = {}
        # the addresses tracked, by surface and minute (each refusal costs O(1), floods included)
        self._tracked: dict[tuple[Surface, int], set[str]] = {}

    async def refused(self, surface: Surface, address: str, cls: str, *, tag: str = "", note: str = "") -> None:
        """One refusal from ``address``: recorded when it opens its minute (with ``note``), else counted."""
        minute = int(self.clock() // 60)
        await self.flush(before=minute)
        key = (surface, self._actor(surface, address, minute), cls, tag, minute)
        if key in self._counts:
            self._counts[key] += 1
            return
        self._counts[key] = 1
        await self._write(key, "first", note)

    async def flush(self, before: int | None = None) -> None:
        """Write the total of every minute before ``before`` (all of them when ``None``) that had more
        than its first refusal, and forget those minutes."""
        over = [t for t in self._tracked if before is None or t[1] < before]
        if not over:
            return
        for t in over:
            del self._tracked[t]
        # taken out before any write: a refusal arriving meanwhile never sees (nor writes) them twice
        done = [(k, self._counts.pop(k)) for k in list(self._counts) if before is None or k[4] < before]
        for key, count in done:
            if count > 1:
                await self._write(key, f"count={count}")

    async def tick(self) -> None:
        """Write the totals of the minutes that are over (the minute flush calls it)."""
        await self.flush(before=int(self.clock() // 60))

    def _actor(self, surface: Surface, address: str, minute: int) -> str:
        actor = f"{surface.name}:{address}"
        tracked = self._tracked.setdefault((surface, minute), set())
        if actor in tracked:
            return actor
        if len(tracked) < self.max_addresses:
            tracked.add(actor)
            return actor
        return other_addresses(surface)

    async def _write(self, key: _Key, what: str, note: str = "") -> None:
        surface, actor, cls, tag, minute = key
        at = datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%MZ")
        detail = f"{cls} {what} in minute {at}" + (f" {tag}" if tag else "") + (f": {note}" if note else "")
        try:
            await self.audit.record(
                action=surface.action, outcome=surface.outcome, reason=surface.reason, actor=actor, detail=detail[:200]
            )
        except Exception:  # noqa: BLE001 - the audit store failing must not break a listener
            log.warning("%s refusal from %s (%s) not recorded in the audit trail", surface.name, actor, cls)
