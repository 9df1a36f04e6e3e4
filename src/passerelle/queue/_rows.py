"""What the three journal backends share: the row's columns and their conversion, what is stored of a
payload, the browser's filters, lane due times and the group committer's batches.

Private to :mod:`passerelle.queue`. Beyond this, the backends keep apart how they run statements, how
they store times (SQLite UNIX seconds, PostgreSQL ``timestamptz``, memory datetimes) and what really
differs between them (claims, appends, lane locking).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from passerelle.queue.model import FINAL_STATES, AppendResult, Inbound, Query, Row, State

T = TypeVar("T")

#: Columns read into a :class:`Row`, in :func:`make_row`'s order, from :data:`ROW_SOURCE`.
ROW_COLUMNS = (
    "id", "raw", "channel", "sender", "kind", "message_id", "dedup_key", "lane", "state", "detail", "attempts",
    "received_at", "next_due", "updated_at", "document_id", "patient_id", "deadline", "size", "sha256", "purged_at",
)  # fmt: skip
SELECT_ROW = ", ".join(("p." if c == "raw" else "m.") + c for c in ROW_COLUMNS)
#: A row and its payload (in a table of its own since migration 0002; none once purged).
ROW_SOURCE = "messages m LEFT JOIN payloads p ON p.row_id = m.id"

#: A caller of ``append`` waiting for the commit that holds its items.
Pending = tuple[Sequence[Inbound], "asyncio.Future[list[AppendResult]]"]


def make_row(rec: Sequence[Any], when: Callable[[Any], datetime | None]) -> Row:
    """A :class:`Row` from a record of :data:`ROW_COLUMNS`; ``when`` turns a stored time into UTC."""
    return Row(
        id=rec[0], raw=bytes(rec[1] or b""), channel=rec[2], sender=rec[3], kind=rec[4], message_id=rec[5],
        dedup_key=rec[6], lane=rec[7], state=State(rec[8]), detail=rec[9], attempts=rec[10],
        received_at=_required(when(rec[11])), next_due=when(rec[12]), updated_at=_required(when(rec[13])),
        document_id=rec[14], patient_id=rec[15], deadline=when(rec[16]), size=rec[17], sha256=rec[18],
        payload_purged=rec[19] is not None,
    )  # fmt: skip


def _required(value: datetime | None) -> datetime:
    if value is None:
        raise ValueError("a required journal time is missing")
    return value


@dataclass(frozen=True)
class Stored:
    """What the journal writes for one appended item: the bytes it keeps, the size and digest of all."""

    raw: bytes
    size: int
    sha256: str
    dedup_key: str  # "" for a rejected item: only accepted messages hold a key

    @classmethod
    def of(cls, item: Inbound) -> Stored:
        raw = bytes(item.raw)
        accepted = item.state is State.ACCEPTED
        kept = raw if accepted else raw[: item.kept_bytes]
        return cls(kept, len(raw), hashlib.sha256(raw).hexdigest(), item.dedup_key if accepted else "")


def attempt_increment(state: State) -> int:
    """Settling in ``state`` counts one delivery attempt (a park or a refusal is not an attempt)."""
    return 1 if state in (State.DELIVERED, State.RETRY, State.DEAD) else 0


def lane_due(state: State, next_due: T | None, now: T) -> T | None:
    """When a lane whose head is in ``state`` becomes claimable (None: it waits for an operator)."""
    if state is State.DEAD:
        return None
    if state is State.ACCEPTED or next_due is None:
        return now
    return next_due


def query_filters(
    query: Query, mark: str, when: Callable[[datetime], Any], text: Callable[[str], str] = str
) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (``""`` when there is none) and its parameters for :meth:`find`.

    ``mark`` is the dialect's placeholder, ``when`` converts a time to its stored form, ``text`` makes a
    value storable (PostgreSQL text holds no NUL).
    """
    clauses: list[str] = []
    params: list[Any] = []
    if query.states:
        clauses.append(f"m.state IN ({', '.join([mark] * len(query.states))})")
        params.extend(State(s).value for s in query.states)
    for column, value in (
        ("channel", query.channel),
        ("sender", query.sender),
        ("patient_id", query.patient_id),
        ("document_id", query.document_id),
    ):
        if value:
            # The "<> ''" term lets SQLite use the partial indexes on patient_id and document_id.
            clauses.append(f"m.{column} = {mark}" + (f" AND m.{column} <> ''" if column.endswith("_id") else ""))
            params.append(text(value))
    for clause, moment in (("m.received_at >= ", query.since), ("m.received_at < ", query.until)):
        if moment is not None:
            clauses.append(clause + mark)
            params.append(when(moment))
    for clause, bound in (("m.id < ", query.before_id), ("m.id > ", query.after_id)):
        if bound is not None:
            clauses.append(clause + mark)
            params.append(bound)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def page_size(query: Query) -> int:
    return max(1, min(query.limit, 1000))


def upward(query: Query) -> bool:
    """The page is read upwards (``after_id`` alone: the lowest ids above it), then returned newest first."""
    return query.after_id is not None and query.before_id is None


def take_batch(pending: list[Pending], max_batch: int) -> list[Pending]:
    """Take callers off ``pending`` (in order) for one commit: at most ``max_batch`` items, at least one caller."""
    batch: list[Pending] = []
    count = 0
    while pending and (not batch or count + len(pending[0][0]) <= max_batch):
        entry = pending.pop(0)
        batch.append(entry)
        count += len(entry[0])
    return batch


def resolve(batch: Sequence[Pending], results: Sequence[list[AppendResult]]) -> None:
    """Hand each caller of a committed batch its results."""
    for (_, fut), res in zip(batch, results, strict=True):
        if not fut.done():
            fut.set_result(res)


def fail(batch: Sequence[Pending], err: BaseException) -> None:
    """Every caller of a failed commit gets the failure."""
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(err)


def final_state(state: State) -> str:
    """The stored value of a state retention may act on; ``ValueError`` for a pending or dead one."""
    if state not in FINAL_STATES:
        raise ValueError(f"retention never purges {state.value} rows")
    return state.value
