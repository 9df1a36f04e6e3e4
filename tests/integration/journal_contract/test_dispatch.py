"""DispatchJournal contract: lane heads claimed one at a time, leases, settlements, events, deadlines."""

from __future__ import annotations

from passerelle.queue import Event, Settlement, State
from tests.integration.journal_contract.support import item, later


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


async def test_events_keep_their_order_and_data(journal) -> None:
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


async def test_settlement_records_outcome_attempts_and_identifiers(journal) -> None:
    r = await journal.append([item(1, "p1"), item(2, "p2")])
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(r[0].row_id, Settlement(State.PARKED, "space_not_active", next_due=later(900)), later(1))
    await journal.settle(
        r[1].row_id, Settlement(State.DELIVERED, "201", document_id="1.2.3", patient_id="INS1"), later(1)
    )
    parked, delivered = await journal.get(r[0].row_id), await journal.get(r[1].row_id)
    assert (parked.state, parked.detail, parked.attempts) == (State.PARKED, "space_not_active", 0)  # not an attempt
    assert (delivered.state, delivered.attempts, delivered.document_id, delivered.patient_id) == (
        State.DELIVERED, 1, "1.2.3", "INS1",
    )  # fmt: skip
    assert abs((delivered.updated_at - later(1)).total_seconds()) < 5
