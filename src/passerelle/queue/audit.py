"""The audit store contract: append-only storage of :class:`~passerelle.observability.audit.AuditRecord`.

Backends: :mod:`passerelle.queue.audit_sqlite` (same database file as the SQLite journal, its own table
and migration), :mod:`passerelle.queue.audit_postgres` (psycopg 3) and :mod:`passerelle.queue.audit_memory`
(tests). All pass the same contract suite (tests/integration/test_audit_store_contract.py).

Append-only: there is no update or delete method, and the SQL backends refuse ``UPDATE`` on the table
and ``DELETE`` of any record younger than the *expiry horizon* with triggers, so a bug or a hand-typed
statement cannot rewrite history. The one way out is retention (:class:`AuditRetention`): the horizon
moves only to a time at least :data:`FLOOR_DAYS` days before the database's own clock (a trigger checks
it), then the records older than it may be deleted. docs/journal.md and ADR 0016 explain the design.

This module imports the record model from ``observability`` (a leaf area), never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from passerelle.observability.audit import AuditAction, AuditOutcome, AuditRecord

#: Largest page a query may return.
MAX_QUERY_LIMIT = 10_000
#: Audit records stay at least this long whatever retention asks (the floor is in the database, set by
#: the audit migration 2; lowering it is a deliberate database change, not a setting).
FLOOR_DAYS = 400
#: Stored columns of a record, in :func:`record_from_row`'s order (the time column is named per backend).
COLUMNS = ("id", "{at}", "action", "outcome", "reason", "actor", "row_id", "document_id", "patient_id",
           "patient_oid", "detail")  # fmt: skip


@dataclass(frozen=True)
class AuditQuery:
    """Filters (all optional, combined with AND); results in append order (by id), ``after_id`` pages."""

    since: datetime | None = None  # at >= since
    until: datetime | None = None  # at < until
    document_id: str = ""
    patient_id: str = ""
    action: AuditAction | None = None
    actor: str = ""
    after_id: int = 0
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be within 1..{MAX_QUERY_LIMIT}")
        for value in (self.since, self.until):
            if value is not None and value.tzinfo is None:
                raise ValueError("query times must be timezone-aware")


class AuditRetention(Protocol):
    """Expiry of old records (the retention runner, ``passerelle.queue.retention``). All methods may
    raise ``QueueUnavailableError``.

    The effective cutoff is the earlier of ``before`` and the database's clock minus :data:`FLOOR_DAYS`:
    a record younger than the floor is never expired, whatever the caller's clock or settings say.
    """

    async def expirable(self, before: datetime) -> int:
        """How many records :meth:`expire` would remove for ``before`` (dry run)."""
        ...

    async def expire(self, before: datetime, limit: int) -> int:
        """Move the horizon to the effective cutoff, remove up to ``limit`` records older than it (oldest
        first, one short transaction); returns how many."""
        ...


class AuditStore(AuditRetention, Protocol):
    """Append-only audit storage (and the retention's expiry, above). All methods may raise
    ``QueueUnavailableError``."""

    async def open(self) -> None:
        """Create or migrate the audit table. Idempotent."""
        ...

    async def close(self) -> None:
        """Release the connection. Idempotent."""
        ...

    async def append(self, records: Sequence[AuditRecord]) -> list[int]:
        """Store ``records`` in one transaction; returns their new ids (increasing) once committed."""
        ...

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        """Records matching ``query``, ordered by id."""
        ...


def record_from_row(row: Sequence[Any], at: Callable[[Any], datetime]) -> AuditRecord:
    """An :class:`AuditRecord` from a stored row of :data:`COLUMNS`; ``at`` converts the stored time."""
    return AuditRecord(
        id=row[0], at=at(row[1]), action=AuditAction(row[2]), outcome=AuditOutcome(row[3]), reason=row[4],
        actor=row[5], row_id=row[6], document_id=row[7], patient_id=row[8], patient_oid=row[9], detail=row[10],
    )  # fmt: skip


def record_values(record: AuditRecord, at: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """The values stored for ``record`` (:data:`COLUMNS` without the id)."""
    r = record
    return (at(r.at), r.action.value, r.outcome.value, r.reason, r.actor, r.row_id, r.document_id,
            r.patient_id, r.patient_oid, r.detail)  # fmt: skip


def filters(query: AuditQuery, at_column: str, at: Callable[[datetime], Any], mark: str) -> tuple[str, list[Any]]:
    """The SQL condition selecting what ``query`` asks (``mark``: the placeholder), and its parameters
    followed by the page size."""
    where = [f"id > {mark}"]
    params: list[Any] = [query.after_id]
    for op, moment in ((">=", query.since), ("<", query.until)):
        if moment is not None:
            where.append(f"{at_column} {op} {mark}")
            params.append(at(moment))
    for column, value in (
        ("document_id", query.document_id),
        ("patient_id", query.patient_id),
        ("actor", query.actor),
        ("action", query.action.value if query.action else ""),
    ):
        if value:
            where.append(f"{column} = {mark}")
            params.append(value)
    return " AND ".join(where), [*params, query.limit]


def matches(record: AuditRecord, query: AuditQuery) -> bool:
    """The filter semantics every backend implements (used as is by the in-memory one)."""
    return (
        record.id > query.after_id
        and (query.since is None or record.at >= query.since)
        and (query.until is None or record.at < query.until)
        and (not query.document_id or record.document_id == query.document_id)
        and (not query.patient_id or record.patient_id == query.patient_id)
        and (query.action is None or record.action == query.action)
        and (not query.actor or record.actor == query.actor)
    )
