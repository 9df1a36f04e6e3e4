"""The MLLP listener with the real Hl7Intake and a real SQLite journal file: ACKs are correlated,
given only after the commit, one journal row per distinct message, duplicates replayed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from passerelle.connector.intake.hl7 import Hl7Intake, Hl7IntakeSettings
from passerelle.connector.listeners.mllp import MllpServer, MllpSettings, frame
from passerelle.mappings.samples.messages import generate_samples
from passerelle.queue.model import Query
from passerelle.queue.sqlite import SQLiteJournal
from tests.support.mllp_peer import msa, read_replies, write_in_pieces

NOW = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)


@dataclass
class Stack:
    journal: SQLiteJournal
    server: MllpServer


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    journal = SQLiteJournal(tmp_path / "journal.sqlite3")
    await journal.open()
    intake = Hl7Intake(journal.append, Hl7IntakeSettings(test_environment=True))
    server = MllpServer(MllpSettings(port=0, max_frame_bytes=64 * 1024), intake, oversize_handler=intake)
    await server.start()
    yield Stack(journal, server)
    await server.stop(2)
    await journal.close()


async def test_thousand_messages_eight_connections_one_row_per_distinct_message(stack: Stack) -> None:
    samples = generate_samples(880, seed=11, now=NOW)
    rng = random.Random(2026)

    async def client(k: int) -> list[tuple[str, str]]:
        mine = samples[k * 110 : (k + 1) * 110]
        # 110 distinct messages, then 15 resends of earlier ones (same bytes): 125 frames per connection.
        plan = mine + [mine[rng.randrange(len(mine))] for _ in range(15)]
        r, w = await asyncio.open_connection("127.0.0.1", stack.server.port)
        data = b"".join(frame(s.raw) for s in plan)
        await write_in_pieces(w, data, rng, 20000)
        replies = await read_replies(r, len(plan), timeout=120)
        w.close()
        got = [msa(x) for x in replies]
        assert got == [("AA", s.control_id) for s in plan]
        return got

    results = await asyncio.gather(*(client(k) for k in range(8)))
    assert sum(len(x) for x in results) == 1000
    counts = await stack.journal.counts()
    assert sum(counts.values()) == 880


async def test_oversize_frame_is_refused_by_the_intake_and_connection_continues(stack: Stack) -> None:
    big, small = generate_samples(2, seed=5, now=NOW)
    oversized = big.raw + b"\rNTE|1||" + b"A" * (70 * 1024) + b"\r"
    r, w = await asyncio.open_connection("127.0.0.1", stack.server.port)
    w.write(frame(oversized) + frame(small.raw))
    first, second = await read_replies(r, 2)
    code, ctrl = msa(first)
    assert code != "AA" and code != "CA"
    assert ctrl == big.control_id
    assert b"|207" in first
    assert msa(second) == ("AA", small.control_id)
    w.close()


async def test_no_positive_ack_when_the_journal_cannot_commit(stack: Stack) -> None:
    [sample] = generate_samples(1, seed=9, now=NOW)
    await stack.journal.close()
    r, w = await asyncio.open_connection("127.0.0.1", stack.server.port)
    w.write(frame(sample.raw))
    try:
        [reply] = await read_replies(r, 1)
    except asyncio.IncompleteReadError:
        reply = b""  # closing without a reply is also never positive
    if reply:
        code, ctrl = msa(reply)
        assert code in ("AR", "CE", "AE", "CR")
        assert ctrl == sample.control_id
    w.close()
    await stack.journal.open()


async def test_empty_frame_and_garbage_frame_get_a_negative_ack_with_empty_msa2(stack: Stack) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", stack.server.port)
    w.write(frame(b"") + frame(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    replies = await read_replies(r, 2)
    for reply in replies:
        code, ctrl = msa(reply)
        assert code not in ("AA", "CA")
        assert ctrl == ""
    w.close()


async def test_ack_lost_then_resent_gets_the_original_ack_and_one_row(stack: Stack) -> None:
    [sample] = generate_samples(1, seed=21, now=NOW)
    r, w = await asyncio.open_connection("127.0.0.1", stack.server.port)
    w.write(frame(sample.raw))
    [first] = await read_replies(r, 1)
    w.transport.abort()  # as if the ACK had been lost on the way
    r, w = await asyncio.open_connection("127.0.0.1", stack.server.port)
    w.write(frame(sample.raw))
    [again] = await read_replies(r, 1)
    w.close()
    assert msa(first) == msa(again) == ("AA", sample.control_id)
    assert again == first  # the stored ACK is replayed byte for byte
    assert sum((await stack.journal.counts()).values()) == 1


async def test_graceful_stop_under_load_every_acked_message_is_in_the_journal(stack: Stack) -> None:
    """B-MLLP-13 (docs/bad-input.md): stop while 4 senders stream; every AA'd MSH-10 is journaled, no reply
    is half-written."""
    samples = generate_samples(400, seed=31, now=NOW)
    acked: set[str] = set()

    async def sender(k: int) -> None:
        mine = samples[k * 100 : (k + 1) * 100]
        r, w = await asyncio.open_connection("127.0.0.1", stack.server.port)
        try:
            for s in mine:
                w.write(frame(s.raw))
                await w.drain()
                [reply] = await read_replies(r, 1)
                code, ctrl = msa(reply)
                assert ctrl == s.control_id
                if code == "AA":
                    acked.add(ctrl)
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # closed by the stop: whatever was not ACKed will be resent by a real sender

    tasks = [asyncio.create_task(sender(k)) for k in range(4)]
    async with asyncio.timeout(30):
        while len(acked) < 40:
            await asyncio.sleep(0.005)
    await stack.server.stop(5)
    await asyncio.gather(*tasks)
    assert 40 <= len(acked) < 400  # the stop cut the load
    rows = await stack.journal.find(Query(limit=1000))
    stored = {row.message_id for row in rows}
    assert acked <= stored


@pytest.mark.parametrize("byte", [0x00, 0x01, 0x08, 0x0C, 0x1F, 0x7F])
async def test_a_stray_control_byte_is_refused_naming_the_byte_its_offset_and_field(stack: Stack, byte: int) -> None:
    """B-HL7-19: AR, ERR-3 102, ERR-2 the segment and field, the text the byte and its offset (no content)."""
    [sample] = generate_samples(1, seed=3, now=NOW)
    pid = sample.raw.index(b"\rPID|") + 1
    name = pid + sum(len(f) + 1 for f in sample.raw[pid:].split(b"|")[:5])  # PID-5, the patient's name
    family = sample.raw[name : sample.raw.index(b"^", name)]
    raw = sample.raw[: name + 2] + bytes([byte]) + sample.raw[name + 2 :]
    r, w = await asyncio.open_connection("127.0.0.1", stack.server.port)
    w.write(frame(raw))
    [reply] = await read_replies(r, 1)
    w.close()
    assert msa(reply) == ("AR", sample.control_id)
    segments = {line.split(b"|", 1)[0]: line.split(b"|") for line in reply.split(b"\r") if line}
    err, msa_text = segments[b"ERR"], segments[b"MSA"][3]
    assert err[2] == b"PID^1^5" and err[3].startswith(b"102^")
    expected = f"control character 0x{byte:02X} at byte offset {name + 2} (PID-5)".encode()
    assert err[7] == expected and msa_text == expected
    assert family not in reply
    [row] = await stack.journal.find(Query(limit=10))
    assert row.state.value == "rejected"
