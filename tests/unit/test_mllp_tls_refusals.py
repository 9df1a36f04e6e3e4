"""The audit side of refused MLLP TLS handshakes (B-MLLP-14): classes, coalescing per address, class and
minute, the bound on addresses, fingerprints only; a clock under the test's hand, a memory audit store."""

from __future__ import annotations

import ssl

import pytest

from passerelle.connector.listeners.mllp.refusals import OTHER_ADDRESSES, TlsRefusals, classify
from passerelle.observability.audit import AuditRecord, AuditTrail
from passerelle.queue.audit import AuditQuery
from passerelle.queue.audit_memory import MemoryAuditStore

FP = "ab" * 32
MINUTE = 29_000_000  # 2025-02-19T21:20Z, in minutes since the epoch


class Clock:
    def __init__(self) -> None:
        self.now = MINUTE * 60.0

    def __call__(self) -> float:
        return self.now


async def records(store: MemoryAuditStore) -> list[AuditRecord]:
    return await store.query(AuditQuery(limit=10_000))


def ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] test")
    exc.reason = reason
    return exc


def verify_error(code: int) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code = code
    return exc


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (ssl_error("WRONG_VERSION_NUMBER"), "not_tls"),
        (ssl_error("HTTP_REQUEST"), "not_tls"),
        (ssl_error("UNSUPPORTED_PROTOCOL"), "protocol_version"),
        (ssl_error("PEER_DID_NOT_RETURN_A_CERTIFICATE"), "no_certificate"),
        (verify_error(20), "certificate_untrusted"),
        (verify_error(10), "certificate_expired"),
        (TimeoutError(), "timeout"),
        (ssl_error("TLSV1_ALERT_UNKNOWN_CA"), "handshake"),
        (ConnectionResetError(), None),  # connect, close: not audited
        (ssl.SSLEOFError(8, "EOF"), None),
    ],
)
def test_classes(exc: BaseException, cls: str | None) -> None:
    assert classify(exc) == cls


async def test_a_scanner_makes_two_records_a_minute_not_one_per_attempt() -> None:
    store, clock = MemoryAuditStore(), Clock()
    refusals = TlsRefusals(AuditTrail(store), clock=clock)
    for _ in range(500):
        await refusals.refused("192.0.2.7", "not_tls")
    [first] = await records(store)
    assert (first.action.value, first.outcome.value, first.reason) == ("admin", "failure", "tls-refused")
    assert first.actor == "mllp:192.0.2.7"
    assert first.detail == "not_tls first in minute 2025-02-19T21:20Z"
    clock.now += 60  # the next minute: the total of the last one is written, the new one opens
    await refusals.refused("192.0.2.7", "not_tls")
    assert [r.detail for r in await records(store)][1:] == [
        "not_tls count=500 in minute 2025-02-19T21:20Z",
        "not_tls first in minute 2025-02-19T21:21Z",
    ]
    await refusals.flush()  # one refusal in that minute: its first record says it all
    assert len(await records(store)) == 3


async def test_classes_and_fingerprints_are_counted_apart() -> None:
    store, clock = MemoryAuditStore(), Clock()
    refusals = TlsRefusals(AuditTrail(store), clock=clock)
    for _ in range(3):
        await refusals.refused("192.0.2.7", "not_allowed", FP)
    await refusals.refused("192.0.2.7", "timeout")
    await refusals.refused("192.0.2.7", "not_allowed", "cd" * 32)
    await refusals.flush()
    details = [r.detail for r in await records(store)]
    assert details == [
        f"not_allowed first in minute 2025-02-19T21:20Z sha256={FP}",
        "timeout first in minute 2025-02-19T21:20Z",
        f"not_allowed first in minute 2025-02-19T21:20Z sha256={'cd' * 32}",
        f"not_allowed count=3 in minute 2025-02-19T21:20Z sha256={FP}",
    ]


async def test_past_64_addresses_a_minute_the_others_share_one_actor() -> None:
    store, clock = MemoryAuditStore(), Clock()
    refusals = TlsRefusals(AuditTrail(store), clock=clock)
    for n in range(200):
        await refusals.refused(f"198.51.100.{n}", "handshake")
    await refusals.refused("198.51.100.3", "handshake")  # a tracked address stays itself
    await refusals.flush()
    found = await records(store)
    actors = {r.actor for r in found}
    assert len(actors) == 65 and OTHER_ADDRESSES in actors
    assert "mllp:198.51.100.63" in actors and "mllp:198.51.100.64" not in actors
    assert [r.detail for r in found if r.actor == OTHER_ADDRESSES] == [
        "handshake first in minute 2025-02-19T21:20Z",
        "handshake count=136 in minute 2025-02-19T21:20Z",
    ]
    assert [r.detail for r in found if r.actor == "mllp:198.51.100.3"][-1].startswith("handshake count=2 ")
    clock.now += 60  # a new minute tracks anew
    await refusals.refused("198.51.100.199", "handshake")
    assert (await records(store))[-1].actor == "mllp:198.51.100.199"


async def test_an_audit_store_that_fails_does_not_break_the_listener() -> None:
    class Broken:
        async def append(self, records: object) -> list[int]:
            raise OSError("disk full")

    refusals = TlsRefusals(AuditTrail(Broken()), clock=Clock())
    await refusals.refused("192.0.2.7", "timeout")
    await refusals.refused("192.0.2.7", "timeout")
    await refusals.flush()


async def test_connections_refused_before_the_handshake_are_audited_by_class_but_not_at_a_stop() -> None:
    store = MemoryAuditStore()
    refusals = TlsRefusals(AuditTrail(store), clock=Clock())
    for reason in ["not_allowed"] * 3 + ["max_per_source", "max_connections", "stopping"]:
        await refusals.connection_refused("192.0.2.7", reason)
    await refusals.flush()
    got = [(r.actor, r.reason, r.detail) for r in await records(store)]
    assert got == [
        ("mllp:192.0.2.7", "connection-refused", "address_not_allowed first in minute 2025-02-19T21:20Z"),
        ("mllp:192.0.2.7", "connection-refused", "too_many_from_source first in minute 2025-02-19T21:20Z"),
        ("mllp:192.0.2.7", "connection-refused", "too_many_connections first in minute 2025-02-19T21:20Z"),
        ("mllp:192.0.2.7", "connection-refused", "address_not_allowed count=3 in minute 2025-02-19T21:20Z"),
    ]
