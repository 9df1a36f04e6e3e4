"""The audit store contract: append-only storage of :class:`~passerelle.observability.audit.AuditRecord`.

Backends: :mod:`passerelle.queue.audit_sqlite` (same database file as the SQLite journal, its own table
and migration), :mod:`passerelle.queue.audit_postgres` (psycopg 3) and :mod:`passerelle.queue.audit_memory`
(tests). All pass the same contract suite (tests/integration/test_audit_store_contract.py).

Append-only: there is no update or delete method, and the SQL backends refuse ``UPDATE``/``DELETE`` on
the table with triggers, so a bug or a hand-typed statement cannot rewrite history. Retention (if a site
needs one) is an operator procedure on the database, not an API.

This module imports the record model from ``observability`` (a leaf area), never the reverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from passerelle.observability.audit import AuditAction, AuditRecord

#: Largest page a query may return.
MAX_QUERY_LIMIT = 10_000


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


class AuditStore(Protocol):
    """Append-only audit storage. All methods may raise ``QueueUnavailableError``."""

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
