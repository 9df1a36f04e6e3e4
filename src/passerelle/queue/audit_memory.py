"""In-memory audit store (tests, demos). Same contract as the SQL backends; nothing survives a restart."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from passerelle.observability.audit import AuditRecord
from passerelle.queue.audit import AuditQuery, matches


class MemoryAuditStore:
    def __init__(self) -> None:
        self._records: list[AuditRecord] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def append(self, records: Sequence[AuditRecord]) -> list[int]:
        ids = []
        for record in records:
            stored = dataclasses.replace(record, id=len(self._records) + 1)
            self._records.append(stored)
            ids.append(stored.id)
        return ids

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        return [r for r in self._records if matches(r, query)][: query.limit]
