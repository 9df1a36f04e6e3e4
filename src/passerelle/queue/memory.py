"""In-memory journal for unit tests: the same contract as the SQLite one, nothing durable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from passerelle.queue.model import (
    BLOCKING_STATES,
    AppendResult,
    Event,
    Inbound,
    Query,
    RegistryEntry,
    Row,
    SeriesEntry,
    Settlement,
    State,
)


class _Lane:
    __slots__ = ("due_at", "head_id", "lease_until")

    def __init__(self, head_id: int, due_at: datetime | None) -> None:
        self.head_id = head_id
        self.due_at = due_at
        self.lease_until: datetime | None = None


class MemoryJournal:
    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self.acks: dict[int, bytes] = {}
        self.hashes: dict[int, str] = {}
        self.dedup: dict[str, int] = {}
        self.lanes: dict[str, _Lane] = {}
        self._events: list[Event] = []
        self.registry: dict[str, RegistryEntry] = {}
        self.series: dict[str, SeriesEntry] = {}
        self.patient_map: dict[tuple[str, str], tuple[str, str]] = {}
        self._next_id = 1
        self.fail_appends = False  # tests flip this to simulate a storage failure

    async def open(self) -> None:
        return None

    def background_tasks(self) -> Sequence[asyncio.Task[None]]:
        return ()

    async def close(self) -> None:
        return None

    async def append(self, items: Sequence[Inbound]) -> list[AppendResult]:
        from passerelle.errors import QueueUnavailableError

        if self.fail_appends:
            raise QueueUnavailableError("simulated storage failure")
        now = datetime.now(UTC)
        out = []
        for item in items:
            if item.dedup_key and item.dedup_key in self.dedup:
                rid = self.dedup[item.dedup_key]
                same = self.hashes[rid] == item.content_hash
                out.append(AppendResult(row_id=rid, duplicate=same, conflict=not same, stored_ack=self.acks[rid]))
                continue
            rid = self._next_id
            self._next_id += 1
            lane = item.lane or f"row:{uuid.uuid4().hex}"
            self.rows[rid] = Row(
                id=rid, raw=item.raw, channel=item.channel, sender=item.sender, kind=item.kind,
                message_id=item.message_id, dedup_key=item.dedup_key, lane=lane, state=item.state,
                detail=item.detail, attempts=0, received_at=now,
                next_due=now if item.state is State.ACCEPTED else None, updated_at=now,
            )  # fmt: skip
            self.acks[rid] = item.ack
            self.hashes[rid] = item.content_hash
            self._events.append(
                Event(rid, now, "received" if item.state is State.ACCEPTED else "rejected", item.detail)
            )
            if item.state is State.ACCEPTED:
                if item.dedup_key:
                    self.dedup[item.dedup_key] = rid
                if lane not in self.lanes:
                    self.lanes[lane] = _Lane(rid, now)
            out.append(AppendResult(row_id=rid))
        return out

    async def claim(self, worker: str, limit: int, lease_seconds: float, now: datetime) -> list[Row]:
        from datetime import timedelta

        due = [
            (lane.due_at, name)
            for name, lane in self.lanes.items()
            if lane.due_at is not None and lane.due_at <= now and (lane.lease_until is None or lane.lease_until <= now)
        ]
        out = []
        for _, name in sorted(due)[:limit]:
            lane = self.lanes[name]
            lane.lease_until = now + timedelta(seconds=lease_seconds)
            out.append(self.rows[lane.head_id])
        return out

    async def settle(self, row_id: int, settlement: Settlement, now: datetime) -> None:
        row = self.rows.get(row_id)
        if row is None:
            return
        s = settlement
        counted = s.state in (State.DELIVERED, State.RETRY, State.DEAD)
        self.rows[row_id] = replace(
            row, state=s.state, detail=s.detail, attempts=row.attempts + (1 if counted else 0),
            next_due=s.next_due, updated_at=now, document_id=s.document_id or row.document_id,
            patient_id=s.patient_id or row.patient_id,
        )  # fmt: skip
        self._events.extend(s.events)
        lane = self.lanes.get(row.lane)
        if lane is None or lane.head_id != row_id:
            return
        lane.lease_until = None
        if s.state in (State.RETRY, State.PARKED):
            lane.due_at = s.next_due or now
        elif s.state is State.DEAD:
            lane.due_at = None
        else:
            self._advance(row.lane, now)

    def _advance(self, name: str, now: datetime) -> None:
        pending = sorted(r.id for r in self.rows.values() if r.lane == name and r.state in BLOCKING_STATES)
        if not pending:
            del self.lanes[name]
            return
        head = self.rows[pending[0]]
        lane = self.lanes[name]
        lane.head_id = head.id
        if head.state is State.DEAD:
            lane.due_at = None
        elif head.state is State.ACCEPTED or head.next_due is None:
            lane.due_at = now
        else:
            lane.due_at = head.next_due

    async def requeue(self, row_id: int, now: datetime, detail: str) -> bool:
        row = self.rows.get(row_id)
        if row is None or row.state not in (State.DEAD, State.REFUSED, State.PARKED):
            return False
        self.rows[row_id] = replace(row, state=State.ACCEPTED, attempts=0, next_due=now, deadline=None, detail=detail)
        self._events.append(Event(row_id, now, "replay", detail))
        lane = self.lanes.get(row.lane)
        if lane is None:
            self.lanes[row.lane] = _Lane(row_id, now)
        elif lane.head_id >= row_id:
            lane.head_id, lane.due_at, lane.lease_until = row_id, now, None
        return True

    async def set_deadline(self, row_id: int, deadline: datetime) -> None:
        row = self.rows[row_id]
        if row.deadline is None:
            self.rows[row_id] = replace(row, deadline=deadline)

    async def get(self, row_id: int) -> Row | None:
        return self.rows.get(row_id)

    async def find(self, query: Query) -> list[Row]:
        rows = sorted(self.rows.values(), key=lambda r: -r.id)
        out = []
        for r in rows:
            if query.states and r.state not in query.states:
                continue
            if query.sender and r.sender != query.sender:
                continue
            if query.patient_id and r.patient_id != query.patient_id:
                continue
            if query.document_id and r.document_id != query.document_id:
                continue
            if query.since and r.received_at < query.since:
                continue
            if query.until and r.received_at >= query.until:
                continue
            if query.before_id is not None and r.id >= query.before_id:
                continue
            out.append(r)
        return out[: max(1, min(query.limit, 1000))]

    async def events(self, row_id: int) -> list[Event]:
        return [e for e in self._events if e.row_id == row_id]

    async def add_events(self, events: Sequence[Event]) -> None:
        self._events.extend(events)

    async def counts(self) -> dict[State, int]:
        out = dict.fromkeys(State, 0)
        for r in self.rows.values():
            out[r.state] += 1
        return out

    async def oldest_pending(self) -> datetime | None:
        times = [r.received_at for r in self.rows.values() if r.state in (State.ACCEPTED, State.RETRY, State.PARKED)]
        return min(times) if times else None

    async def registry_get(self, ins: str) -> RegistryEntry | None:
        return self.registry.get(ins)

    async def registry_put(self, entry: RegistryEntry) -> None:
        self.registry[entry.ins] = entry

    async def series_get(self, series_key: str) -> SeriesEntry | None:
        return self.series.get(series_key)

    async def series_put(self, entry: SeriesEntry, now: datetime) -> None:
        self.series[entry.series_key] = entry

    async def patient_map_get(self, sender: str, local_id: str) -> tuple[str, str] | None:
        return self.patient_map.get((sender, local_id))

    async def patient_map_put(self, sender: str, local_id: str, ins: str, ins_oid: str) -> None:
        self.patient_map[(sender, local_id)] = (ins, ins_oid)
