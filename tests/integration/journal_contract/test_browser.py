"""BrowserJournal contract: reading rows, filters and pages, counts, the oldest pending message."""

from __future__ import annotations

from passerelle.queue import Query, Settlement, State
from tests.integration.journal_contract.support import item, later


async def test_find_filters(journal) -> None:
    r = await journal.append([item(1, "p1"), item(2, "p2")])
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(r[0].row_id, Settlement(State.DELIVERED, document_id="1.2.3", patient_id="INS1"), later(1))
    assert [x.id for x in await journal.find(Query(states=[State.DELIVERED]))] == [r[0].row_id]
    assert [x.id for x in await journal.find(Query(document_id="1.2.3"))] == [r[0].row_id]
    assert [x.id for x in await journal.find(Query(patient_id="INS1"))] == [r[0].row_id]
    assert len(await journal.find(Query(sender="LAB^FAC"))) == 2


async def test_find_pages_by_id_and_time(journal) -> None:
    r = await journal.append([item(n, f"p{n}") for n in range(5)])
    ids = [x.row_id for x in r]
    assert [x.id for x in await journal.find(Query(limit=2))] == [ids[4], ids[3]]
    assert [x.id for x in await journal.find(Query(limit=2, before_id=ids[3]))] == [ids[2], ids[1]]
    assert await journal.find(Query(since=later(60))) == []
    assert len(await journal.find(Query(until=later(60)))) == 5
    assert [x.id for x in await journal.find(Query(states=[State.ACCEPTED, State.DEAD], limit=1))] == [ids[4]]


async def test_counts_and_oldest_pending_follow_the_states(journal) -> None:
    assert await journal.counts() == dict.fromkeys(State, 0)
    assert await journal.oldest_pending() is None
    r = await journal.append([item(1, "p1"), item(2, "p2"), item(3, "p3", state=State.REJECTED)])
    first = await journal.get(r[0].row_id)
    assert await journal.oldest_pending() == first.received_at
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(r[0].row_id, Settlement(State.DELIVERED), later(1))
    await journal.settle(r[1].row_id, Settlement(State.DEAD, "deadline"), later(1))
    counts = await journal.counts()
    assert (counts[State.DELIVERED], counts[State.DEAD], counts[State.REJECTED], counts[State.ACCEPTED]) == (1, 1, 1, 0)
    assert await journal.oldest_pending() is None  # dead and settled rows are not pending
    assert await journal.get(10_000) is None


async def test_find_filters_by_channel(journal) -> None:
    from dataclasses import replace

    r = await journal.append([item(1, "p1"), replace(item(2, "p2"), channel="http", sender="DPI")])
    assert [x.id for x in await journal.find(Query(channel="http"))] == [r[1].row_id]
    assert [x.id for x in await journal.find(Query(channel="mllp"))] == [r[0].row_id]
    assert await journal.find(Query(channel="dicom")) == []
    assert await journal.find(Query(channel="http", sender="LAB^FAC")) == []


async def test_keyset_pages_walk_both_ways(journal) -> None:
    r = await journal.append([item(n, f"p{n}") for n in range(7)])
    ids = [x.row_id for x in r]
    older = await journal.find(Query(limit=3, before_id=ids[4]))
    assert [x.id for x in older] == [ids[3], ids[2], ids[1]]
    # The page above an id: the rows just above it, still newest first (the "newer" link of a list).
    newer = await journal.find(Query(limit=3, after_id=ids[1]))
    assert [x.id for x in newer] == [ids[4], ids[3], ids[2]]
    assert [x.id for x in await journal.find(Query(limit=3, after_id=ids[5]))] == [ids[6]]
    assert await journal.find(Query(after_id=ids[6])) == []
    both = await journal.find(Query(limit=10, after_id=ids[1], before_id=ids[4]))
    assert [x.id for x in both] == [ids[3], ids[2]]
    assert [x.id for x in await journal.find(Query(limit=2, after_id=ids[0], states=[State.DEAD]))] == []


async def test_activity_counts_receipts_and_deliveries_since_a_time(journal) -> None:
    from passerelle.queue import Activity

    before = later(-60)
    assert await journal.activity(before) == Activity(0, 0)
    r = await journal.append([item(1, "p1"), item(2, "p2"), item(3, "p3", state=State.REJECTED)])
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(r[0].row_id, Settlement(State.DELIVERED), later(1))
    await journal.settle(r[1].row_id, Settlement(State.DEAD, "deadline"), later(1))
    assert await journal.activity(before) == Activity(3, 1)
    assert await journal.activity(later(30)) == Activity(0, 0)
