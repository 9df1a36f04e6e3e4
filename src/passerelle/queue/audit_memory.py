"""In-memory audit store (tests, demos). Same contract as the SQL backends; nothing survives a restart."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from passerelle.observability.audit import AuditRecord
from passerelle.queue.audit import FLOOR_DAYS, AuditQuery, matches


class MemoryAuditStore:
    def __init__(self) -> None:
        self._records: list[AuditRecord] = []
        self._last_id = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def append(self, records: Sequence[AuditRecord]) -> list[int]:
        ids = []
        for record in records:
            self._last_id += 1
            stored = dataclasses.replace(record, id=self._last_id)
            self._records.append(stored)
            ids.append(stored.id)
        return ids

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        return [r for r in self._records if matches(r, query)][: query.limit]

    @staticmethod
    def _cutoff(before: datetime) -> datetime:
        return min(before, datetime.now(UTC) - timedelta(days=FLOOR_DAYS))

    async def expirable(self, before: datetime) -> int:
        cutoff = self._cutoff(before)
        return sum(1 for r in self._records if r.at < cutoff)

    async def expire(self, before: datetime, limit: int) -> int:
        cutoff = self._cutoff(before)
        gone = {r.id for r in sorted((r for r in self._records if r.at < cutoff), key=lambda r: r.at)[:limit]}
        self._records = [r for r in self._records if r.id not in gone]
        return len(gone)
