"""Retention in the running gateway and by hand (docs/journal.md "Retention", ADR 0023): the background
part purges delivered messages' payloads once ``retention.payload_days`` have passed on the gateway's
clock (injected here), the message browser (API and CLI) then says "payload purged" with the size and
SHA-256 of what was received, the metrics count it and the audit trail records the pass.
``passerelle retention run [--dry-run]`` does the same by hand on a journal with old rows."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from passerelle.connector.app import build_gateway
from passerelle.connector.cli.send import send_files
from passerelle.connector.settings import load_settings
from passerelle.mappings.samples.messages import generate_samples
from passerelle.queue import Settlement, State
from passerelle.queue.audit import AuditQuery
from passerelle.queue.audit_sqlite import SQLiteAuditStore
from passerelle.queue.sqlite import SQLiteJournal
from passerelle.sandbox.testing import SandboxURL
from tests.integration.journal_contract.support import days, item, later
from tests.support.cli import passerelle
from tests.support.gateway import AUTH, token_settings, wait_settled


class Clock:
    """The gateway's clock: real time, moved forward by the test (``offset``)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


async def test_the_gateway_purges_old_payloads_and_the_browser_says_so(tmp_path: Path, sandbox: SandboxURL) -> None:
    data, clock = tmp_path / "gw", Clock()
    settings = load_settings(None, overrides={
        "environment": "test", "data_dir": data, "mllp.port": 0, "http.port": 0, "space.url": sandbox.fhir,
        "worker.poll_interval_s": 0.05, "retention.interval_s": 0.1, "http.tokens": token_settings(tmp_path / "tokens"),
    })  # fmt: skip
    samples = generate_samples(3, seed=83, now=clock().replace(microsecond=0))
    gateway = build_gateway(settings, clock=clock)
    await gateway.start()
    try:
        assert gateway.mllp is not None
        results = await send_files("127.0.0.1", gateway.mllp.port, [(s.name, s.raw) for s in samples])
        assert [r.code for r in results] == ["AA"] * 3
        rows = await wait_settled(gateway, 3)
        assert {r.state for r in rows} == {State.DELIVERED}
        base = f"http://127.0.0.1:{gateway.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH["read"]) as client:
            shown = [(await client.get(f"/v1/messages/{r.id}")).json() for r in rows]
            assert {s["payload"] for s in shown} == {"stored"}  # within payload_days: kept
            clock.offset = timedelta(days=31)  # the gateway's month goes by
            for _ in range(400):
                shown = [(await client.get(f"/v1/messages/{r.id}")).json() for r in rows]
                if all(s["payload"] == "purged" for s in shown):
                    break
                await asyncio.sleep(0.05)
            metrics = (await client.get("/metrics")).text
        by_id = {r.id: r for r in rows}
        for summary in shown:
            raw = by_id[summary["id"]].raw  # as read before the purge
            assert raw in {s.raw for s in samples}
            assert summary["payload"] == "purged" and summary["state"] == "delivered"
            assert (summary["size"], summary["sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
        assert 'passerelle_retention_purged_total{what="payloads"} 3.0' in metrics
        assert 'passerelle_retention_runs_total{outcome="ok"}' in metrics
        records = await gateway.audit_store.query(AuditQuery(actor="passerelle", limit=1000))
        passes = [r for r in records if r.reason == "retention"]
        assert any("payloads=3 " in r.detail for r in passes), [r.detail for r in passes]
    finally:
        await gateway.stop()
    out = passerelle("messages", "show", str(rows[0].id), "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    head = out.stdout.split("\njourney:", 1)[0]
    lines = dict(line.split(None, 1) for line in head.splitlines())
    assert lines["payload"] == "payload purged" and lines["sha256"] == rows[0].sha256


async def _old_journal(data: Path, count: int) -> list[int]:
    """``count`` messages delivered 31 days ago, in a journal file under ``data``."""
    journal = SQLiteJournal(data / "journal.sqlite3")
    await journal.open()
    try:
        results = await journal.append([item(n, f"p{n}") for n in range(count)])
        await journal.claim("w", 10_000, 300, later(1))
        for r in results:
            await journal.settle(r.row_id, Settlement(State.DELIVERED), days(-31))
    finally:
        await journal.close()
    return [r.row_id for r in results]


async def test_retention_run_by_hand_dry_run_then_with_a_progress_bar_audited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = await _old_journal(data, 250)
    env_batch = ["--config", str(_config(tmp_path, data, batch_size=100))]
    dry = passerelle("retention", "run", "--dry-run", *env_batch)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("retention (dry run, would purge): payloads=250 rejected_payloads=0 records=0")
    assert "payload      stored" in passerelle("messages", "show", str(ids[0]), *env_batch).stdout  # nothing changed
    done = passerelle("retention", "run", *env_batch)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("retention: payloads=250 rejected_payloads=0 records=0 audit_records=0")
    assert "purging" in done.stderr  # the progress bar of a purge longer than one batch
    assert "payload      payload purged" in passerelle("messages", "show", str(ids[-1]), *env_batch).stdout
    store = SQLiteAuditStore(data / "journal.sqlite3")
    await store.open()
    try:
        [record] = [r for r in await store.query(AuditQuery(limit=100)) if r.reason == "retention"]
    finally:
        await store.close()
    assert record.actor.startswith("cli:") and record.detail.startswith("payloads=250 ")
    assert passerelle("retention", "run", *env_batch).stdout.startswith("retention: payloads=0 ")  # nothing twice


def _config(tmp_path: Path, data: Path, *, batch_size: int) -> Path:
    config = tmp_path / "passerelle.yaml"
    config.write_text(f"data_dir: {data}\nretention: {{batch_size: {batch_size}}}\n")
    return config


def test_retention_run_on_a_mistyped_data_dir_creates_nothing(tmp_path: Path) -> None:
    out = passerelle("retention", "run", "--data-dir", str(tmp_path / "typo"))
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        == f"passerelle: no journal at {tmp_path / 'typo' / 'journal.sqlite3'} (check --data-dir or --config)"
    )
    assert not (tmp_path / "typo").exists()
