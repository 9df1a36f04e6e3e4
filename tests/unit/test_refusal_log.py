"""The surface-neutral refusal log (ADR 0030): surfaces coalesced and bounded apart, the note only in the
first record of a minute, the totals written at stop; a clock under the test's hand, a memory store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from passerelle.connector.listeners.refusals import RefusalFlush
from passerelle.observability.audit import AuditRecord, AuditTrail
from passerelle.observability.refusals import RefusalLog, Surface
from passerelle.queue.audit import AuditQuery
from passerelle.queue.audit_memory import MemoryAuditStore

HTTP, DICOM = Surface("http"), Surface("dicom", action="refusal", outcome="refuse", reason="association-refused")
T0 = 29_000_000 * 60.0  # 2025-02-19T21:20Z


async def test_surfaces_are_coalesced_and_bounded_apart() -> None:
    store = MemoryAuditStore()
    refusals = RefusalLog(AuditTrail(store), clock=lambda: T0, max_addresses=2)
    for n in range(4):
        await refusals.refused(HTTP, f"192.0.2.{n}", "api missing_token", note="GET /v1/messages")
        await refusals.refused(DICOM, f"192.0.2.{n}", "calling_ae", note="calling AE X")
    await refusals.refused(HTTP, "192.0.2.0", "api missing_token", note="GET /v1/replay")
    flush = RefusalFlush(refusals)
    await flush.start()
    assert len(flush.background_tasks()) == 1
    await flush.stop()  # the totals still open are written
    assert flush.background_tasks() == []
    found = await store.query(AuditQuery(limit=100))
    assert [(r.actor, r.detail) for r in found if r.reason == "access-refused"] == [
        ("http:192.0.2.0", "api missing_token first in minute 2025-02-19T21:20Z: GET /v1/messages"),
        ("http:192.0.2.1", "api missing_token first in minute 2025-02-19T21:20Z: GET /v1/messages"),
        ("http:other-addresses", "api missing_token first in minute 2025-02-19T21:20Z: GET /v1/messages"),
        ("http:192.0.2.0", "api missing_token count=2 in minute 2025-02-19T21:20Z"),
        ("http:other-addresses", "api missing_token count=2 in minute 2025-02-19T21:20Z"),
    ]
    dicom = [r for r in found if r.reason == "association-refused"]
    # the last one: the count=2 of the two addresses past the bound
    assert [r.actor.removeprefix("dicom:") for r in dicom] == ["192.0.2.0", "192.0.2.1", *["other-addresses"] * 2]
    assert {(r.action.value, r.outcome.value) for r in dicom} == {("refusal", "refuse")}


async def test_refusals_arriving_while_a_minute_is_written_are_counted_once() -> None:
    """Concurrent refusals (HTTP requests) opening a new minute while the last one's totals are written
    (by a store that yields, as a real one does)."""

    class Yielding(MemoryAuditStore):
        async def append(self, records: Sequence[AuditRecord]) -> list[int]:
            await asyncio.sleep(0)
            return await super().append(records)

    store, now = Yielding(), [T0]
    refusals = RefusalLog(AuditTrail(store), clock=lambda: now[0])
    for n in range(3):
        for _ in range(2):
            await refusals.refused(HTTP, f"192.0.2.{n}", "api missing_token")
    now[0] += 60
    await asyncio.gather(*(refusals.refused(HTTP, "192.0.2.9", "api unknown_token") for _ in range(5)))
    await refusals.flush()
    details = [r.detail for r in await store.query(AuditQuery(limit=100))]
    assert details.count("api missing_token count=2 in minute 2025-02-19T21:20Z") == 3
    assert details[-1] == "api unknown_token count=5 in minute 2025-02-19T21:21Z"
    assert len(details) == 3 + 3 + 2
