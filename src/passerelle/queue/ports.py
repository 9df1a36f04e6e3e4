"""The journal's ports: one small Protocol per user, each at most eight methods.

Every backend (:mod:`.sqlite`, :mod:`.postgres`, :mod:`.memory`) implements all of them, and one
contract suite per port runs against the three (``tests/integration/journal_contract/``). A consumer
declares the narrowest port it needs, so what it can do to the journal is visible in its signature: the
intake can only append, the browser can only read, only the admin port replays, only retention purges.
The whole contract is described in docs/journal.md.

Commit semantics: :meth:`IntakeJournal.append` returns only once the rows it wrote are durable (SQLite
WAL with ``synchronous=FULL``, PostgreSQL commit). Intake replies positively only after it returns.
Per-patient order: each row belongs to a *lane* (the patient's ordering key); at most one row per lane
is claimed at a time, always the lowest pending id, so a retrying, parked or dead head holds back only
its own lane. Every method may raise :class:`~passerelle.errors.QueueUnavailableError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

# Relative: the package's __init__ imports this module, so it does not import the package back.
from .model import Activity, AppendResult, Event, Inbound, Query, RegistryEntry, Row, SeriesEntry, Settlement, State


class Lifecycle(Protocol):
    """Opening and closing a backend (owned by the composition root)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def background_tasks(self) -> Sequence[asyncio.Task[None]]:
        """The tasks the backend runs while open (e.g. the SQLite group committer).

        The composition root's supervisor watches them: one that ends while the backend is open means
        intake can no longer commit, and the gateway turns "not ready" and stops.
        """
        ...

    async def check_writable(self) -> None:
        """Raise :class:`~passerelle.errors.QueueUnavailableError` (with a PHI-free reason) unless a
        write could commit now. Cheap enough to call every few seconds; ``/readyz`` reports it."""
        ...


class IntakeJournal(Protocol):
    """What every listener needs: durable append with deduplication."""

    async def append(self, items: Sequence[Inbound]) -> list[AppendResult]:
        """Store items durably, deduplicating on ``dedup_key``; returns once committed.

        Only an ACCEPTED item enters the dedup register (a rejected one is stored with no key, so a
        corrected resend is welcome); a key already held answers ``duplicate`` (same ``content_hash``,
        the first ``ack`` replayed) or ``conflict``, and writes nothing. A rejected item keeps at most
        its first :data:`~passerelle.queue.model.REJECTED_PAYLOAD_LIMIT` bytes; every row records the
        size and SHA-256 of the whole message.
        """
        ...


class DispatchJournal(Protocol):
    """What the dispatch worker needs: claim lane heads, record their journey, settle them.

    Leases: a claim leases its lanes to ``worker`` for ``lease_seconds``; a lease that expires comes
    back. A claim need not be durable (a lost claim only makes its lane claimable again); a
    settlement is, once the call returns. :meth:`heartbeat` gives back, before their lease expires,
    the claims of workers that are gone.
    """

    async def claim(self, worker: str, limit: int, lease_seconds: float, now: datetime) -> list[Row]:
        """Lease up to ``limit`` lane heads that are due, oldest due first."""
        ...

    async def settle(self, row_id: int, settlement: Settlement, now: datetime) -> None:
        """Record the outcome of a claimed row and release its lane (durable once it returns)."""
        ...

    async def settle_many(self, settlements: Sequence[tuple[int, Settlement]], now: datetime) -> None:
        """:meth:`settle` for several rows (distinct lanes) in one transaction: all or none are recorded."""
        ...

    async def heartbeat(self, worker: str, now: datetime, dead_after_s: float) -> int:
        """``worker`` is alive at ``now``; returns how many lanes claimed by gone workers were released.

        A worker is gone when its last heartbeat is older than ``dead_after_s``, or when it never
        heartbeated on this journal while this process has been running it: PostgreSQL (several
        instances) keeps the heartbeats in the database, so a dead instance's claims come back within
        ``dead_after_s`` plus one heartbeat of a live one; SQLite (one instance) gives the previous
        process's claims back at the first heartbeat, once this process holds the journal's dispatch
        lock (a second process dispatching from the same file releases nothing).
        """
        ...

    async def set_deadline(self, row_id: int, deadline: datetime) -> None:
        """Fix the delivery deadline of a row (set at its first delivery attempt)."""
        ...

    async def events(self, row_id: int) -> list[Event]: ...

    async def add_events(self, events: Sequence[Event]) -> None: ...


class BrowserJournal(Protocol):
    """Read-only access for the message browser, the gauges and the console."""

    async def get(self, row_id: int) -> Row | None: ...

    async def find(self, query: Query) -> list[Row]:
        """One keyset page (see :class:`~passerelle.queue.model.Query`), newest first. Paging by id keeps
        every page as cheap as the first, whatever the journal's size (docs/journal.md, ADR 0025)."""
        ...

    async def events(self, row_id: int) -> list[Event]: ...

    async def counts(self) -> dict[State, int]: ...

    async def oldest_pending(self) -> datetime | None: ...

    async def activity(self, since: datetime) -> Activity:
        """Rows received since ``since``, and rows delivered (settled as delivered) since then."""
        ...


class AdminJournal(BrowserJournal, Protocol):
    """The browser's reads plus replay (operators with the right role only)."""

    async def requeue(self, row_id: int, now: datetime, detail: str) -> bool:
        """Put a dead/refused/parked row back to ACCEPTED (replay). False if the row cannot be replayed
        (another state, or its payload was purged)."""
        ...

    async def add_events(self, events: Sequence[Event]) -> None: ...


class ReferenceStore(Protocol):
    """Small reference tables kept beside the journal: consent registry, document series, patient map."""

    async def registry_get(self, ins: str) -> RegistryEntry | None: ...

    async def registry_put(self, entry: RegistryEntry) -> None: ...

    async def series_get(self, series_key: str) -> SeriesEntry | None: ...

    async def series_put(self, entry: SeriesEntry, now: datetime) -> None: ...

    async def patient_map_get(self, sender: str, local_id: str) -> tuple[str, str] | None: ...

    async def patient_map_put(self, sender: str, local_id: str, ins: str, ins_oid: str) -> None: ...


class RetentionJournal(Protocol):
    """What the retention runner (:func:`passerelle.queue.retention.purge_once`) needs.

    Only rows in :data:`~passerelle.queue.model.FINAL_STATES` are ever touched (a ``ValueError`` for
    any other state): pending and dead rows are never purged. Each call is one short transaction of at
    most ``limit`` rows, so intake is never held for long. "Settled before" compares the row's
    ``updated_at`` (when it reached its state; a rejected row's reception).
    """

    async def payloads_due(self, state: State, settled_before: datetime) -> int:
        """How many rows in ``state`` settled before that time still hold their payload (dry run)."""
        ...

    async def purge_payloads(self, state: State, settled_before: datetime, limit: int, now: datetime) -> int:
        """Empty the payload of up to ``limit`` such rows (``payload_purged`` from then on; size and
        SHA-256 kept); returns how many."""
        ...

    async def records_due(self, settled_before: datetime) -> int:
        """How many final rows settled before that time retention would delete (dry run)."""
        ...

    async def delete_records(self, settled_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` such rows with their events and the dedup keys they hold; returns how many."""
        ...

    async def reclaim_space(self, max_pages: int) -> int:
        """Give up to ``max_pages`` freed pages back to the file system (SQLite incremental vacuum;
        0 where the server does it, PostgreSQL's autovacuum). Returns the pages released."""
        ...


class Journal(Lifecycle, IntakeJournal, DispatchJournal, AdminJournal, ReferenceStore, RetentionJournal, Protocol):
    """A whole backend, as the composition root holds it; everybody else takes one of the ports above."""
