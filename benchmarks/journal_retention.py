"""What a SQLite journal file weighs at steady state, with and without retention (ADR 0016).

Round after round, ``--messages`` synthetic ~2 KB HL7 messages are appended (each its own dedup key and
lane), claimed and settled as delivered one simulated day apart; after each round a retention pass runs
as if ``--days`` had gone by (payloads older than 30 days go; rows stay 400 days). A 900 KiB rejected junk
frame per round shows the rejected-message bound. Reported: file size (after a WAL checkpoint) and bytes
per message kept, after each round (and the size just before its retention pass).

Run: ``python -m benchmarks.journal_retention [--messages N] [--rounds R] [--days D]``. Pointed at an older
source tree (``PYTHONPATH=<old>/src``) with no ``passerelle.queue.retention``, it measures the journal
without retention ("before").
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from passerelle.queue import Inbound, Settlement, State
from passerelle.queue.sqlite import SQLiteJournal

OBX = "OBX|{n}|NM|2345-7^Glucose^LN||{v}|mmol/L|3.9-5.8|N|||F\r"


def message(n: int) -> Inbound:
    header = f"MSH|^~\\&|LAB|FAC|GW|FAC|20260101000000||ORU^R01|{n}|P|2.5\rPID|1||{n:010d}^^^FAC\r"
    raw = (header + "".join(OBX.format(n=i, v=(n * 31 + i) % 97) for i in range(42))).encode()
    return Inbound(
        raw=raw, channel="mllp", sender="LAB^FAC", kind="oru", message_id=str(n), dedup_key=f"LAB^FAC^{n}",
        content_hash=hashlib.sha256(raw).hexdigest(), ack=b"MSH|ACK",
    )  # fmt: skip


def junk(n: int) -> Inbound:
    raw = os.urandom(900 * 1024)
    return Inbound(raw=raw, channel="mllp", sender="LAB^FAC", kind="oru", state=State.REJECTED, detail="framing")


def file_size(journal: SQLiteJournal) -> int:
    journal.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(os.path.getsize(f"{journal.path}{s}") for s in ("", "-wal") if os.path.exists(f"{journal.path}{s}"))


async def one_round(journal: SQLiteJournal, start: int, count: int, settled_at: datetime) -> None:
    for n in range(start, start + count, 500):
        await journal.append([message(i) for i in range(n, min(n + 500, start + count))])
    await journal.append([junk(start)])
    while rows := await journal.claim("bench", 1000, 300, datetime.now(UTC) + timedelta(seconds=1)):
        for row in rows:
            await journal.settle(row.id, Settlement(State.DELIVERED), settled_at)


async def run(messages: int, rounds: int, days: float) -> dict[str, Any]:
    retention = importlib.util.find_spec("passerelle.queue.retention") is not None
    out: dict[str, Any] = {"retention": retention, "messages_per_round": messages, "days_per_round": days}
    with tempfile.TemporaryDirectory() as tmp:
        journal = SQLiteJournal(Path(tmp) / "journal.sqlite3")
        await journal.open()
        try:
            start = datetime.now(UTC)
            sizes = []
            for r in range(rounds):
                day = start + timedelta(days=days * r)
                await one_round(journal, r * messages, messages, day)
                peak = file_size(journal)
                if retention:
                    from passerelle.queue.retention import RetentionPolicy, purge_once

                    await purge_once(journal, RetentionPolicy(), day + timedelta(days=days))
                size = file_size(journal)
                sizes.append({"round": r + 1, "messages": (r + 1) * messages, "file_bytes_before_purge": peak,
                              "file_bytes": size, "bytes_per_message": round(size / ((r + 1) * messages))})  # fmt: skip
            out["rounds"] = sizes
        finally:
            await journal.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--days", type=float, default=31.0, help="simulated days between rounds")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.messages, args.rounds, args.days)), indent=2))


if __name__ == "__main__":
    main()
