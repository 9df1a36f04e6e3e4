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


# --- batched settlement ---------------------------------------------------------------------------


async def test_settle_many_settles_each_row_as_settle_does(journal) -> None:
    r = await journal.append([item(1, "p1"), item(2, "p1"), item(3, "p2"), item(4, "p3"), item(5, "p4")])
    claimed = await journal.claim("w", 10, 30, later(1))
    assert sorted(c.id for c in claimed) == [r[0].row_id, r[2].row_id, r[3].row_id, r[4].row_id]
    await journal.settle_many(
        [
            (r[0].row_id, Settlement(State.DELIVERED, "201", events=[Event(r[0].row_id, later(1), "delivered")])),
            (r[2].row_id, Settlement(State.RETRY, "503", next_due=later(60))),
            (r[3].row_id, Settlement(State.PARKED, "space_not_active", next_due=later(900))),
            (r[4].row_id, Settlement(State.DEAD, "deadline", events=[Event(r[4].row_id, later(1), "dead")])),
        ],
        later(1),
    )
    states = [(await journal.get(x.row_id)).state for x in r]
    assert states == [State.DELIVERED, State.ACCEPTED, State.RETRY, State.PARKED, State.DEAD]
    assert [c.id for c in await journal.claim("w", 10, 30, later(2))] == [r[1].row_id]  # only p1 moved on
    assert [e.kind for e in await journal.events(r[0].row_id) if e.kind == "delivered"] == ["delivered"]
    assert [e.kind for e in await journal.events(r[4].row_id) if e.kind == "dead"] == ["dead"]
    await journal.settle_many([], later(2))  # nothing to do


async def test_the_first_deadline_recorded_is_kept(journal) -> None:
    [res] = await journal.append([item(1)])
    first, second = later(3600), later(7200)
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(res.row_id, Settlement(State.RETRY, "503", next_due=later(2), deadline=first), later(1))
    await journal.claim("w", 10, 30, later(3))
    await journal.settle(res.row_id, Settlement(State.RETRY, "503", next_due=later(4), deadline=second), later(3))
    row = await journal.get(res.row_id)
    assert row.deadline is not None and abs((row.deadline - first).total_seconds()) < 0.001


# --- heartbeats: the claims of a gone worker come back before their lease ends ------------------------


async def test_a_silent_workers_claims_come_back_to_a_live_one(journal) -> None:
    r = await journal.append([item(1, "p1"), item(2, "p2")])
    await journal.heartbeat("w1", later(0), 10)
    assert len(await journal.claim("w1", 10, 3600, later(0))) == 2  # leased for an hour
    assert await journal.heartbeat("w2", later(5), 10) == 0  # w1 was seen 5 s ago: alive
    assert await journal.claim("w2", 10, 3600, later(5)) == []
    assert await journal.heartbeat("w2", later(20), 10) == 2  # w1 silent for 20 s: gone
    assert sorted(c.id for c in await journal.claim("w2", 10, 3600, later(20))) == [x.row_id for x in r]


async def test_a_live_worker_keeps_its_claims(journal) -> None:
    await journal.append([item(1, "p1")])
    await journal.heartbeat("w1", later(0), 10)
    await journal.claim("w1", 10, 3600, later(0))
    for t in (8, 16, 24):
        await journal.heartbeat("w1", later(t), 10)
        assert await journal.heartbeat("w2", later(t + 1), 10) == 0
    assert await journal.claim("w2", 10, 3600, later(25)) == []


async def test_claims_of_a_worker_never_seen_come_back_at_the_first_heartbeat(journal) -> None:
    """A claim left by a previous process (which this journal never heard from) is given back."""
    r = await journal.append([item(1, "p1")])
    assert len(await journal.claim("previous-process", 10, 3600, later(0))) == 1
    assert await journal.heartbeat("w1", later(1), 10) == 1
    assert [c.id for c in await journal.claim("w1", 10, 3600, later(1))] == [r[0].row_id]


async def test_a_settled_lane_is_no_claim_to_give_back(journal) -> None:
    r = await journal.append([item(1, "p1")])
    await journal.claim("previous-process", 10, 3600, later(0))
    await journal.settle(r[0].row_id, Settlement(State.DELIVERED), later(0))
    assert await journal.heartbeat("w1", later(1), 10) == 0
