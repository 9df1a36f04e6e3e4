"""AdminJournal contract: replay of dead, refused and parked rows (and only those)."""

from __future__ import annotations

from passerelle.queue import Settlement, State
from tests.integration.journal_contract.support import item, later


async def test_dead_head_blocks_lane_until_replayed(journal) -> None:
    r = await journal.append([item(1, "p1"), item(2, "p1")])
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(r[0].row_id, Settlement(State.DEAD, "deadline"), later(1))
    assert await journal.claim("w", 10, 30, later(5)) == []
    assert await journal.requeue(r[0].row_id, later(5), "operator replay")
    assert [c.id for c in await journal.claim("w", 10, 30, later(6))] == [r[0].row_id]
    assert not await journal.requeue(r[1].row_id, later(6), "not dead")


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


async def test_replay_records_an_event_and_resets_attempts(journal) -> None:
    [res] = await journal.append([item(1)])
    await journal.claim("w", 10, 30, later(1))
    await journal.settle(res.row_id, Settlement(State.REFUSED, "remote 422"), later(1))
    assert await journal.requeue(res.row_id, later(2), "operator alice")
    row = await journal.get(res.row_id)
    assert (row.state, row.attempts, row.detail) == (State.ACCEPTED, 0, "operator alice")
    assert [e.detail for e in await journal.events(res.row_id) if e.kind == "replay"] == ["operator alice"]
    assert not await journal.requeue(res.row_id, later(3), "accepted rows are not replayed")
    assert not await journal.requeue(10_000, later(3), "no such row")
