"""The dispatch worker: journal row → document → consent decision → patient space → settlement.

Contract:
- Rows are claimed per lane (the patient), so a patient's documents go out in the order received and a
  retrying, parked or dead head holds back only that patient's later documents.
- Every outcome is persisted in the journal before the next row of the lane is looked at: a restart
  changes nothing (a lost settle only causes a re-delivery, which the idempotency key absorbs).
- Business refusals (mapping, identity, consent, remote 4xx) are final and never retried; transient
  failures (transport, 408/425/429/5xx, anything unexpected) are retried with exponential backoff and
  jitter, honouring Retry-After, until the per-document deadline, then dead-lettered with the last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from passerelle.config.settings import WorkerSettings
from passerelle.consent.policy import Decision, Outcome
from passerelle.errors import PermanentError, RemoteRejectedError, RemoteTransientError
from passerelle.mappings.document import Action, Document
from passerelle.observability.metrics import Metrics
from passerelle.queue.model import Event, Row, Settlement, State
from passerelle.queue.ports import DispatchJournal

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
#: The space's code for "this patient has no space (yet)" (docs/patient-space-api.md).
NO_SPACE_CODE = "DMPNotFound"


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


class AuditSink(Protocol):
    async def record(
        self,
        *,
        action: str,
        outcome: str,
        reason: str,
        row_id: int,
        document_id: str = "",
        patient_id: str = "",
        actor: str = "passerelle",
    ) -> None: ...


class Notifier(Protocol):
    """Sends the business acknowledgement (ZAM^Z01) to the sender when it asked for one."""

    async def document_settled(self, row: Row, doc: Document, delivered: bool, code: str, label: str) -> None: ...


@dataclass
class WorkerStats:
    processed: int = 0
    by_state: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class DispatchWorker:
    """Claims due lanes and settles their head rows; ``concurrency`` lanes are worked at once."""

    journal: DispatchJournal
    mapper: Mapper
    consent: ConsentGate
    space: Space
    settings: WorkerSettings
    metrics: Metrics
    _: KW_ONLY
    clock: Clock
    audit: AuditSink | None = None
    notifier: Notifier | None = None
    name: str = "worker"
    rng: random.Random = field(default_factory=random.Random)
    stats: WorkerStats = field(default_factory=lambda: WorkerStats(), init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)

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

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = await self.run_once()
            except Exception:  # the journal may be briefly unavailable: back off, never die silently
                self.metrics.worker_errors.labels("claim").inc()
                log.exception("dispatch loop error")
                busy = False
            if not busy:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval_s)

    async def run_once(self) -> bool:
        """Claim one batch of due lanes and settle them. Returns True if anything was claimed."""
        now = self.clock()
        rows = await self.journal.claim(self.name, self.settings.concurrency, self.settings.lease_s, now)
        if not rows:
            return False
        await asyncio.gather(*(self.process(row) for row in rows))
        return True

    # --- one row ----------------------------------------------------------------------------------

    async def process(self, row: Row) -> State:
        now = self.clock()
        events: list[Event] = []
        doc: Document | None = None
        try:
            mapped = await self.mapper.map(row)
            if isinstance(mapped, Handled):
                events.append(Event(row.id, now, "handled", mapped.detail))
                settlement = Settlement(State.DELIVERED, mapped.detail, patient_id=mapped.patient_id, events=events)
                return await self._settle(row, settlement, now, "handled")
            docs = [mapped] if isinstance(mapped, Document) else list(mapped)
            doc = docs[0]
            events.extend(_mapped_events(row, docs, now))
            decisions = [await self.consent.decide(d, row, now) for d in docs]
            decision = _strictest(decisions)
            await self._record_decision(row, doc, decision, events, now)
            if decision.outcome is not Outcome.DELIVER:
                return await self._withhold(row, doc, decision, events, now)
            docs = [
                d.model_copy(update={"confidentiality": x.confidentiality}) if x.confidentiality else d
                for d, x in zip(docs, decisions, strict=True)
            ]
            return await self._deliver(row, docs, events, now)
        except RemoteTransientError as exc:  # e.g. the status lookup could not reach the space
            return await self._transient(row, doc, events, now, exc)
        except PermanentError as exc:
            return await self._refused(row, doc, events, now, exc)
        except Exception as exc:  # an unexpected error is treated as transient: never lose the row
            self.metrics.worker_errors.labels("process").inc()
            log.exception("unexpected error while processing", extra={"row_id": row.id})
            return await self._retry(row, doc, events, now, f"internal error ({type(exc).__name__})", None)

    async def _record_decision(
        self, row: Row, doc: Document, decision: Decision, events: list[Event], now: datetime
    ) -> None:
        self.metrics.consent_decisions.labels(decision.outcome.value, decision.reason.value).inc()
        data: dict[str, object] = {"codes": [c.code for c in decision.confidentiality]}
        if decision.authorisation:  # the space's authorisation of this author (DMP TD0.2), kept in the journal
            data["authorisation"] = decision.authorisation
        events.append(Event(row.id, now, "consent", f"{decision.outcome}: {decision.reason}", data))
        await self._audit("consent-decision", decision.outcome.value, decision.reason.value, row, doc)

    async def _withhold(self, row: Row, doc: Document, decision: Decision, events: list[Event], now: datetime) -> State:
        """Settle a document the consent policy keeps from the space: parked until a re-check, or refused."""
        reason = decision.reason.value
        if decision.outcome is Outcome.REFUSE:
            await self._notify(row, doc, delivered=False, code=reason, label="refused by consent policy")
            return await self._settle(row, self._final(State.REFUSED, reason, doc, events), now, reason)
        if decision.outcome is not Outcome.PARK:
            raise RuntimeError(f"consent decision {decision.outcome} cannot withhold a document")
        due = decision.recheck_after or now + timedelta(seconds=self.settings.park_recheck_s)
        events.append(Event(row.id, now, "parked", reason, {"recheck": due.isoformat()}))
        settlement = Settlement(
            State.PARKED, reason, next_due=due, document_id=doc.unique_id, patient_id=doc.patient.ins, events=events
        )
        return await self._settle(row, settlement, now, reason)

    async def _refused(
        self, row: Row, doc: Document | None, events: list[Event], now: datetime, exc: PermanentError
    ) -> State:
        events.append(Event(row.id, now, "refused", exc.message, {"reason": exc.reason}))
        await self._audit("refusal", "refuse", exc.reason, row, doc)
        if doc is not None:
            await self._notify(row, doc, delivered=False, code=exc.reason, label=exc.message)
        settlement = self._final(State.REFUSED, f"{exc.reason}: {exc.message}", doc, events)
        return await self._settle(row, settlement, now, exc.reason)

    async def _deliver(self, row: Row, docs: Sequence[Document], events: list[Event], now: datetime) -> State:
        if row.deadline is None:
            await self._set_deadline(row, now)
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
                return await self._no_space(row, doc, events, now)
            return await self._rejected(row, doc, events, now, exc)
        except RemoteTransientError as exc:
            return await self._transient(row, doc, events, now, exc)
        done = self.clock()
        self.metrics.delivery_attempts.labels("ok").inc()
        self.metrics.delivery_latency.observe(max(0.0, (done - row.received_at).total_seconds()))
        data: dict[str, object] = {"document_id": doc.unique_id}
        if answers:
            data["answer"] = "; ".join(answers)
        events.append(Event(row.id, done, "delivered", doc.action.value, data))
        await self._audit("delivery", "deliver", doc.action.value, row, doc)
        await self._notify(row, doc, delivered=True, code="", label="")
        return await self._settle(
            row, self._final(State.DELIVERED, f"delivered ({doc.action.value})", doc, events), done, "ok"
        )

    async def _no_space(self, row: Row, doc: Document, events: list[Event], now: datetime) -> State:
        """The space has no space for this patient yet: report the fact, the consent policy decides."""
        self.metrics.delivery_attempts.labels("not_found").inc()
        decision = await self.consent.decide(doc, row, now, no_space_at_delivery=True)
        await self._record_decision(row, doc, decision, events, now)
        return await self._withhold(row, doc, decision, events, now)

    async def _rejected(
        self, row: Row, doc: Document, events: list[Event], now: datetime, exc: RemoteRejectedError
    ) -> State:
        self.metrics.delivery_attempts.labels("rejected").inc()
        detail = f"rejected {exc.status} {exc.remote_code}"
        events.append(Event(row.id, now, "attempt", detail, {"status": exc.status, "code": exc.remote_code}))
        reason = exc.remote_code or exc.reason
        await self._audit("delivery", "refuse", reason, row, doc)
        await self._notify(row, doc, delivered=False, code=exc.remote_code or "REJECTED", label=exc.message)
        return await self._settle(
            row, self._final(State.REFUSED, f"remote refusal: {reason}", doc, events), now, reason
        )

    async def _transient(
        self, row: Row, doc: Document | None, events: list[Event], now: datetime, exc: RemoteTransientError
    ) -> State:
        # Credential problems are retried like any transport failure but counted apart: a person must act.
        self.metrics.delivery_attempts.labels("credential" if exc.reason == "remote_credentials" else "transient").inc()
        detail = f"transient {exc.status or ''} {exc.message}".strip()
        events.append(Event(row.id, now, "attempt", detail, {"status": exc.status}))
        return await self._retry(row, doc, events, now, exc.message, exc.retry_after)

    async def _retry(
        self, row: Row, doc: Document | None, events: list[Event], now: datetime, error: str, retry_after: float | None
    ) -> State:
        deadline = row.deadline or await self._set_deadline(row, now)
        delay = self.backoff(row.attempts, retry_after)
        due = now + timedelta(seconds=delay)
        if due > deadline:
            events.append(Event(row.id, now, "dead", error))
            await self._audit("dead-letter", "dead", "deadline", row, doc)
            if doc is not None:
                await self._notify(row, doc, delivered=False, code="TIMEOUT", label="delivery deadline exceeded")
            return await self._settle(
                row, self._final(State.DEAD, f"deadline exceeded; last error: {error}", doc, events), now, "deadline"
            )
        self.metrics.retries.labels("transient").inc()
        events.append(Event(row.id, now, "retry", error, {"next_due": due.isoformat(), "delay_s": round(delay, 3)}))
        return await self._settle(
            row,
            Settlement(
                State.RETRY,
                error,
                next_due=due,
                document_id=doc.unique_id if doc else "",
                patient_id=doc.patient.ins if doc else "",
                events=events,
            ),
            now,
            "retry",
        )

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, at least ``retry_after`` when the space asked for it."""
        policy = self.settings.retry
        base = min(policy.max_delay_s, policy.initial_delay_s * policy.multiplier ** max(0, attempts))
        jittered = base * (1 + policy.jitter * (2 * self.rng.random() - 1))
        if retry_after is not None:
            jittered = max(jittered, min(retry_after, policy.max_delay_s))
        return max(0.0, jittered)

    async def _set_deadline(self, row: Row, now: datetime) -> datetime:
        deadline = now + timedelta(seconds=self.settings.retry.deadline_s)
        await self.journal.set_deadline(row.id, deadline)
        return deadline

    @staticmethod
    def _final(state: State, detail: str, doc: Document | None, events: Sequence[Event]) -> Settlement:
        return Settlement(
            state,
            detail,
            document_id=doc.unique_id if doc else "",
            patient_id=doc.patient.ins if doc else "",
            events=list(events),
        )

    async def _settle(self, row: Row, settlement: Settlement, now: datetime, reason: str) -> State:
        await self.journal.settle(row.id, settlement, now)
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
        log.info("row settled", extra={"row_id": row.id, "state": state.value, "reason": reason})
        return state

    async def _audit(self, action: str, outcome: str, reason: str, row: Row, doc: Document | None) -> None:
        if self.audit is None:
            return
        try:
            await self.audit.record(
                action=action,
                outcome=outcome,
                reason=reason,
                row_id=row.id,
                document_id=doc.unique_id if doc else row.document_id,
                patient_id=doc.patient.ins if doc else row.patient_id,
            )
        except Exception:  # an audit failure is loud but does not lose the row
            self.metrics.worker_errors.labels("audit").inc()
            log.exception("audit record failed", extra={"row_id": row.id})

    async def _notify(self, row: Row, doc: Document, *, delivered: bool, code: str, label: str) -> None:
        if self.notifier is None or not doc.flags.ack_reception:
            return
        try:
            await self.notifier.document_settled(row, doc, delivered, code, label)
        except Exception:
            self.metrics.worker_errors.labels("notify").inc()
            log.exception("business ack scheduling failed", extra={"row_id": row.id})


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
