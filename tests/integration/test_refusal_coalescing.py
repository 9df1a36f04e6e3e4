"""Refused peers in the audit trail, coalesced per surface, address, class and minute (ADR 0030), over
real sockets on a running gateway: a burst of unauthenticated HTTP requests, a burst of DICOM
associations from an AE title not on the allow list, bursts of MLLP connections from outside
``mllp.allowed_networks`` or past ``mllp.max_connections_per_source`` (ADR 0031). Each burst writes its first refusal at once and
its total when the minute is over — here when the gateway stops (the gateway's clock is held still,
so the burst stays in one minute). Metrics still count every refusal. The trail is read back from the
SQLite file once the gateway has stopped, with a store of its own."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pynetdicom import AE

from passerelle.connector.app import Gateway
from passerelle.observability.audit import AuditRecord
from passerelle.queue.audit import AuditQuery
from passerelle.queue.audit_sqlite import SQLiteAuditStore
from tests.support.gateway import TOKENS, running_gateway
from tests.support.waiting import poll, until

#: The gateway's time during the test (held still: one minute bucket).
NOW = datetime(2026, 3, 9, 14, 27, 41, tzinfo=UTC)
VERIFICATION = "1.2.840.10008.1.1"


def still() -> datetime:
    return NOW


async def trail(journal_path: Path, reason: str) -> list[AuditRecord]:
    store = SQLiteAuditStore(journal_path)
    await store.open()
    try:
        return [r for r in await store.query(AuditQuery(limit=1000)) if r.reason == reason]
    finally:
        await store.close()


async def test_fifty_unauthenticated_requests_are_two_records(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir", clock=still) as (gw, base):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            for _ in range(50):
                assert (await client.get("/v1/messages")).status_code == 401
            metrics = (await client.get("/metrics")).text
        before_flush = await gw.audit_store.query(AuditQuery(limit=1000))
        journal_path = gw.settings.journal_path
    assert [r.detail for r in before_flush if r.reason == "access-refused"] == [
        "api missing_token first in minute 2026-03-09T14:27Z: GET /v1/messages"
    ]
    assert 'passerelle_http_auth_refusals_total{reason="missing",surface="api"} 50.0' in metrics
    records = await trail(journal_path, "access-refused")
    assert [(r.actor, r.action.value, r.outcome.value, r.detail) for r in records] == [
        ("http:127.0.0.1", "admin", "failure", "api missing_token first in minute 2026-03-09T14:27Z: GET /v1/messages"),
        ("http:127.0.0.1", "admin", "failure", "api missing_token count=50 in minute 2026-03-09T14:27Z"),
    ]


async def test_a_forwarded_for_header_does_not_choose_the_recorded_address(tmp_path: Path) -> None:
    """The peer's address is the TCP one: X-Forwarded-For (which uvicorn trusts from 127.0.0.1 by
    default) cannot make a refusal land under another address, nor dodge the per-address throttle."""
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir", clock=still) as (gw, base):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            statuses = []
            for n in range(6):  # the throttle's default: 5 failures per address, then 429
                spoofed = {
                    "X-Forwarded-For": f"10.9.9.{n}",
                    "X-Real-IP": f"10.9.9.{n}",
                    "Authorization": f"Bearer x{n}",
                }
                statuses.append((await client.get("/v1/messages", headers=spoofed)).status_code)
        journal_path = gw.settings.journal_path
    assert statuses == [401] * 5 + [429]
    records = await trail(journal_path, "access-refused")
    assert {r.actor for r in records} == {"http:127.0.0.1"}, [r.actor for r in records]


async def test_unknown_tokens_are_coalesced_and_never_recorded(tmp_path: Path) -> None:
    guesses = [f"guess-{n:04d}-{TOKENS['read'][1][:8]}" for n in range(30)]
    no_throttle = {"http.login_throttle": {"enabled": False}}  # 30 guesses, not 5 then 429 (B-HTTP-9)
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir", clock=still, **no_throttle) as (gw, base):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            for guess in guesses:
                answer = await client.get("/v1/messages", headers={"Authorization": f"Bearer {guess}"})
                assert answer.status_code == 401
        journal_path = gw.settings.journal_path
    records = await trail(journal_path, "access-refused")
    assert [r.detail.split(" in minute ")[0] for r in records] == [
        "api unknown_token first",
        "api unknown_token count=30",
    ]
    assert not [g for g in guesses if any(g[:10] in repr(r) for r in records)]


def refused_associations(port: int, count: int) -> list[bool]:
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(VERIFICATION)
    outcomes = []
    for _ in range(count):
        assoc = ae.associate("127.0.0.1", port, ae_title="PASSERELLE")
        outcomes.append(bool(assoc.is_rejected))
        if assoc.is_established:
            assoc.release()
    return outcomes


async def test_twenty_refused_associations_are_two_records(tmp_path: Path) -> None:
    settings = {"dicom.enabled": True, "dicom.port": 0, "dicom.allowed_calling_ae_titles": ["PACS"]}
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir", clock=still, **settings) as (gw, base):
        assert gw.dicom is not None
        assert await asyncio.to_thread(refused_associations, gw.dicom.port, 20) == [True] * 20
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            metrics = (await client.get("/metrics")).text
        journal_path = gw.settings.journal_path
    assert 'passerelle_dicom_associations_total{outcome="refused_calling_ae"} 20.0' in metrics
    records = await trail(journal_path, "association-refused")
    assert [(r.actor, r.action.value, r.outcome.value, r.detail) for r in records] == [
        ("dicom:127.0.0.1", "refusal", "refuse", "calling_ae first in minute 2026-03-09T14:27Z: calling AE STRANGER"),
        ("dicom:127.0.0.1", "refusal", "refuse", "calling_ae count=20 in minute 2026-03-09T14:27Z"),
    ]


async def refused_connection(port: int) -> bytes:
    """Connect to the MLLP port and read until the gateway closes (it aborts a refused connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            return await asyncio.wait_for(reader.read(), timeout=10)
        return b""
    finally:
        writer.close()


async def metric_line(base: str, needle: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        text = (await client.get("/metrics")).text
    return next((line for line in text.splitlines() if line.startswith(needle)), "")


async def mllp_refusals(gw: Gateway, base: str, outcome: str, count: int) -> list[AuditRecord]:
    """Wait until ``count`` MLLP connections are counted refused for ``outcome`` and the first one is in
    the audit trail; the trail's ``connection-refused`` records then."""
    needle = f'passerelle_mllp_connections_total{{outcome="refused_{outcome}"}}'
    line = await poll(lambda: metric_line(base, needle), lambda v: v == f"{needle} {count}.0")
    assert line == f"{needle} {count}.0"

    async def refused() -> list[AuditRecord]:
        return [r for r in await gw.audit_store.query(AuditQuery(limit=1000)) if r.reason == "connection-refused"]

    return await poll(refused, bool)


async def test_twenty_mllp_connections_from_outside_the_allowed_networks_are_two_records(tmp_path: Path) -> None:
    settings = {"mllp.allowed_networks": ["10.0.0.0/8"]}
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir", clock=still, **settings) as (gw, base):
        assert gw.mllp is not None
        assert await asyncio.gather(*(refused_connection(gw.mllp.port) for _ in range(20))) == [b""] * 20
        before_stop = await mllp_refusals(gw, base, "not_allowed", 20)
        journal_path = gw.settings.journal_path
    assert [r.detail for r in before_stop] == ["address_not_allowed first in minute 2026-03-09T14:27Z"]
    records = await trail(journal_path, "connection-refused")
    assert [(r.actor, r.action.value, r.outcome.value, r.detail) for r in records] == [
        ("mllp:127.0.0.1", "admin", "failure", "address_not_allowed first in minute 2026-03-09T14:27Z"),
        ("mllp:127.0.0.1", "admin", "failure", "address_not_allowed count=20 in minute 2026-03-09T14:27Z"),
    ]


async def test_twenty_mllp_connections_past_the_per_source_cap_are_two_records(tmp_path: Path) -> None:
    settings = {"mllp.max_connections_per_source": 1}
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir", clock=still, **settings) as (gw, base):
        assert gw.mllp is not None
        mllp = gw.mllp
        _reader, held = await asyncio.open_connection("127.0.0.1", mllp.port)
        try:
            await until(lambda: mllp.connection_count == 1)
            assert await asyncio.gather(*(refused_connection(mllp.port) for _ in range(20))) == [b""] * 20
            before_stop = await mllp_refusals(gw, base, "max_per_source", 20)
        finally:
            held.close()
        journal_path = gw.settings.journal_path
    assert [r.detail for r in before_stop] == ["too_many_from_source first in minute 2026-03-09T14:27Z"]
    records = await trail(journal_path, "connection-refused")
    assert [(r.actor, r.detail) for r in records] == [
        ("mllp:127.0.0.1", "too_many_from_source first in minute 2026-03-09T14:27Z"),
        ("mllp:127.0.0.1", "too_many_from_source count=20 in minute 2026-03-09T14:27Z"),
    ]
