"""The journal's data types: states, inbound items, rows, events, settlements, queries, registry entries.

The ports (what each user of the journal may call) are in :mod:`passerelle.queue.ports`.

Commit semantics: :meth:`Journal.append` returns only once the rows it wrote are durable (SQLite WAL
with ``synchronous=FULL``, PostgreSQL commit). Intake replies positively only after it returns.
Per-patient order: each row belongs to a *lane* (the patient's ordering key); at most one row per lane
is claimed at a time, always the lowest pending id, so a retrying, parked or dead head holds back only
its own lane.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple


class State(StrEnum):
    ACCEPTED = "accepted"  # stored, waiting for processing
    REJECTED = "rejected"  # refused at intake (kept for the browser), never processed
    DELIVERED = "delivered"
    RETRY = "retry"  # transient failure, next attempt at next_due
    PARKED = "parked"  # waiting for a condition (space not active, identity not qualified)
    REFUSED = "refused"  # business refusal (consent, identity, remote 4xx): final
    DEAD = "dead"  # retries exhausted: final until replayed


PENDING_STATES = (State.ACCEPTED, State.RETRY, State.PARKED)
#: States that block later rows of the same lane: a dead head waits for an operator (docs/journal.md).
BLOCKING_STATES = (State.ACCEPTED, State.RETRY, State.PARKED, State.DEAD)
#: Settled rows: their payload is purged after ``retention.payload_days`` (a "handled" message, e.g. a
#: consent feed, is settled as DELIVERED).
SETTLED_STATES = (State.DELIVERED, State.REFUSED)
#: Rows that retention may delete after ``retention.record_days``. Blocking rows never are.
FINAL_STATES = (State.DELIVERED, State.REFUSED, State.REJECTED)
#: What a rejected message keeps of its bytes (with its full size and SHA-256): enough to diagnose.
REJECTED_PAYLOAD_LIMIT = 64 * 1024
#: What a rejected input keeps when not even its header could be read (not HL7, a TLS handshake on the
#: plain port, binary junk): a glimpse to tell what it was, so that a junk flood costs little storage.
UNREADABLE_PAYLOAD_LIMIT = 1024


@dataclass(frozen=True)
class Inbound:
    """One message to append. ``ack`` is the positive reply the sender gets (replayed on duplicates)."""

    raw: bytes
    channel: str  # mllp | http | folder | dicom
    sender: str
    kind: str  # oru | mdm | adt | lab | cda | dicom
    message_id: str = ""
    dedup_key: str = ""  # "" = no dedup (e.g. unreadable header)
    content_hash: str = ""
    lane: str = ""  # ordering key (patient); "" = its own lane
    state: State = State.ACCEPTED
    detail: str = ""  # PHI-free reason for a rejected row
    ack: bytes = b""
    readable: bool = True  # False: no header could be read (a rejected row keeps UNREADABLE_PAYLOAD_LIMIT)

    @property
    def kept_bytes(self) -> int:
        """How many of ``raw``'s bytes the journal keeps: all of an accepted message, the first
        :data:`REJECTED_PAYLOAD_LIMIT` (or :data:`UNREADABLE_PAYLOAD_LIMIT`) of a rejected one."""
        if self.state is State.ACCEPTED:
            return len(self.raw)
        return REJECTED_PAYLOAD_LIMIT if self.readable else UNREADABLE_PAYLOAD_LIMIT


@dataclass(frozen=True)
class AppendResult:
    row_id: int
    duplicate: bool = False  # same dedup key and same bytes: nothing new was written
    conflict: bool = False  # same dedup key, different bytes: nothing was written
    stored_ack: bytes = b""  # the reply given the first time (for duplicates)


@dataclass(frozen=True)
class Row:
    """One journal row. ``raw`` is the stored payload: the whole message, except for a rejected one
    (its first :data:`REJECTED_PAYLOAD_LIMIT` bytes, :data:`UNREADABLE_PAYLOAD_LIMIT` without a header) and a purged one (empty, ``payload_purged``).
    ``size`` and ``sha256`` always describe the message as received."""

    id: int
    raw: bytes
    channel: str
    sender: str
    kind: str
    message_id: str
    dedup_key: str
    lane: str
    state: State
    detail: str
    attempts: int
    received_at: datetime
    next_due: datetime | None
    updated_at: datetime
    document_id: str = ""
    patient_id: str = ""
    deadline: datetime | None = None
    size: int = 0
    sha256: str = ""
    payload_purged: bool = False

    @property
    def truncated(self) -> bool:
        """Only the first part of the message is kept (a rejected message larger than the limit)."""
        return not self.payload_purged and len(self.raw) < self.size


@dataclass(frozen=True)
class Event:
    row_id: int
    at: datetime
    kind: str  # received | ack | mapped | consent | attempt | delivered | parked | refused | dead | replay | zam
    detail: str = ""
    data: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Settlement:
    """What happened to a claimed row. ``next_due`` is required for RETRY and PARKED. ``deadline`` is
    the row's delivery deadline, recorded only when the row has none yet (its first attempt's)."""

    state: State
    detail: str = ""
    next_due: datetime | None = None
    document_id: str = ""
    patient_id: str = ""
    events: Sequence[Event] = ()
    deadline: datetime | None = None


@dataclass(frozen=True)
class Query:
    """The browser's filters (combined with AND) and one keyset page of at most ``limit`` rows, always
    returned newest first: with ``before_id`` the page just below that id, with ``after_id`` the page
    just above it (the ``limit`` rows with the lowest ids above), with neither the newest rows."""

    states: Sequence[State] = ()
    sender: str = ""
    patient_id: str = ""
    document_id: str = ""
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    before_id: int | None = None
    channel: str = ""  # mllp | http | folder | dicom
    after_id: int | None = None


class Activity(NamedTuple):
    """What happened since a moment: messages received (any state) and messages delivered."""

    received: int
    delivered: int


@dataclass(frozen=True)
class RegistryEntry:
    """Local consent registry entry (PAM France ADT ZFA): what the facility collected."""

    ins: str
    ins_oid: str
    dmp_status: str = ""  # ACTIF / FERME / INEXISTANT
    feeding: str = ""  # ZFA-9: NA / IO (opposed) / INO (not opposed)
    consultation: str = ""  # ZFA-11: NA / INC / IC
    updated_at: datetime | None = None
    source_row: int = 0


@dataclass(frozen=True)
class SeriesEntry:
    """Latest version sent for a logical series (lab order, imaging study)."""

    series_key: str
    unique_id: str
    set_id: str
    version: int
    row_id: int
