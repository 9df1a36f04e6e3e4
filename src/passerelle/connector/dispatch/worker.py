"""The dispatch worker: journal row → document → consent decision → patient space → settlement.

Contract:

- Rows are claimed per lane (the patient), so a patient's documents go out in the order received and a
  retrying, parked or dead head holds back only that patient's later documents.
- A continuous pipeline: up to ``worker.concurrency`` rows are in flight, each in its own task, and
  free slots are claimed again as soon as rows settle (no batch waits for its slowest row).
- Every outcome is persisted in the journal before the next row of the lane can be claimed: the
  settlement (with the row's events) is written by a group commit shared by the rows settling at the
  same time, after the row's audit records; a lost settle only causes a re-delivery, which the
  idempotency key absorbs. A business acknowledgement starts only once its row's settlement is durable.
- Business refusals (mapping, identity, consent, remote 4xx) are final and never retried; transient
  failures (transport, 408/425/429/5xx, anything unexpected) are retried with exponential backoff and
  jitter, honouring Retry-After, until the per-document deadline (fixed at the first attempt and
  recorded with its first retry), then dead-lettered with the last error.
- The worker heartbeats (``worker.heartbeat_s``): before its first claim, and then regularly, the
  journal gives back the claims of workers that are gone (a previous process, a dead instance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from passerelle.config.settings import WorkerSettings
from passerelle.connector.dispatch.group_commit import GroupCommit
from passerelle.consent.policy import Decision, Outcome
from passerelle.errors import PermanentError, RemoteRejectedError, RemoteTransientError, transient_result
from passerelle.mappings.document import Action, Document
from passerelle.observability.audit import AuditTrail
from passerelle.observability.metrics import Metrics
from passerelle.queue.model import Event, Row, Settlement, State
from passerelle.queue.ports import DispatchJournal

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
#: The space's code for "this patient has no space (yet)" (docs/patient-space-api.md).
NO_SPACE_CODE = "DMPNotFound"
#: Most settlements one commit carries.
SETTLE_BATCH = 256


@dataclass(frozen=True)
class Handled:
    """A message that is not a document (e.g. a consent feed) and was fully handled by the mapper."""

    detail: str
    patient_id: str = ""


class Mapper(Protocol):
    async def map(self, row: Row) -> Document | Sequence[Document] | Handled:
        """Decode and map a journal row. Raises a PermanentError when it can never become a document."""
        ...


class ConsentGate(Protocol):
    async def decide(self, doc: Document, row: Row, now: datetime, *, no_space_at_delivery: bool = False) -> Decision:
        """The consent policy's decision for ``doc``; ``no_space_at_delivery`` reports that the space just
        answered a delivery with "no space for this patient" (the policy decides what that means)."""
        ...


class Space(Protocol):
    async def provide(self, doc: Document) -> object: ...

    async def delete(self, doc: Document) -> object: ...


class Notice(Protocol):
    """A business acknowledgement decided for a settled row."""

    @property
    def events(self) -> Sequence[Event]:
        """Recorded in the row's journey with its settlement."""
        ...

    @property
    def send(self) -> Callable[[], None]:
        """Starts sending, called once the settlement is durable."""
        ...


class Notifier(Protocol):
    """Builds the business acknowledgement (ZAM^Z01) for the sender when it asked for one."""

    def document_settled(self, row: Row, doc: Document, delivered: bool, code: str, label: str) -> Notice | None: ...


@dataclass
class WorkerStats:
    processed: int = 0
    by_state: dict[str, int] = field(default_factory=dict)


@dataclass
class _Job:
    """One row being worked: what its settlement will carry, and what follows it."""

    row: Row
    now: datetime
    events: list[Event] = field(default_factory=list)
    audits: list[tuple[str, str, str, Document | None]] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


def dispatch_window(worker: WorkerSettings, max_connections: int | None) -> tuple[WorkerSettings, int]:
    """The worker's settings and the space client's pool size, matched: every row in flight holds at
    most one request, so the pool is sized to the window (plus room for a token request); a pool set
    smaller (``space.max_connections``) caps the window instead of making rows wait for a connection."""
    if max_connections is None:
        return worker, worker.concurrency + 2
    if max_connections < worker.concurrency:
        log.info("dispatch window capped to space.max_connections (%d)", max_connections)
        return worker.model_copy(update={"concurrency": max_connections}), max_connections
    return worker, max_connections


def instance_name() -> str:
    """A name no other worker uses (host, process, random part): claims and heartbeats carry it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(eq=False)
class DispatchWorker:
    """Claims due lanes and settles their head rows; up to ``settings.concurrency`` rows in flight."""

    journal: DispatchJournal
    mapper: Mapper
    consent: ConsentGate
    space: Space
    settings: WorkerSettings
    metrics: Metrics
    _: KW_ONLY
    clock: Clock
    audit: AuditTrail | None = None
    notifier: Notifier | None = None
    name: str = field(default_factory=instance_name)
    rng: random.Random = field(default_factory=random.Random)
    stats: WorkerStats = field(default_factory=lambda: WorkerStats(), init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _active: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _settler: GroupCommit[tuple[int, Settlement]] = field(init=False)

    def __post_init__(self) -> None:
        self._settler = GroupCommit(self._settle_batch, max_batch=SETTLE_BATCH)

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=f"dispatch-{self.name}")

    def wake(self) -> None:
        """Called after intake commits, so new work does not wait for the poll interval."""
        self._wake.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; let in-flight rows settle for up to ``timeout`` seconds, then cancel. Idempotent."""
        if self._task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    @property
    def in_flight(self) -> int:
        return len(self._active)

    async def _run(self) -> None:
        beat = asyncio.create_task(self._heartbeats(), name=f"heartbeat-{self.name}")
        try:
            await self._heartbeat()  # the claims of a gone worker come back before the first claim
            while not self._stopping.is_set():
                self._wake.clear()
                await self._fill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval_s)
            if self._active:  # stopping: the rows in flight settle (stop() bounds the wait)
                await asyncio.wait(set(self._active))
        finally:
            beat.cancel()
            for task in list(self._active):
                task.cancel()
            if self._active:
                await asyncio.wait(set(self._active))
            await self._settler.aclose()

    async def _fill(self) -> None:
        """Claim as many due lanes as there are free slots; each row runs in its own task."""
        free = self.settings.concurrency - len(self._active)
        if free <= 0:
            return
        try:
            rows = await self.journal.claim(self.name, free, self.settings.lease_s, self.clock())
        except Exception:  # the journal may be briefly unavailable: back off, never die silently
            self.metrics.worker_errors.labels("claim").inc()
            log.exception("dispatch claim failed")
            return
        for row in rows:
            task = asyncio.create_task(self._work(row), name=f"row-{row.id}")
            self._active.add(task)

    async def _work(self, row: Row) -> None:
        try:
            await self.process(row)
        except Exception:  # the settle itself failed: the lease (or a restart) brings the row back
            self.metrics.worker_errors.labels("settle").inc()
            log.exception("row not settled", extra={"row_id": row.id})
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._active.discard(task)
            self._wake.set()  # a slot is free, and the lane's next row may be due

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        try:
            released = await self.journal.heartbeat(self.name, self.clock(), self.settings.dead_after_s)
        except Exception:
            self.metrics.worker_errors.labels("heartbeat").inc()
            log.exception("dispatch heartbeat failed")
            return
        if released:
            log.warning("claims of a gone dispatch worker given back", extra={"count": released})
            self._wake.set()

    async def run_once(self) -> bool:
        """Claim one batch of due lanes and settle them all. Returns True if anything was claimed."""
        rows = await self.journal.claim(self.name, self.settings.concurrency, self.settings.lease_s, self.clock())
        if not rows:
            return False
        await asyncio.gather(*(self.process(row) for row in rows))
        return True

    # --- one row ----------------------------------------------------------------------------------

    async def process(self, row: Row) -> State:
        job = _Job(row, self.clock())
        doc: Document | None = None
        try:
            mapped = await self.mapper.map(row)
            if isinstance(mapped, Handled):
                job.events.append(Event(row.id, job.now, "handled", mapped.detail))
                settlement = Settlement(State.DELIVERED, mapped.detail, patient_id=mapped.patient_id)
                return await self._settle(job, settlement, "handled")
            docs = [mapped] if isinstance(mapped, Document) else list(mapped)
            doc = docs[0]
            job.events.extend(_mapped_events(row, docs, job.now))
            decisions = [await self.consent.decide(d, row, job.now) for d in docs]
            decision = _strictest(decisions)
            self._record_decision(job, doc, decision)
            if decision.outcome is not Outcome.DELIVER:
                return await self._withhold(job, doc, decision)
            docs = [
                d.model_copy(update={"confidentiality": x.confidentiality}) if x.confidentiality else d
                for d, x in zip(docs, decisions, strict=True)
            ]
            return await self._deliver(job, docs)
        except RemoteTransientError as exc:  # e.g. the status lookup could not reach the space
            return await self._transient(job, doc, exc)
        except PermanentError as exc:
            return await self._refused(job, doc, exc)
        except Exception as exc:  # an unexpected error is treated as transient: never lose the row
            self.metrics.worker_errors.labels("process").inc()
            log.exception("unexpected error while processing", extra={"row_id": row.id})
            return await self._retry(job, doc, f"internal error ({type(exc).__name__})", None)

    def _record_decision(self, job: _Job, doc: Document, decision: Decision) -> None:
        self.metrics.consent_decisions.labels(decision.outcome.value, decision.reason.value).inc()
        data: dict[str, object] = {"codes": [c.code for c in decision.confidentiality]}
        if decision.authorisation:  # the space's authorisation of this author (DMP TD0.2), kept in the journal
            data["authorisation"] = decision.authorisation
        job.events.append(Event(job.row.id, job.now, "consent", f"{decision.outcome}: {decision.reason}", data))
        job.audits.append(("consent-decision", decision.outcome.value, decision.reason.value, doc))

    async def _withhold(self, job: _Job, doc: Document, decision: Decision) -> State:
        """Settle a document the consent policy keeps from the space: parked until a re-check, or refused."""
        reason = decision.reason.value
        if decision.outcome is Outcome.REFUSE:
            self._notify(job, doc, delivered=False, code=reason, label="refused by consent policy")
            return await self._settle(job, self._final(State.REFUSED, reason, doc), reason)
        if decision.outcome is not Outcome.PARK:
            raise RuntimeError(f"consent decision {decision.outcome} cannot withhold a document")
        due = decision.recheck_after or job.now + timedelta(seconds=self.settings.park_recheck_s)
        job.events.append(Event(job.row.id, job.now, "parked", reason, {"recheck": due.isoformat()}))
        settlement = Settlement(
            State.PARKED, reason, next_due=due, document_id=doc.unique_id, patient_id=doc.patient.ins
        )
        return await self._settle(job, settlement, reason)

    async def _refused(self, job: _Job, doc: Document | None, exc: PermanentError) -> State:
        job.events.append(Event(job.row.id, job.now, "refused", exc.message, {"reason": exc.reason}))
        job.audits.append(("refusal", "refuse", exc.reason, doc))
        if doc is not None:
            self._notify(job, doc, delivered=False, code=exc.reason, label=exc.message)
        return await self._settle(job, self._final(State.REFUSED, f"{exc.reason}: {exc.message}", doc), exc.reason)

    async def _deliver(self, job: _Job, docs: Sequence[Document]) -> State:
        doc = docs[0]
        answers: list[str] = []  # the space's own answers (DMP: status, codes, message ids), kept in the journal
        try:
            for doc in docs:  # several renderings of one message: each push is idempotent
                if doc.action is Action.DELETE:
                    receipt = await self.space.delete(doc)
                else:
                    receipt = await self.space.provide(doc)
                if getattr(receipt, "remote_answer", ""):
                    answers.append(receipt.remote_answer)  # type: ignore[attr-defined]
        except RemoteRejectedError as exc:
            if exc.remote_code == NO_SPACE_CODE:
                return await self._no_space(job, doc)
            return await self._rejected(job, doc, exc)
        except RemoteTransientError as exc:
            return await self._transient(job, doc, exc)
        done = self.clock()
        self.metrics.delivery_attempts.labels("ok").inc()
        self.metrics.delivery_latency.observe(max(0.0, (done - job.row.received_at).total_seconds()))
        data: dict[str, object] = {"document_id": doc.unique_id}
        if answers:
            data["answer"] = "; ".join(answers)
        job.events.append(Event(job.row.id, done, "delivered", doc.action.value, data))
        job.audits.append(("delivery", "deliver", doc.action.value, doc))
        self._notify(job, doc, delivered=True, code="", label="")
        job.now = done
        return await self._settle(job, self._final(State.DELIVERED, f"delivered ({doc.action.value})", doc), "ok")

    async def _no_space(self, job: _Job, doc: Document) -> State:
        """The space has no space for this patient yet: report the fact, the consent policy decides."""
        self.metrics.delivery_attempts.labels("not_found").inc()
        decision = await self.consent.decide(doc, job.row, job.now, no_space_at_delivery=True)
        self._record_decision(job, doc, decision)
        return await self._withhold(job, doc, decision)

    async def _rejected(self, job: _Job, doc: Document, exc: RemoteRejectedError) -> State:
        self.metrics.delivery_attempts.labels("rejected").inc()
        detail = f"rejected {exc.status} {exc.remote_code}"
        job.events.append(
            Event(job.row.id, job.now, "attempt", detail, {"status": exc.status, "code": exc.remote_code})
        )
        reason = exc.remote_code or exc.reason
        job.audits.append(("delivery", "refuse", reason, doc))
        self._notify(job, doc, delivered=False, code=exc.remote_code or "REJECTED", label=exc.message)
        return await self._settle(job, self._final(State.REFUSED, f"remote refusal: {reason}", doc), reason)

    async def _transient(self, job: _Job, doc: Document | None, exc: RemoteTransientError) -> State:
        # Refused credentials and an untrusted server certificate are retried like any transport failure but
        # counted apart (result credential, tls_untrusted): a person must act.
        self.metrics.delivery_attempts.labels(transient_result(exc)).inc()
        detail = f"transient {exc.status or ''} {exc.message}".strip()
        job.events.append(Event(job.row.id, job.now, "attempt", detail, {"status": exc.status}))
        return await self._retry(job, doc, exc.message, exc.retry_after)

    async def _retry(self, job: _Job, doc: Document | None, error: str, retry_after: float | None) -> State:
        row, now = job.row, job.now
        deadline = row.deadline or now + timedelta(seconds=self.settings.retry.deadline_s)
        delay = self.backoff(row.attempts, retry_after)
        due = now + timedelta(seconds=delay)
        if due > deadline:
            job.events.append(Event(row.id, now, "dead", error))
            job.audits.append(("dead-letter", "dead", "deadline", doc))
            if doc is not None:
                self._notify(job, doc, delivered=False, code="TIMEOUT", label="delivery deadline exceeded")
            settlement = self._final(State.DEAD, f"deadline exceeded; last error: {error}", doc)
            return await self._settle(job, settlement, "deadline")
        self.metrics.retries.labels("transient").inc()
        job.events.append(Event(row.id, now, "retry", error, {"next_due": due.isoformat(), "delay_s": round(delay, 3)}))
        settlement = Settlement(
            State.RETRY,
            error,
            next_due=due,
            document_id=doc.unique_id if doc else "",
            patient_id=doc.patient.ins if doc else "",
            deadline=deadline,
        )
        return await self._settle(job, settlement, "retry")

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, at least ``retry_after`` when the space asked for it."""
        policy = self.settings.retry
        base = min(policy.max_delay_s, policy.initial_delay_s * policy.multiplier ** max(0, attempts))
        jittered = base * (1 + policy.jitter * (2 * self.rng.random() - 1))
        if retry_after is not None:
            jittered = max(jittered, min(retry_after, policy.max_delay_s))
        return max(0.0, jittered)

    @staticmethod
    def _final(state: State, detail: str, doc: Document | None) -> Settlement:
        return Settlement(
            state, detail, document_id=doc.unique_id if doc else "", patient_id=doc.patient.ins if doc else ""
        )

    # --- settling ---------------------------------------------------------------------------------

    async def _settle(self, job: _Job, settlement: Settlement, reason: str) -> State:
        """Audit records first, then the settlement with the row's events (both group-committed); the
        business acknowledgement goes out once the settlement is durable."""
        await self._write_audit(job)
        events = [*job.events, *(e for notice in job.notices for e in notice.events)]
        await self._settler.submit((job.row.id, _with_events(settlement, events)))
        for notice in job.notices:
            notice.send()
        state = settlement.state
        if state is not State.RETRY:
            outcome = {
                State.DELIVERED: "delivered",
                State.PARKED: "parked",
                State.REFUSED: "refused",
                State.DEAD: "dead",
            }.get(state, state.value)
            self.metrics.documents.labels(outcome, reason).inc()
        self.stats.processed += 1
        self.stats.by_state[state.value] = self.stats.by_state.get(state.value, 0) + 1
        log.info("row settled", extra={"row_id": job.row.id, "state": state.value, "reason": reason})
        return state

    async def _settle_batch(self, items: Sequence[tuple[int, Settlement]]) -> None:
        await self.journal.settle_many(items, self.clock())

    async def _write_audit(self, job: _Job) -> None:
        """The row's audit records, appended together (the audit store group-commits them)."""
        if self.audit is None or not job.audits:
            return
        row = job.row
        calls = [
            self.audit.record(
                action=action,
                outcome=outcome,
                reason=reason,
                row_id=row.id,
                document_id=doc.unique_id if doc else row.document_id,
                patient_id=doc.patient.ins if doc else row.patient_id,
            )
            for action, outcome, reason, doc in job.audits
        ]
        for result in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(result, Exception):  # an audit failure is loud but does not lose the row
                self.metrics.worker_errors.labels("audit").inc()
                log.error("audit record failed: %s", type(result).__name__, extra={"row_id": row.id})

    def _notify(self, job: _Job, doc: Document, *, delivered: bool, code: str, label: str) -> None:
        if self.notifier is None or not doc.flags.ack_reception:
            return
        try:
            notice = self.notifier.document_settled(job.row, doc, delivered, code, label)
        except Exception:
            self.metrics.worker_errors.labels("notify").inc()
            log.exception("business ack scheduling failed", extra={"row_id": job.row.id})
            return
        if notice is not None:
            job.notices.append(notice)


def _with_events(settlement: Settlement, events: Sequence[Event]) -> Settlement:
    s = settlement
    return Settlement(s.state, s.detail, s.next_due, s.document_id, s.patient_id, list(events), s.deadline)


def _mapped_events(row: Row, docs: Sequence[Document], now: datetime) -> list[Event]:
    return [
        Event(
            row.id,
            now,
            "mapped",
            f"{d.type_code.code} {d.action.value}",
            {"document_id": d.unique_id, "type": d.type_code.code, "format": d.format_code.code},
        )
        for d in docs
    ]


def _strictest(decisions: Sequence[Decision]) -> Decision:
    """One message, several documents: a refusal wins, then a park, else the first (deliver)."""
    for outcome in (Outcome.REFUSE, Outcome.PARK):
        found = next((d for d in decisions if d.outcome is outcome), None)
        if found is not None:
            return found
    return decisions[0]
