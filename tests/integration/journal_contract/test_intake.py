"""IntakeJournal contract: durable append, the dedup register, what a row records of its message."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace

from passerelle.queue import Journal, State
from passerelle.queue.model import REJECTED_PAYLOAD_LIMIT, UNREADABLE_PAYLOAD_LIMIT
from tests.integration.journal_contract.support import item, later


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


async def test_concurrent_appends_get_distinct_rows(journal) -> None:
    results = await asyncio.gather(*(journal.append([item(n, f"p{n % 5}")]) for n in range(300)))
    ids = {r[0].row_id for r in results}
    assert len(ids) == 300
    assert (await journal.counts())[State.ACCEPTED] == 300


async def test_duplicates_inside_one_append_call(journal) -> None:
    first, again, clash = await journal.append([item(5), item(5), item(5, body=b"MSH|other")])
    assert not first.duplicate and again.duplicate and again.row_id == first.row_id
    assert clash.conflict and clash.row_id == first.row_id
    assert sum((await journal.counts()).values()) == 1


async def test_rejected_rows_do_not_hold_their_key_inside_one_append(journal) -> None:
    bad = item(9, state=State.REJECTED, body=b"MSH|unreadable")
    r = await journal.append([bad, item(9), item(9), item(9, state=State.REJECTED)])
    assert not r[0].duplicate and not r[1].duplicate and r[0].row_id != r[1].row_id
    assert r[2].duplicate and r[2].row_id == r[1].row_id and r[2].stored_ack == b"ACK9"
    assert r[3].duplicate and r[3].row_id == r[1].row_id
    counts = await journal.counts()
    assert (counts[State.REJECTED], counts[State.ACCEPTED]) == (1, 1)


async def test_rejected_rows_never_hold_a_dedup_key(journal: Journal) -> None:
    """Only accepted messages enter the register: a rejected one (e.g. a sender that may not speak for
    that MSH-3/MSH-4) neither blocks the genuine message with the same key nor answers for it."""
    [bad] = await journal.append([item(11, state=State.REJECTED, body=b"MSH|impersonation")])
    [again] = await journal.append([item(11, state=State.REJECTED, body=b"MSH|impersonation")])
    assert not again.duplicate and again.row_id != bad.row_id  # rejected twice: two rows, no register
    [good] = await journal.append([item(11)])
    assert not good.duplicate and not good.conflict and good.row_id not in (bad.row_id, again.row_id)
    row = await journal.get(bad.row_id)
    assert row is not None and row.dedup_key == "" and row.message_id == "11"
    assert (await journal.get(good.row_id)).dedup_key == "LAB^FAC^11"
    [dup] = await journal.append([item(11)])
    assert dup.duplicate and dup.row_id == good.row_id and dup.stored_ack == b"ACK11"


async def test_every_row_records_the_size_and_sha256_of_its_message(journal: Journal) -> None:
    body = b"MSH|^~\\&|LAB|FAC|||||ORU^R01|21|P|2.5\r" + bytes(range(256)) * 8
    [res] = await journal.append([item(21, body=body)])
    row = await journal.get(res.row_id)
    assert row is not None and row.raw == body
    assert (row.size, row.sha256) == (len(body), hashlib.sha256(body).hexdigest())
    assert not row.payload_purged and not row.truncated


async def test_a_rejected_message_keeps_its_first_64_kib_with_size_and_sha256(journal: Journal) -> None:
    junk = bytes((n * 7) % 251 for n in range(900 * 1024))  # a 900 KiB junk frame
    small = b"MSH|short and unreadable"
    big, little = await journal.append(
        [item(31, state=State.REJECTED, body=junk), item(32, state=State.REJECTED, body=small)]
    )
    row = await journal.get(big.row_id)
    assert row is not None and REJECTED_PAYLOAD_LIMIT == 64 * 1024
    assert row.raw == junk[:REJECTED_PAYLOAD_LIMIT] and row.truncated and not row.payload_purged
    assert (row.size, row.sha256) == (len(junk), hashlib.sha256(junk).hexdigest())
    kept = await journal.get(little.row_id)
    assert kept is not None and kept.raw == small and not kept.truncated and kept.size == len(small)
    # An accepted message is kept whole, whatever its size.
    [whole] = await journal.append([item(33, body=junk)])
    assert (await journal.get(whole.row_id)).raw == junk


async def test_a_rejected_input_without_a_header_keeps_only_a_glimpse(journal: Journal) -> None:
    """Junk (no header could be read) keeps its first KiB: a flood of it costs little storage."""
    junk = bytes((n * 7) % 251 for n in range(900 * 1024))
    [res] = await journal.append([replace(item(34, state=State.REJECTED, body=junk), readable=False)])
    row = await journal.get(res.row_id)
    assert row is not None and UNREADABLE_PAYLOAD_LIMIT == 1024
    assert row.raw == junk[:UNREADABLE_PAYLOAD_LIMIT] and row.truncated
    assert (row.size, row.sha256) == (len(junk), hashlib.sha256(junk).hexdigest())
    # An accepted message is whole even if flagged unreadable (the flag only bounds a rejected row).
    [whole] = await journal.append([replace(item(35, body=junk), readable=False)])
    assert (await journal.get(whole.row_id)).raw == junk
