"""In-memory journal for unit tests: the same contract as the SQL ones (every port), nothing durable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from passerelle.errors import QueueUnavailableError
from passerelle.queue import _rows, model
from passerelle.queue._rows import Stored
from passerelle.queue.model import BLOCKING_STATES, AppendResult, Event, Inbound, Row, State


class _Lane:
    __slots__ = ("due_at", "head_id", "lease_until", "worker")

    def __init__(self, head_id: int, due_at: datetime | None) -> None:
        self.head_id = head_id
        self.due_at = due_at
        self.lease_until: datetime | None = None
        self.worker = ""


def _matches(r: Row, query: model.Query) -> bool:
    """:meth:`MemoryJournal.find`'s filters: what ``_rows.query_filters`` asks the SQL backends."""
    return (
        (not query.states or r.state in query.states)
        and all(not want or got == want for got, want in _fields(r, query))
        and (query.since is None or r.received_at >= query.since)
        and (query.until is None or r.received_at < query.until)
        and (query.before_id is None or r.id < query.before_id)
        and (query.after_id is None or r.id > query.after_id)
    )


def _fields(r: Row, query: model.Query) -> tuple[tuple[str, str], ...]:
    return (
        (r.channel, query.channel),
        (r.sender, query.sender),
        (r.patient_id, query.patient_id),
        (r.document_id, query.document_id),
    )


class MemoryJournal:
    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self.acks: dict[int, bytes] = {}
        self.hashes: dict[int, str] = {}
        self.dedup: dict[str, int] = {}
        self.lanes: dict[str, _Lane] = {}
        self._events: list[Event] = []
        self.registry: dict[str, model.RegistryEntry] = {}
        self.series: dict[str, model.SeriesEntry] = {}
        self.patient_map: dict[tuple[str, str], tuple[str, str]] = {}
        self.heartbeats: dict[str, datetime] = {}
        self._next_id = 1
        self.fail_appends = False  # tests flip this to simulate a storage failure

    async def open(self) -> None:
        return None

    def background_tasks(self) -> Sequence[asyncio.Task[None]]:
        return ()

    async def close(self) -> None:
        return None

    async def check_writable(self) -> None:
        if self.fail_appends:
            raise QueueUnavailableError("simulated storage failure")

    async def append(self, items: Sequence[Inbound]) -> list[AppendResult]:
        if self.fail_appends:
            raise QueueUnavailableError("simulated storage failure")
        now = datetime.now(UTC)
        return [self._append_one(item, now) for item in items]

    def _append_one(self, item: Inbound, now: datetime) -> AppendResult:
        if item.dedup_key and item.dedup_key in self.dedup:
            rid = self.dedup[item.dedup_key]
            same = self.hashes[rid] == item.content_hash
            return AppendResult(row_id=rid, duplicate=same, conflict=not same, stored_ack=self.acks[rid])
        rid = self._next_id
        self._next_id += 1
        lane = item.lane or f"row:{uuid.uuid4().hex}"
        stored = Stored.of(item)
        accepted = item.state is State.ACCEPTED
        self.rows[rid] = Row(
            id=rid, raw=stored.raw, channel=item.channel, sender=item.sender, kind=item.kind,
            message_id=item.message_id, dedup_key=stored.dedup_key, lane=lane, state=item.state,
            detail=item.detail, attempts=0, received_at=now, next_due=now if accepted else None, updated_at=now,
            size=stored.size, sha256=stored.sha256,
        )  # fmt: skip
        self.acks[rid] = item.ack
        self.hashes[rid] = item.content_hash
        self._events.append(Event(rid, now, "received" if accepted else "rejected", item.detail))
        if accepted:
            if stored.dedup_key:
                self.dedup[stored.dedup_key] = rid
            if lane not in self.lanes:
                self.lanes[lane] = _Lane(rid, now)
        return AppendResult(row_id=rid)

    async def claim(self, worker: str, limit: int, lease_seconds: float, now: datetime) -> list[Row]:
        due = [
            (lane.due_at, name)
            for name, lane in self.lanes.items()
            if lane.due_at is not None and lane.due_at <= now and (lane.lease_until is None or lane.lease_until <= now)
        ]
        out = []
        for _, name in sorted(due)[:limit]:
            lane = self.lanes[name]
            lane.lease_until = now + timedelta(seconds=lease_seconds)
            lane.worker = worker
            out.append(self.rows[lane.head_id])
        return out

    async def heartbeat(self, worker: str, now: datetime, dead_after_s: float) -> int:
        self.heartbeats[worker] = now
        cutoff = now - timedelta(seconds=dead_after_s)
        released = 0
        for lane in self.lanes.values():
            seen = self.heartbeats.get(lane.worker)
            if (
                lane.lease_until is not None
                and lane.lease_until > now
                and lane.worker != worker
                and (seen is None or seen < cutoff)
            ):
                lane.lease_until, lane.worker = None, ""
                released += 1
        return released

    async def settle_many(self, settlements: Sequence[tuple[int, model.Settlement]], now: datetime) -> None:
        for row_id, settlement in settlements:
            await self.settle(row_id, settlement, now)

    async def settle(self, row_id: int, settlement: model.Settlement, now: datetime) -> None:
        row = self.rows.get(row_id)
        if row is None:
            return
        s = settlement
        self.rows[row_id] = replace(
            row, state=s.state, detail=s.detail, attempts=row.attempts + _rows.attempt_increment(s.state),
            next_due=s.next_due, updated_at=now, document_id=s.document_id or row.document_id,
            patient_id=s.patient_id or row.patient_id, deadline=row.deadline or s.deadline,
        )  # fmt: skip
        self._events.extend(s.events)
        lane = self.lanes.get(row.lane)
        if lane is None or lane.head_id != row_id:
            return
        lane.lease_until, lane.worker = None, ""
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
        lane.due_at = _rows.lane_due(head.state, head.next_due, now)

    async def requeue(self, row_id: int, now: datetime, detail: str) -> bool:
        row = self.rows.get(row_id)
        if row is None or row.state not in (State.DEAD, State.REFUSED, State.PARKED) or row.payload_purged:
            return False
        self.rows[row_id] = replace(
            row, state=State.ACCEPTED, attempts=0, next_due=now, deadline=None, detail=detail, updated_at=now
        )
        self._events.append(Event(row_id, now, "replay", detail))
        lane = self.lanes.get(row.lane)
        if lane is None:
            self.lanes[row.lane] = _Lane(row_id, now)
        elif lane.head_id >= row_id:
            lane.head_id, lane.due_at, lane.lease_until, lane.worker = row_id, now, None, ""
        return True

    async def set_deadline(self, row_id: int, deadline: datetime) -> None:
        row = self.rows[row_id]
        if row.deadline is None:
            self.rows[row_id] = replace(row, deadline=deadline)

    async def get(self, row_id: int) -> Row | None:
        return self.rows.get(row_id)

    async def find(self, query: model.Query) -> list[Row]:
        up = _rows.upward(query)
        found = [r for r in sorted(self.rows.values(), key=lambda r: r.id if up else -r.id) if _matches(r, query)]
        page = found[: _rows.page_size(query)]
        return page[::-1] if up else page

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
        times = [r.received_at for r in self.rows.values() if r.state in model.PENDING_STATES]
        return min(times) if times else None

    async def activity(self, since: datetime) -> model.Activity:
        rows = self.rows.values()
        received = sum(1 for r in rows if r.received_at >= since)
        delivered = sum(1 for r in rows if r.state is State.DELIVERED and r.updated_at >= since)
        return model.Activity(received, delivered)

    async def registry_get(self, ins: str) -> model.RegistryEntry | None:
        return self.registry.get(ins)

    async def registry_put(self, entry: model.RegistryEntry) -> None:
        self.registry[entry.ins] = entry

    async def series_get(self, series_key: str) -> model.SeriesEntry | None:
        return self.series.get(series_key)

    async def series_put(self, entry: model.SeriesEntry, now: datetime) -> None:
        self.series[entry.series_key] = entry

    async def patient_map_get(self, sender: str, local_id: str) -> tuple[str, str] | None:
        return self.patient_map.get((sender, local_id))

    async def patient_map_put(self, sender: str, local_id: str, ins: str, ins_oid: str) -> None:
        self.patient_map[(sender, local_id)] = (ins, ins_oid)

    # --- retention --------------------------------------------------------------------------------

    def _payload_due(self, state: State, before: datetime) -> list[Row]:
        _rows.final_state(state)
        due = [r for r in self.rows.values() if r.state is state and not r.payload_purged and r.updated_at < before]
        return sorted(due, key=lambda r: r.updated_at)

    def _records_due(self, before: datetime) -> list[Row]:
        due = [r for r in self.rows.values() if r.state in model.FINAL_STATES and r.updated_at < before]
        return sorted(due, key=lambda r: r.updated_at)

    async def payloads_due(self, state: State, settled_before: datetime) -> int:
        return len(self._payload_due(state, settled_before))

    async def purge_payloads(self, state: State, settled_before: datetime, limit: int, now: datetime) -> int:
        batch = self._payload_due(state, settled_before)[: max(0, limit)]
        for r in batch:
            self.rows[r.id] = replace(r, raw=b"", payload_purged=True)
        return len(batch)

    async def records_due(self, settled_before: datetime) -> int:
        return len(self._records_due(settled_before))

    async def delete_records(self, settled_before: datetime, limit: int) -> int:
        batch = {r.id: r for r in self._records_due(settled_before)[: max(0, limit)]}
        for rid, r in batch.items():
            del self.rows[rid], self.acks[rid], self.hashes[rid]
            if r.dedup_key and self.dedup.get(r.dedup_key) == rid:
                del self.dedup[r.dedup_key]
        self._events = [e for e in self._events if e.row_id not in batch]
        return len(batch)

    async def reclaim_space(self, max_pages: int) -> int:
        return 0
