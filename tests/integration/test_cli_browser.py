"""The CLI message browser on real files, in real processes: history in time order, the raw message and
the generated document on stdout (audited), a missing journal is an error (``--init`` creates one), a
replay that matches nothing exits 1, long replays show their progress."""

from __future__ import annotations

import asyncio
import io
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from passerelle.connector.cli.progress import Progress
from passerelle.mappings.samples.messages import build_sample_cda, root_only_oid, synthetic_patient
from passerelle.queue import Event, Inbound, Settlement, State
from passerelle.queue.sqlite import SQLiteJournal
from tests.support.cli import passerelle_bytes

HL7 = b"MSH|^~\\&|LAB|FAC|||20260101||ORU^R01|C1|P|2.5\r"


def cda() -> bytes:
    rng = random.Random(9)
    now = datetime.now(UTC).replace(microsecond=0)
    return build_sample_cda(now=now, patient=synthetic_patient(rng), document_id=root_only_oid(rng), set_id=root_only_oid(rng),
                     sender=None)  # fmt: skip


async def _journal(folder: Path, items: list[Inbound], dead: int = 0) -> list[int]:
    journal = SQLiteJournal(folder / "journal.sqlite3")
    await journal.open()
    try:
        rows = [r.row_id for r in await journal.append(items)]
        if dead:
            later = datetime.now(UTC) + timedelta(seconds=1)
            await journal.claim("test", dead, 60, later)
            for row_id in rows[:dead]:
                await journal.settle(row_id, Settlement(State.DEAD, "deadline"), later)
        return rows
    finally:
        await journal.close()


def test_a_missing_journal_is_an_error_and_init_creates_one(tmp_path: Path) -> None:
    typo = tmp_path / "vra"
    for args in (("messages", "list"), ("messages", "show", "1"), ("messages", "replay", "--yes"), ("audit", "list")):
        out = passerelle_bytes(*args, "--data-dir", str(typo))
        assert out.returncode == 2, args
        assert f"no journal at {typo / 'journal.sqlite3'}" in out.stderr.decode()
        assert b"Traceback" not in out.stderr
    assert not typo.exists()  # nothing was created
    made = passerelle_bytes("messages", "list", "--data-dir", str(typo), "--init", "--json")
    assert made.returncode == 0 and json.loads(made.stdout) == []
    assert (typo / "journal.sqlite3").is_file()


def test_show_lists_the_history_in_time_order(tmp_path: Path) -> None:
    [row_id] = asyncio.run(_journal(tmp_path, [Inbound(raw=HL7, channel="mllp", sender="LAB^FAC", kind="oru")]))
    t0 = datetime.now(UTC) + timedelta(seconds=5)

    async def events() -> None:
        journal = SQLiteJournal(tmp_path / "journal.sqlite3")
        await journal.open()
        # Recorded in another order than they happened (a settlement batch, a business ACK recorded late).
        await journal.add_events([Event(row_id, t0 + timedelta(seconds=3), "zam", "sent"),
                                  Event(row_id, t0 + timedelta(seconds=1), "mapped", "11502-2 publish"),
                                  Event(row_id, t0 + timedelta(seconds=2), "delivered", "publish")])  # fmt: skip
        await journal.close()

    asyncio.run(events())
    shown = json.loads(passerelle_bytes("messages", "show", str(row_id), "--data-dir", str(tmp_path), "--json").stdout)
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds == ["received", "ack", "mapped", "delivered", "zam"]
    assert [e["at"] for e in shown["events"]] == sorted(e["at"] for e in shown["events"])
    text = passerelle_bytes("messages", "show", str(row_id), "--data-dir", str(tmp_path)).stdout.decode()
    assert text.index(" mapped ") < text.index(" delivered ") < text.index(" zam ")


def test_raw_message_and_generated_document_on_stdout_audited(tmp_path: Path) -> None:
    body = cda()
    rows = [Inbound(raw=HL7, channel="mllp", sender="LAB^FAC", kind="oru"),
            Inbound(raw=body, channel="http", sender="DPI", kind="cda")]  # fmt: skip
    hl7_id, cda_id = asyncio.run(_journal(tmp_path, rows))
    raw = passerelle_bytes("messages", "show", str(hl7_id), "--raw", "--data-dir", str(tmp_path))
    assert raw.returncode == 0 and raw.stdout == HL7  # byte for byte
    doc = passerelle_bytes("messages", "show", str(cda_id), "--document", "--data-dir", str(tmp_path))
    assert doc.returncode == 0, doc.stderr
    assert doc.stdout == body  # a CDA is delivered as received
    none = passerelle_bytes("messages", "show", str(hl7_id), "--document", "--data-dir", str(tmp_path))
    assert none.returncode == 1 and b"no document" in none.stderr and b"Traceback" not in none.stderr
    missing = passerelle_bytes("messages", "show", "999", "--raw", "--data-dir", str(tmp_path))
    assert missing.returncode == 1 and b"no message 999" in missing.stderr
    trail = passerelle_bytes("audit", "list", "--data-dir", str(tmp_path), "--action", "admin").stdout.decode()
    assert "\tdownload-raw\t" in trail and "\tdownload-document\t" in trail


def test_a_replay_that_matches_nothing_exits_1_and_long_ones_show_progress(tmp_path: Path) -> None:
    items = [Inbound(raw=HL7.replace(b"C1", f"C{n}".encode()), channel="mllp", sender="L", kind="oru", lane=f"p{n}")
             for n in range(25)]  # fmt: skip
    ids = asyncio.run(_journal(tmp_path, items, dead=25))
    nothing = passerelle_bytes("messages", "replay", "--data-dir", str(tmp_path), "--state", "parked", "--yes")
    assert nothing.returncode == 1
    assert b"nothing was replayed: no message matches" in nothing.stderr
    unknown = passerelle_bytes("messages", "replay", "424242", "--data-dir", str(tmp_path))
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["items"][0]["result"] == "not found"
    done = passerelle_bytes("messages", "replay", "--data-dir", str(tmp_path), "--yes")
    assert done.returncode == 0 and json.loads(done.stdout)["count"] == 25  # stdout stays the JSON result
    lines = done.stderr.decode().splitlines()
    assert lines[-1] == "replay: 25/25 (100%)" and len(lines) == 10  # a line per tenth, not one per row
    again = passerelle_bytes("messages", "replay", *map(str, ids[:2]), "--data-dir", str(tmp_path))
    assert again.returncode == 1 and b"none replayable" in again.stderr  # accepted now, not replayable


def test_progress_redraws_one_bar_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    with Progress(40, "purge", stream=stream) as bar:
        for _ in range(40):
            bar.advance()
    assert stream.getvalue().count("\r") == 40 and stream.getvalue().endswith("] 40/40\n")
    quiet = io.StringIO()
    with Progress(5, "replay", stream=quiet) as bar:
        bar.advance(5)
    assert quiet.getvalue() == ""  # short runs show nothing
