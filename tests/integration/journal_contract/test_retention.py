"""RetentionJournal contract and the retention runner (queue/retention.py): what goes after how long,
what never goes, batches, dry runs, the dedup register trimmed with its rows, SQLite space reused."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import datetime
from pathlib import Path

import pytest

from passerelle.queue import AppendResult, Event, Inbound, Journal, Settlement, State
from passerelle.queue.audit_sqlite import SQLiteAuditStore
from passerelle.queue.retention import RetentionPolicy, RetentionReport, purge_once
from passerelle.queue.sqlite import SQLiteJournal
from tests.integration.journal_contract.support import days, item, later
from tests.integration.test_audit_store_contract import rec

POLICY = RetentionPolicy()  # 30 days for payloads, 7 for rejected messages, 400 for records


async def settle(journal: Journal, ids: list[int], state: State, at: datetime, **kw: object) -> None:
    """Claim the due heads and settle ``ids`` in ``state`` at ``at``."""
    await journal.claim("w", 10_000, 300, later(1))
    for row_id in ids:
        await journal.settle(row_id, Settlement(state, **kw), at)  # type: ignore[arg-type]


async def test_settled_payloads_go_after_payload_days_keeping_size_and_sha256(journal: Journal) -> None:
    r = await journal.append([item(n, f"p{n}") for n in range(3)])
    delivered, refused, pending = (x.row_id for x in r)
    await settle(journal, [delivered], State.DELIVERED, later(1))
    await settle(journal, [refused], State.REFUSED, later(1), detail="patient_opposed")
    assert await purge_once(journal, POLICY, days(29)) == RetentionReport(dry_run=False)  # not yet
    report = await purge_once(journal, POLICY, days(31))
    assert (report.payloads, report.rejected_payloads, report.records, report.batches) == (2, 0, 0, 2)
    for row_id, n in ((delivered, 0), (refused, 1)):
        row = await journal.get(row_id)
        body = item(n).raw
        assert row is not None and row.raw == b"" and row.payload_purged and not row.truncated
        assert (row.size, row.sha256) == (len(body), hashlib.sha256(body).hexdigest())
    kept = await journal.get(pending)
    assert kept is not None and kept.raw == item(2).raw and not kept.payload_purged
    assert (await purge_once(journal, POLICY, days(31))).total == 0  # nothing twice


async def test_pending_and_dead_rows_are_never_purged(journal: Journal) -> None:
    r = await journal.append([item(n, f"p{n}") for n in range(4)])
    ids = [x.row_id for x in r]
    await journal.claim("w", 10, 300, later(1))
    await journal.settle(ids[1], Settlement(State.RETRY, "503", next_due=later(60)), later(1))
    await journal.settle(ids[2], Settlement(State.PARKED, "space_not_active", next_due=later(60)), later(1))
    await journal.settle(ids[3], Settlement(State.DEAD, "deadline"), later(1))
    report = await purge_once(journal, RetentionPolicy(1, 1, 1), days(10_000))
    assert report.total == 0
    for n, row_id in enumerate(ids):
        row = await journal.get(row_id)
        assert row is not None and row.raw == item(n).raw and not row.payload_purged
    for state in (State.ACCEPTED, State.RETRY, State.PARKED, State.DEAD):
        with pytest.raises(ValueError):
            await journal.purge_payloads(state, days(10_000), 10, days(10_000))
        with pytest.raises(ValueError):
            await journal.payloads_due(state, days(10_000))
    assert await journal.records_due(days(10_000)) == 0
    assert await journal.delete_records(days(10_000), 10) == 0


async def test_rejected_payloads_go_after_rejected_days(journal: Journal) -> None:
    [res] = await journal.append([item(1, state=State.REJECTED, body=b"MSH|junk" * 10_000)])
    assert (await purge_once(journal, POLICY, days(6))).total == 0
    report = await purge_once(journal, POLICY, days(8))
    assert (report.payloads, report.rejected_payloads) == (0, 1)
    row = await journal.get(res.row_id)
    assert row is not None and row.raw == b"" and row.payload_purged and row.size == 80_000


async def test_records_go_after_record_days_with_their_events_and_dedup_keys(journal: Journal) -> None:
    r = await journal.append([item(1, "p1"), item(2, "p2"), item(3, "p3", state=State.REJECTED)])
    ids = [x.row_id for x in r]
    await journal.add_events([Event(ids[0], later(1), "mapped", "CR-BIO", {"doc": "1.2.3"})])
    await settle(journal, ids[:2], State.DELIVERED, later(1), events=[])
    assert (await purge_once(journal, POLICY, days(399))).records == 0
    report = await purge_once(journal, POLICY, days(401))
    assert report.records == 3 and report.payloads == 0  # deleted rows are not counted twice
    for row_id in ids:
        assert await journal.get(row_id) is None
        assert await journal.events(row_id) == []
    assert sum((await journal.counts()).values()) == 0
    # The register forgot the keys with their rows: the same message, sent again, is new.
    [again] = await journal.append([item(1, "p1")])
    assert not again.duplicate and not again.conflict and again.row_id not in ids


async def test_a_dedup_key_stays_while_its_row_stays(journal: Journal) -> None:
    [first] = await journal.append([item(1)])
    await settle(journal, [first.row_id], State.DELIVERED, later(1))
    await purge_once(journal, POLICY, days(31))  # the payload goes, the row and its key stay
    [dup] = await journal.append([item(1)])
    assert dup.duplicate and dup.row_id == first.row_id and dup.stored_ack == b"ACK1"
    [clash] = await journal.append([item(1, body=b"MSH|other")])
    assert clash.conflict


async def test_dry_run_counts_what_a_run_purges_and_changes_nothing(journal: Journal) -> None:
    r = await journal.append([item(n, f"p{n}") for n in range(6)] + [item(9, state=State.REJECTED)])
    ids = [x.row_id for x in r]
    await settle(journal, ids[:2], State.DELIVERED, days(-500))  # old enough to be deleted
    await settle(journal, ids[2:5], State.REFUSED, later(1))
    dry = await purge_once(journal, POLICY, days(40), dry_run=True)
    assert (dry.dry_run, dry.records, dry.payloads, dry.rejected_payloads, dry.batches) == (True, 2, 3, 1, 0)
    rows = [await journal.get(i) for i in ids]
    assert all(row is not None and not row.payload_purged for row in rows)
    real = await purge_once(journal, POLICY, days(40))
    assert (real.records, real.payloads, real.rejected_payloads) == (dry.records, dry.payloads, dry.rejected_payloads)


async def test_purge_works_in_bounded_batches(journal: Journal) -> None:
    r = await journal.append([item(n, f"p{n}") for n in range(7)])
    await settle(journal, [x.row_id for x in r], State.DELIVERED, later(1))
    assert await journal.payloads_due(State.DELIVERED, days(1)) == 7
    steps = [await journal.purge_payloads(State.DELIVERED, days(1), 3, days(31)) for _ in range(4)]
    assert steps == [3, 3, 1, 0]
    r2 = await journal.append([item(n, f"q{n}") for n in range(10, 17)])
    await settle(journal, [x.row_id for x in r2], State.DELIVERED, later(1))
    report = await purge_once(journal, POLICY, days(31), batch_size=3)
    assert (report.payloads, report.batches) == (7, 3)
    assert [await journal.delete_records(days(401), 5) for _ in range(4)] == [5, 5, 4, 0]


async def test_a_purged_row_cannot_be_replayed(journal: Journal) -> None:
    [res] = await journal.append([item(1)])
    await settle(journal, [res.row_id], State.REFUSED, later(1), detail="remote 422")
    await purge_once(journal, POLICY, days(31))
    assert not await journal.requeue(res.row_id, days(31), "operator replay")
    row = await journal.get(res.row_id)
    assert row is not None and row.state is State.REFUSED and row.payload_purged


async def test_intake_goes_on_while_retention_runs(journal: Journal) -> None:
    r = await journal.append([item(n, f"p{n}") for n in range(400)])
    await settle(journal, [x.row_id for x in r], State.DELIVERED, later(1))
    fresh = [item(n, f"q{n}") for n in range(1000, 1100)]
    purging = True
    during: list[bool] = []

    async def purge() -> RetentionReport:
        nonlocal purging
        try:
            return await purge_once(journal, POLICY, days(31), batch_size=50)
        finally:
            purging = False

    async def append(it: Inbound) -> list[AppendResult]:
        done = await journal.append([it])
        during.append(purging)
        return done

    report, *appended = await asyncio.gather(purge(), *(append(it) for it in fresh))
    assert report.payloads == 400 and report.batches == 8
    assert len({a[0].row_id for a in appended}) == 100 and not any(a[0].duplicate for a in appended)
    assert (await journal.counts())[State.ACCEPTED] == 100
    assert any(during)  # appends committed between the purge's batches, not after the whole pass


# --- SQLite: the journal and the audit trail share the file; its space is reused -------------------------


async def test_one_pass_purges_journal_and_audit_in_the_shared_file(tmp_path: Path) -> None:
    path = tmp_path / "passerelle.db"
    journal, audit = SQLiteJournal(path), SQLiteAuditStore(path)
    await journal.open()
    await audit.open()
    try:
        [res] = await journal.append([item(1)])
        await settle(journal, [res.row_id], State.DELIVERED, days(-450))
        await audit.append([rec(0, at=days(-450)), rec(0, at=days(-10))])
        dry = await purge_once(journal, POLICY, days(0), audit=audit, dry_run=True)
        assert (dry.records, dry.audit_records) == (1, 1)
        report = await purge_once(journal, POLICY, days(0), audit=audit)
        assert (report.records, report.audit_records) == (1, 1)
        assert await journal.get(res.row_id) is None
        assert journal.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0  # space given back
    finally:
        await audit.close()
        await journal.close()


def _pages(journal: SQLiteJournal) -> int:
    return int(journal.conn.execute("PRAGMA page_count").fetchone()[0])


async def test_sqlite_file_stops_growing_once_payloads_are_purged(tmp_path: Path) -> None:
    """Append, settle and purge, then append as many again: the file stays about the size of one round
    (without reuse it would double). Page counts and file sizes only, no timing."""
    path = tmp_path / "journal.sqlite3"
    journal = SQLiteJournal(path)
    await journal.open()
    body = os.urandom(2048)

    async def one_round(start: int) -> None:
        items = [item(n, "", body=body + str(n).encode()) for n in range(start, start + 1500)]
        r = [x for n in range(0, len(items), 250) for x in await journal.append(items[n : n + 250])]
        await settle(journal, [x.row_id for x in r], State.DELIVERED, later(1))

    try:
        await one_round(0)
        first = _pages(journal)
        report = await purge_once(journal, POLICY, days(31))
        assert report.payloads == 1500 and report.pages_released > 0.5 * first
        assert journal.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        purged = _pages(journal)
        assert purged < 0.5 * first  # the file shrank: the pages went back to the file system
        await one_round(10_000)
        second = _pages(journal)
        assert second < 1.2 * first, (first, purged, second)
        journal.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = journal.conn.execute("PRAGMA page_size").fetchone()[0]
        assert os.path.getsize(path) == second * page_size
        assert os.path.getsize(f"{path}-wal") == 0
    finally:
        await journal.close()
