"""The command line on real files: check-config, samples, messages list/show/replay, audit."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from passerelle.observability.audit import AuditTrail
from passerelle.queue import Inbound, Settlement, State
from passerelle.queue.audit_sqlite import SQLiteAuditStore
from passerelle.queue.sqlite import SQLiteJournal
from tests.support.cli import passerelle

ROOT = Path(__file__).resolve().parents[2]


def test_check_config_accepts_the_example_and_names_every_problem(tmp_path) -> None:
    ok = passerelle("check-config", "--config", str(ROOT / "config/passerelle.example.yaml"))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("mllp:\n  port: 70000\n  colour: blue\nworker:\n  concurrency: 0\n")
    out = passerelle("check-config", "--config", str(bad))
    assert out.returncode == 2
    assert "mllp.port" in out.stderr and "mllp.colour" in out.stderr and "worker.concurrency" in out.stderr


def test_samples_writes_distinct_synthetic_messages(tmp_path) -> None:
    out = passerelle("samples", "--out", str(tmp_path), "--count", "3", "--seed", "9")
    assert out.returncode == 0, out.stderr
    files = sorted(tmp_path.glob("*.hl7"))
    assert len(files) == 3 and len({f.read_bytes() for f in files}) == 3
    assert all(f.read_bytes().startswith(b"MSH|^~\\&|") for f in files)
    assert all(b"1.2.250.1.213.1.4.10" in f.read_bytes() for f in files)  # test INS authority only


async def _dead_rows(data_dir: Path) -> list[int]:
    journal = SQLiteJournal(data_dir / "journal.sqlite3")
    await journal.open()
    results = await journal.append(
        [Inbound(raw=f"MSH|{n}".encode(), channel="mllp", sender="LAB^FAC", kind="oru", lane=f"p{n}") for n in range(3)]
    )
    now = datetime.now(UTC) + timedelta(seconds=1)
    await journal.claim("w", 10, 30, now)
    for r in results:
        await journal.settle(r.row_id, Settlement(State.DEAD, "deadline exceeded; last error: 503"), now)
    await journal.close()
    store = SQLiteAuditStore(data_dir / "journal.sqlite3")
    await store.open()
    await AuditTrail(store).record(action="dead-letter", outcome="dead", reason="deadline", row_id=results[0].row_id)
    await store.close()
    return [r.row_id for r in results]


def test_messages_and_replay_and_audit(tmp_path) -> None:
    ids = asyncio.run(_dead_rows(tmp_path))
    listed = passerelle("messages", "list", "--data-dir", str(tmp_path), "--state", "dead", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["id"] for r in json.loads(listed.stdout)) == ids

    dry = passerelle("messages", "replay", "--data-dir", str(tmp_path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["count"] == 3
    refused = passerelle("messages", "replay", "--data-dir", str(tmp_path))  # a filter replay needs --yes
    assert refused.returncode == 1
    still = passerelle("messages", "list", "--data-dir", str(tmp_path), "--state", "dead", "--json")
    assert len(json.loads(still.stdout)) == 3

    one = passerelle("messages", "replay", str(ids[0]), "--data-dir", str(tmp_path))
    assert one.returncode == 0 and json.loads(one.stdout)["items"][0]["result"] == "replayed"
    rest = passerelle("messages", "replay", "--data-dir", str(tmp_path), "--yes")
    assert json.loads(rest.stdout)["count"] == 2
    shown = passerelle("messages", "show", str(ids[0]), "--data-dir", str(tmp_path))
    assert "replay" in shown.stdout and "accepted" in shown.stdout

    trail = passerelle("audit", "list", "--data-dir", str(tmp_path))
    assert trail.returncode == 0, trail.stderr
    assert trail.stdout.count("\treplay\t") == 3 and "\tdead-letter\t" in trail.stdout
    fhir = json.loads(passerelle("audit", "list", "--data-dir", str(tmp_path), "--fhir").stdout)
    assert fhir["resourceType"] == "Bundle" and len(fhir["entry"]) == 4
    assert all(e["resource"]["resourceType"] == "AuditEvent" for e in fhir["entry"])
