"""Dispatch worker semantics with fakes for the space, the mapper and the consent gate."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from passerelle.config.settings import RetrySettings, WorkerSettings
from passerelle.connector.dispatch.worker import DispatchWorker, Handled
from passerelle.consent import Decision, Outcome, Reason
from passerelle.errors import IdentityError, RemoteRejectedError, RemoteTransientError
from passerelle.mappings.document import Code, Document, Patient
from passerelle.observability.metrics import Metrics
from passerelle.queue import Inbound, State
from passerelle.queue.memory import MemoryJournal


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(seconds=1)  # the journal stamps appends with wall time

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def doc_for(raw: bytes) -> Document:
    n = raw.decode()
    return Document(
        unique_id=f"1.2.3.{n}", patient=Patient(ins="279035121518989", ins_oid="1.2.250.1.213.1.4.10"),
        type_code=Code(code="11502-2", system="2.16.840.1.113883.6.1"), class_code=Code(code="10", system="x"),
        format_code=Code(code="urn:ihe:lab:xd-lab:2008", system="y"), mime_type="text/xml", title="CR",
        creation_time=datetime(2026, 1, 1, tzinfo=UTC), content=raw,
    )  # fmt: skip


class Mapper:
    async def map(self, row):
        if row.raw == b"adt":
            return Handled("registry updated")
        if row.raw == b"noins":
            raise IdentityError("identity not qualified: PID-32 is not VALI")
        return doc_for(row.raw)


class Consent:
    def __init__(self) -> None:
        self.outcome = Decision(Outcome.DELIVER, Reason.ALLOWED, (Code(code="N", system="2.16.840.1.113883.5.25"),))
        self.after_no_space: Decision | None = None
        self.reported: list[bool] = []

    async def decide(self, doc, row, now, *, no_space_at_delivery=False):
        self.reported.append(no_space_at_delivery)
        if no_space_at_delivery:
            assert self.after_no_space is not None
            return self.after_no_space
        return self.outcome


class Space:
    def __init__(self) -> None:
        self.script: list[Exception | None] = []
        self.delivered: list[str] = []
        self.calls = 0

    async def provide(self, doc):
        self.calls += 1
        if self.script:
            err = self.script.pop(0)
            if err is not None:
                raise err
        self.delivered.append(doc.unique_id)

    async def delete(self, doc):
        return await self.provide(doc)


@pytest.fixture
def env():
    clock = Clock()
    journal = MemoryJournal()
    space = Space()
    consent = Consent()
    settings = WorkerSettings(
        concurrency=4,
        retry=RetrySettings(initial_delay_s=10, multiplier=2, max_delay_s=100, jitter=0.0, deadline_s=300),
    )
    worker = DispatchWorker(journal, Mapper(), consent, space, settings, Metrics(), clock=clock, rng=random.Random(1))
    return clock, journal, space, consent, worker


async def add(journal, *bodies: bytes, lane: str = "p1"):
    res = await journal.append([Inbound(raw=b, channel="mllp", sender="S", kind="oru", lane=lane) for b in bodies])
    return [r.row_id for r in res]


async def test_delivers_in_lane_order(env) -> None:
    _clock, journal, space, _, worker = env
    await add(journal, b"1", b"2", b"3")
    while await worker.run_once():
        pass
    assert space.delivered == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert (await journal.counts())[State.DELIVERED] == 3


async def test_business_refusal_is_final_and_not_retried(env) -> None:
    clock, journal, space, _, worker = env
    [rid] = await add(journal, b"1")
    space.script = [RemoteRejectedError("closed", status=422, remote_code="DMPClosed")]
    await worker.run_once()
    row = await journal.get(rid)
    assert row.state is State.REFUSED and "DMPClosed" in row.detail
    clock.advance(3600)
    assert not await worker.run_once()
    assert space.calls == 1


async def test_identity_refusal_names_the_rule(env) -> None:
    _, journal, space, _, worker = env
    [rid] = await add(journal, b"noins")
    await worker.run_once()
    row = await journal.get(rid)
    assert row.state is State.REFUSED and "identity not qualified" in row.detail and space.calls == 0


async def test_transient_failures_back_off_then_deliver(env) -> None:
    clock, journal, space, _, worker = env
    [rid, later_rid] = await add(journal, b"1", b"2")
    space.script = [RemoteTransientError("503", status=503), RemoteTransientError("429", status=429, retry_after=40)]
    await worker.run_once()
    row = await journal.get(rid)
    assert row.state is State.RETRY and row.next_due == clock.now + timedelta(seconds=10)
    assert not await worker.run_once()  # not due yet: no busy loop, and the later row waits behind it
    assert (await journal.get(later_rid)).state is State.ACCEPTED
    clock.advance(10)
    await worker.run_once()
    row = await journal.get(rid)
    assert row.state is State.RETRY and row.next_due == clock.now + timedelta(seconds=40)  # Retry-After wins over 20 s
    clock.advance(40)
    while await worker.run_once():
        pass
    assert space.delivered == ["1.2.3.1", "1.2.3.2"] and space.calls == 4


async def test_deadline_dead_letters_and_blocks_lane(env) -> None:
    clock, journal, space, _, worker = env
    [rid, nxt] = await add(journal, b"1", b"2")
    space.script = [RemoteTransientError("down")] * 20
    for _ in range(20):
        await worker.run_once()
        clock.advance(100)
    row = await journal.get(rid)
    assert row.state is State.DEAD and "deadline" in row.detail
    assert (await journal.get(nxt)).state is State.ACCEPTED
    assert 3 <= space.calls <= 6


async def test_park_and_refuse_from_consent(env) -> None:
    clock, journal, space, consent, worker = env
    [rid] = await add(journal, b"1")
    consent.outcome = Decision(Outcome.PARK, Reason.SPACE_NOT_ACTIVE, recheck_after=clock.now + timedelta(seconds=900))
    await worker.run_once()
    assert (await journal.get(rid)).state is State.PARKED
    clock.advance(900)
    consent.outcome = Decision(Outcome.REFUSE, Reason.PATIENT_OPPOSED)
    await worker.run_once()
    row = await journal.get(rid)
    assert row.state is State.REFUSED and row.detail == "patient_opposed" and space.calls == 0


async def test_no_space_at_delivery_is_reported_and_the_policy_decides(env) -> None:
    """DMPNotFound: the worker only reports the fact; the consent decision (park, then refuse) is applied."""
    clock, journal, space, consent, worker = env
    [rid] = await add(journal, b"1")
    space.script = [RemoteRejectedError("no space", status=422, remote_code="DMPNotFound")]
    due = clock.now + timedelta(minutes=60)
    consent.after_no_space = Decision(Outcome.PARK, Reason.SPACE_NOT_ACTIVE, recheck_after=due)
    await worker.run_once()
    row = await journal.get(rid)
    assert (row.state, row.detail, row.next_due) == (State.PARKED, "space_not_active", due)
    assert consent.reported == [False, True]
    events = [e.kind for e in await journal.events(rid)]
    assert events[-2:] == ["consent", "parked"]

    clock.advance(3600)
    space.script = [RemoteRejectedError("no space", status=422, remote_code="DMPNotFound")]
    consent.after_no_space = Decision(Outcome.REFUSE, Reason.SPACE_NOT_ACTIVE)
    await worker.run_once()
    row = await journal.get(rid)
    assert (row.state, row.detail) == (State.REFUSED, "space_not_active")
    assert space.calls == 2 and space.delivered == []


async def test_handled_messages_settle_without_delivery(env) -> None:
    _, journal, space, _, worker = env
    [rid] = await add(journal, b"adt")
    await worker.run_once()
    assert (await journal.get(rid)).state is State.DELIVERED and space.calls == 0


async def test_unexpected_error_is_retried_not_lost(env) -> None:
    clock, journal, space, _, worker = env
    [rid] = await add(journal, b"1")
    space.script = [RuntimeError("bug")]
    await worker.run_once()
    assert (await journal.get(rid)).state is State.RETRY
    clock.advance(11)
    await worker.run_once()
    assert (await journal.get(rid)).state is State.DELIVERED


async def test_credential_refusal_is_retried_and_counted_apart(env) -> None:
    from passerelle.errors import RemoteCredentialError

    clock, journal, space, _, worker = env
    [rid] = await add(journal, b"1")
    space.script = [RemoteCredentialError("401 from the space", status=401)]
    await worker.run_once()
    assert (await journal.get(rid)).state is State.RETRY
    assert worker.metrics.delivery_attempts.labels("credential")._value.get() == 1
    clock.advance(11)
    await worker.run_once()
    assert (await journal.get(rid)).state is State.DELIVERED


async def test_untrusted_server_certificate_is_retried_and_counted_apart(env) -> None:
    from passerelle.errors import RemoteUntrustedCertificateError

    clock, journal, space, _, worker = env
    [rid] = await add(journal, b"1")
    space.script = [RemoteUntrustedCertificateError("the server's certificate is not trusted by space.ca_file")]
    await worker.run_once()
    assert (await journal.get(rid)).state is State.RETRY  # the backlog drains once the trust store is fixed
    assert worker.metrics.delivery_attempts.labels("tls_untrusted")._value.get() == 1
    assert worker.metrics.delivery_attempts.labels("transient")._value.get() == 0
    clock.advance(11)
    await worker.run_once()
    assert (await journal.get(rid)).state is State.DELIVERED
