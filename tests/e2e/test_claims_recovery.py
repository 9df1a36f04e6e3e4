"""A gateway SIGKILLed with documents claimed and in flight: its claims come back without waiting for
their lease. The lease is set to an hour, far beyond this test's own timeout, so every document
delivered here was given back by the recovery (docs/journal.md, "Leases and recovery"), not by expiry:

* SQLite (one instance): the restarted process takes the journal's dispatch lock and gives the
  previous process's claims back before its first claim;
* PostgreSQL (several instances): the surviving instance sees the dead one's heartbeat grow old and
  gives its claims back (within ``worker.dead_after_s`` plus one heartbeat)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from passerelle.mappings.samples.messages import generate_samples
from tests.e2e.conftest import GatewayProcess, documents_for, start_gateway, wait_all_delivered
from tests.e2e.test_crash_recovery import send
from tests.support.pg import pg_schema
from tests.support.waiting import poll_sync

COUNT = 12
LONG_LEASE = {
    "PASSERELLE__WORKER__LEASE_S": "3600",
    "PASSERELLE__WORKER__RETRY__INITIAL_DELAY_S": "0.2",
    "PASSERELLE__WORKER__RETRY__MAX_DELAY_S": "1.0",
}


def wait_each_delivered_once(sandbox: str, samples: list) -> None:
    wait_all_delivered(sandbox, samples)
    for s in samples:
        assert len(documents_for(sandbox, s.patient.ins)) == 1


def test_sqlite_claims_of_a_killed_gateway_come_back_at_restart(sandbox, tmp_path: Path) -> None:
    samples = generate_samples(COUNT, seed=5151, now=datetime.now(UTC).replace(microsecond=0))
    admin = httpx.Client(base_url=sandbox.admin, timeout=10)
    admin.put("/faults", json={"latency_ms": 4000, "seed": 3}).raise_for_status()  # pushes stay in flight
    data = tmp_path / "gateway"
    gw = start_gateway(data, sandbox.fhir, LONG_LEASE)
    try:
        assert send(gw.mllp_port, samples) == ["AA"] * COUNT
        journal = data / "journal.sqlite3"

        def leased() -> int:
            with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
                return int(db.execute("SELECT COUNT(*) FROM lanes WHERE lease_until IS NOT NULL").fetchone()[0])

        assert poll_sync(leased, bool, 30, interval=0.1) > 0
    finally:
        gw.kill()
    assert leased() > 0  # the killed process's claims are still in the file, leased for an hour
    admin.delete("/faults").raise_for_status()
    gw = start_gateway(data, sandbox.fhir, LONG_LEASE)
    try:
        wait_each_delivered_once(sandbox, samples)
    finally:
        gw.stop()
    assert admin.get("/stats").json()["stored"] == COUNT


def test_postgres_claims_of_a_dead_instance_come_back_to_a_live_one(sandbox, tmp_path: Path) -> None:
    samples = generate_samples(COUNT, seed=5252, now=datetime.now(UTC).replace(microsecond=0))
    admin = httpx.Client(base_url=sandbox.admin, timeout=10)
    with _schema() as (dsn, schema):
        env = {
            **LONG_LEASE,
            "PASSERELLE__JOURNAL__BACKEND": "postgres",
            "PASSERELLE__JOURNAL__DSN_ENV": "PASSERELLE_TEST_DSN",
            "PASSERELLE__JOURNAL__SCHEMA": schema,
            "PASSERELLE_TEST_DSN": dsn,
        }
        admin.put("/faults", json={"latency_ms": 4000, "seed": 4}).raise_for_status()
        doomed = start_gateway(tmp_path / "a", sandbox.fhir, env)
        survivor: GatewayProcess | None = None
        try:
            assert send(doomed.mllp_port, samples) == ["AA"] * COUNT
            claims = poll_sync(lambda: _claims_of(dsn, schema, doomed.proc.pid), bool, 30, interval=0.1)
            assert claims > 0
            survivor = start_gateway(tmp_path / "b", sandbox.fhir, env)
        finally:
            doomed.kill()
        try:
            # still leased (for an hour) now that their owner is dead; their number moved while the survivor
            # started (the doomed process kept claiming and settling), so it is read after the kill
            assert _claims_of(dsn, schema, doomed.proc.pid) > 0
            admin.delete("/faults").raise_for_status()
            wait_each_delivered_once(sandbox, samples)
            assert _claims_of(dsn, schema, doomed.proc.pid) == 0
        finally:
            survivor.stop()
    assert admin.get("/stats").json()["stored"] == COUNT


def _claims_of(dsn: str, schema: str, pid: int) -> int:
    """Lanes leased by the dispatch worker of process ``pid`` (worker names are host:pid:random)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        query = sql.SQL("SELECT COUNT(*) FROM {}.lanes WHERE worker LIKE %s AND lease_until > now()")
        row = conn.execute(query.format(sql.Identifier(schema)), (f"%:{pid}:%",)).fetchone()
        return int(row[0]) if row else 0


@contextlib.contextmanager
def _schema():
    manager = pg_schema()
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete(manager.__aenter__())
    finally:
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()
