"""One contract suite for every journal backend: what the worker and the listeners rely on."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from passerelle.queue import Inbound, Query, Settlement, State
from passerelle.queue.memory import MemoryJournal
from passerelle.queue.sqlite import SQLiteJournal
from tests.support.pg import pg_schema

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def item(n: int, lane: str = "p1", *, body: bytes | None = None, state: State = State.ACCEPTED) -> Inbound:
    raw = body if body is not None else f"MSH|^~\\&|LAB|FAC|||||ORU^R01|{n}|P|2.5\r".encode()
    return Inbound(
        raw=raw, channel="mllp", sender="LAB^FAC", kind="oru", message_id=str(n), dedup_key=f"LAB^FAC^{n}",
        content_hash=hashlib.sha256(raw).hexdigest(), lane=lane, state=state, ack=f"ACK{n}".encode(),
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "memory", "postgres"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[object]:
    if request.param == "postgres":
        from passerelle.queue.postgres import PostgresJournal

        async with pg_schema() as (dsn, schema):
            pj = PostgresJournal(dsn, schema=schema)
            await pj.open()
            yield pj
            await pj.close()
        return
    j: object = SQLiteJournal(tmp_path / "journal.sqlite3") if request.param == "sqlite" else MemoryJournal()
    await j.open()  # type: ignore[attr-defined]
    yield j
    await j.close()  # type: ignore[attr-defined]


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_append_is_readable_and_counted(journal) -> None:
    [res] = await journal.append([item(1)])
    row = await journal.get(res.row_id)
    assert row is not None and row.state is State.ACCEPTED and row.raw.startswith(b"MSH|")
    assert (await journal.counts())[State.ACCEPTED] == 1
    assert await journal.oldest_pending() is not None


async def test_duplicate_same_bytes_replays_ack_and_writes_nothing(journal) -> None:
    [first] = await journal.append([item(7)])
    [again] = await journal.append([item(7)])
    assert again.duplicate and not again.conflict and again.row_id == first.row_id and again.stored_ack == b"ACK7"
    [clash] = await journal.append([item(7, body=b"MSH|other bytes")])
    assert clash.conflict and not clash.duplicate
    assert sum((await journal.counts()).values()) == 1


async def test_rejected_rows_are_kept_but_never_claimed(journal) -> None:
    [res] = await journal.append([item(1, state=State.REJECTED)])
    assert (await journal.get(res.row_id)).state is State.REJECTED
    assert await journal.claim("w", 10, 30, later(1)) == []


async def test_lane_order_one_head_at_a_time(journal) -> None:
    r = await journal.append([item(1, "p1"), item(2, "p1"), item(3, "p2")])
    claimed = await journal.claim("w", 10, 30, later(1))
    assert sorted(c.id for c in claimed) == [r[0].row_id, r[2].row_id]
    assert await journal.claim("w", 10, 30, later(1)) == []  # leased
    await journal.settle(r[0].row_id, Settlement(State.DELIVERED), later(1))
    nxt = await journal.claim("w", 10, 30, later(2))
    assert [c.id for c in nxt] == [r[1].row_id]


async def test_retry_holds_back_only_its_own_lane(journal) -> None:
    r = await journal.append([item(1, "p1"), item(2, "p1"), item(3, "p2")])
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(r[0].row_id, Settlement(State.RETRY, "503", next_due=later(60)), later(1))
    await journal.settle(r[2].row_id, Settlement(State.DELIVERED), later(1))
    assert await journal.claim("w", 10, 30, later(2)) == []  # p1 waits for its head, p2 is empty
    again = await journal.claim("w", 10, 30, later(61))
    assert [c.id for c in again] == [r[0].row_id] and again[0].attempts == 1


async def test_dead_head_blocks_lane_until_replayed(journal) -> None:
    r = await journal.append([item(1, "p1"), item(2, "p1")])
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(r[0].row_id, Settlement(State.DEAD, "deadline"), later(1))
    assert await journal.claim("w", 10, 30, later(5)) == []
    assert await journal.requeue(r[0].row_id, later(5), "operator replay")
    assert [c.id for c in await journal.claim("w", 10, 30, later(6))] == [r[0].row_id]
    assert not await journal.requeue(r[1].row_id, later(6), "not dead")


async def test_refused_moves_the_lane_on(journal) -> None:
    r = await journal.append([item(1, "p1"), item(2, "p1")])
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(r[0].row_id, Settlement(State.REFUSED, "patient_opposed"), later(1))
    assert [c.id for c in await journal.claim("w", 10, 30, later(2))] == [r[1].row_id]


async def test_expired_lease_comes_back(journal) -> None:
    [res] = await journal.append([item(1)])
    assert [c.id for c in await journal.claim("w1", 10, 5, later(1))] == [res.row_id]
    assert await journal.claim("w2", 10, 5, later(2)) == []
    assert [c.id for c in await journal.claim("w2", 10, 5, later(10))] == [res.row_id]


async def test_find_filters(journal) -> None:
    r = await journal.append([item(1, "p1"), item(2, "p2")])
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(r[0].row_id, Settlement(State.DELIVERED, document_id="1.2.3", patient_id="INS1"), later(1))
    assert [x.id for x in await journal.find(Query(states=[State.DELIVERED]))] == [r[0].row_id]
    assert [x.id for x in await journal.find(Query(document_id="1.2.3"))] == [r[0].row_id]
    assert [x.id for x in await journal.find(Query(patient_id="INS1"))] == [r[0].row_id]
    assert len(await journal.find(Query(sender="LAB^FAC"))) == 2


async def test_concurrent_appends_get_distinct_rows(journal) -> None:
    results = await asyncio.gather(*(journal.append([item(n, f"p{n % 5}")]) for n in range(300)))
    ids = {r[0].row_id for r in results}
    assert len(ids) == 300
    assert (await journal.counts())[State.ACCEPTED] == 300


async def test_sqlite_is_durable_and_verified(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = SQLiteJournal(path)
    await j.open()
    [res] = await j.append([item(1)])
    assert j.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert j.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await j.close()
    # An independent connection (another process would see the same) finds the committed row.
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT state FROM messages WHERE id = ?", (res.row_id,)).fetchone() == ("accepted",)
    j2 = SQLiteJournal(path)
    await j2.open()  # migrations are not re-applied
    assert (await j2.get(res.row_id)) is not None
    await j2.close()


async def test_sqlite_storage_failure_raises_queue_unavailable(tmp_path: Path) -> None:
    from passerelle.errors import QueueUnavailableError

    j = SQLiteJournal(tmp_path / "j.sqlite3")
    await j.open()
    j.conn.execute("CREATE TRIGGER fail BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(QueueUnavailableError):
        await j.append([item(1)])
    await j.close()


async def test_duplicates_inside_one_append_call(journal) -> None:
    first, again, clash = await journal.append([item(5), item(5), item(5, body=b"MSH|other")])
    assert not first.duplicate and again.duplicate and again.row_id == first.row_id
    assert clash.conflict and clash.row_id == first.row_id
    assert sum((await journal.counts()).values()) == 1


async def test_events_keep_their_order_and_data(journal) -> None:
    from passerelle.queue import Event

    [res] = await journal.append([item(1)])
    at = later(1)
    await journal.add_events([Event(res.row_id, at, "mapped", "CR-BIO", {"doc": "1.2.3", "n": 2})])
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(
        res.row_id, Settlement(State.DELIVERED, events=[Event(res.row_id, later(2), "delivered", "201")]), later(2)
    )
    # The receipt may be an event or only the row itself (SQLite, PostgreSQL): not asserted here.
    events = [e for e in await journal.events(res.row_id) if e.kind not in ("received", "rejected")]
    assert [e.kind for e in events] == ["mapped", "delivered"]
    assert events[0].data == {"doc": "1.2.3", "n": 2} and events[0].detail == "CR-BIO"
    assert abs((events[0].at - at).total_seconds()) < 0.001


async def test_registry_series_and_patient_map_round_trip(journal) -> None:
    from passerelle.queue import RegistryEntry, SeriesEntry

    assert await journal.registry_get("248098765432112") is None
    entry = RegistryEntry("248098765432112", "1.2.250.1.213.1.4.10", "ACTIF", "INO", "IC", T0, 7)
    await journal.registry_put(entry)
    await journal.registry_put(RegistryEntry("248098765432112", "1.2.250.1.213.1.4.10", "FERME", "IO", "NA", T0, 8))
    got = await journal.registry_get("248098765432112")
    assert got is not None and (got.dmp_status, got.feeding, got.source_row) == ("FERME", "IO", 8)
    assert got.updated_at == T0

    assert await journal.series_get("study:1.2.3") is None
    await journal.series_put(SeriesEntry("study:1.2.3", "1.2.3.4", "set-1", 1, 10), T0)
    await journal.series_put(SeriesEntry("study:1.2.3", "1.2.3.5", "set-1", 2, 11), T0)
    assert await journal.series_get("study:1.2.3") == SeriesEntry("study:1.2.3", "1.2.3.5", "set-1", 2, 11)

    assert await journal.patient_map_get("PACS", "LOCAL1") is None
    await journal.patient_map_put("PACS", "LOCAL1", "248098765432112", "1.2.250.1.213.1.4.10")
    assert await journal.patient_map_get("PACS", "LOCAL1") == ("248098765432112", "1.2.250.1.213.1.4.10")
    assert await journal.patient_map_get("OTHER", "LOCAL1") is None


async def test_deadline_is_set_once_and_cleared_by_replay(journal) -> None:
    r = await journal.append([item(1)])
    first, second = later(100), later(200)
    await journal.set_deadline(r[0].row_id, first)
    await journal.set_deadline(r[0].row_id, second)
    row = await journal.get(r[0].row_id)
    assert row.deadline is not None and abs((row.deadline - first).total_seconds()) < 0.001
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(r[0].row_id, Settlement(State.DEAD, "deadline"), later(1))
    assert await journal.requeue(r[0].row_id, later(2), "replay")
    assert (await journal.get(r[0].row_id)).deadline is None


async def test_find_pages_by_id_and_time(journal) -> None:
    r = await journal.append([item(n, f"p{n}") for n in range(5)])
    ids = [x.row_id for x in r]
    assert [x.id for x in await journal.find(Query(limit=2))] == [ids[4], ids[3]]
    assert [x.id for x in await journal.find(Query(limit=2, before_id=ids[3]))] == [ids[2], ids[1]]
    assert await journal.find(Query(since=later(60))) == []
    assert len(await journal.find(Query(until=later(60)))) == 5
    assert [x.id for x in await journal.find(Query(states=[State.ACCEPTED, State.DEAD], limit=1))] == [ids[4]]


async def test_rejected_rows_do_not_hold_their_key_inside_one_append(journal) -> None:
    bad = item(9, state=State.REJECTED, body=b"MSH|unreadable")
    r = await journal.append([bad, item(9), item(9), item(9, state=State.REJECTED)])
    assert not r[0].duplicate and not r[1].duplicate and r[0].row_id != r[1].row_id
    assert r[2].duplicate and r[2].row_id == r[1].row_id and r[2].stored_ack == b"ACK9"
    assert r[3].duplicate and r[3].row_id == r[1].row_id
    counts = await journal.counts()
    assert (counts[State.REJECTED], counts[State.ACCEPTED]) == (1, 1)
