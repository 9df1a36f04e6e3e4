"""The message browser: summaries, a message's whole journey, and replay. Shared by the CLI and the API.

Nothing here returns message content: identifiers, states, reasons, events and sizes only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from passerelle.queue.model import Query, Row, State
from passerelle.queue.ports import AdminJournal, BrowserJournal

REPLAYABLE = (State.DEAD, State.REFUSED, State.PARKED)

#: The positive reply each channel gives once a message is committed (the one reply table, docs/architecture.md).
POSITIVE_REPLY = {
    "mllp": "AA (or CA) after the commit",
    "http": "202 Accepted after the commit",
    "dicom": "C-STORE 0x0000 after the commit",
    "folder": "moved to processed/ after the commit",
}

#: Optional hook that renders what a replay would send (document metadata), for ``--dry-run``.
Preview = Callable[[Row], Awaitable[dict[str, Any]]]
#: Optional hook recording an administrative action in the audit trail.
AuditHook = Callable[[str, int, str, str], Awaitable[None]]


def row_summary(row: Row) -> dict[str, Any]:
    return {
        "id": row.id,
        "received_at": row.received_at.isoformat(),
        "channel": row.channel,
        "sender": row.sender,
        "kind": row.kind,
        "message_id": row.message_id,
        "state": row.state.value,
        "detail": row.detail,
        "attempts": row.attempts,
        "next_due": row.next_due.isoformat() if row.next_due else None,
        "document_id": row.document_id,
        "patient_id": row.patient_id,
        "size": row.size,  # of the message as received (a rejected one keeps only its beginning)
        "sha256": row.sha256,  # of the message as received: identifies it even once its payload is gone
        "payload": payload_state(row),
    }


def payload_state(row: Row) -> str:
    """What the journal still holds of the message: ``stored``, ``truncated`` (a rejected message's beginning:
    64 KiB, 1 KiB without a readable header) or ``purged`` (retention emptied it; size and SHA-256 remain; it can no longer be replayed)."""
    if row.payload_purged:
        return "purged"
    return "truncated" if row.truncated else "stored"


async def select_rows(journal: BrowserJournal, query: Query) -> list[int]:
    """Ids of the rows a replay by filter would take (newest first, at most ``query.limit``)."""
    return [row.id for row in await journal.find(query)]


async def journey(journal: BrowserJournal, row_id: int) -> dict[str, Any] | None:
    row = await journal.get(row_id)
    if row is None:
        return None
    events = await journal.events(row_id)
    out = row_summary(row)
    out["updated_at"] = row.updated_at.isoformat()
    out["deadline"] = row.deadline.isoformat() if row.deadline else None
    timed = [(e.at, e.kind, e.detail, e.data) for e in events]
    if not any(kind in ("received", "rejected") for _, kind, _, _ in timed):
        # The receipt is the row itself (kept out of the events table to keep intake commits small), and so
        # is the positive reply, which is only ever sent after the commit (docs/ack-contract.md).
        if row.state is State.REJECTED:
            timed.insert(0, (row.received_at, "rejected", row.detail, {}))
        else:
            timed[:0] = [
                (row.received_at, "received", f"{row.channel} from {row.sender}", {}),
                (row.received_at, "ack", POSITIVE_REPLY.get(row.channel, "positive reply"), {}),
            ]
    # In time order: the events table is in insertion order, which is not always the order things happened
    # (a settlement writes its batch at once; a business ACK or a replay is recorded later than it ran).
    timed.sort(key=lambda e: e[0])
    out["events"] = [
        {"at": at.isoformat(), "kind": kind, "detail": detail, "data": data} for at, kind, detail, data in timed
    ]
    return out


def mask_ins(ins: str) -> str:
    """An INS as the console shows it unless revealed: the first digit (sex) and the last two (the key)."""
    if len(ins) <= 4:
        return "•" * len(ins)
    return ins[0] + "•" * (len(ins) - 3) + ins[-2:]


async def replay_rows(
    journal: AdminJournal,
    row_ids: Sequence[int],
    *,
    now: datetime,
    actor: str,
    dry_run: bool,
    preview: Preview | None = None,
    audit: AuditHook | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Put dead-lettered, refused or parked rows back in their lane. The space's idempotency on the
    document unique id guarantees a replay never creates a duplicate document. ``progress(1)`` is called
    after each row (a progress bar on long replays)."""
    items: list[dict[str, Any]] = []
    for row_id in row_ids:
        items.append(await _replay_one(journal, row_id, now, actor, dry_run, preview, audit))
        if progress is not None:
            progress(1)
    return {
        "dry_run": dry_run,
        "count": sum(1 for i in items if i["result"] in ("replayed", "would replay")),
        "items": items,
    }


async def _replay_one(
    journal: AdminJournal,
    row_id: int,
    now: datetime,
    actor: str,
    dry_run: bool,
    preview: Preview | None,
    audit: AuditHook | None,
) -> dict[str, Any]:
    row = await journal.get(row_id)
    if row is None:
        return {"id": row_id, "result": "not found"}
    if row.state not in REPLAYABLE:
        return {"id": row_id, "state": row.state.value, "result": "not replayable"}
    entry: dict[str, Any] = {"id": row_id, "state": row.state.value, "document_id": row.document_id}
    if dry_run:
        entry["result"] = "would replay"
        if preview is not None:
            try:
                entry["would_send"] = await preview(row)
            except Exception as exc:  # noqa: BLE001 - a preview error is reported, not raised
                entry["would_send"] = {"error": type(exc).__name__, "detail": getattr(exc, "message", "")}
        return entry
    done = await journal.requeue(row_id, now, f"replayed by {actor}")
    entry["result"] = "replayed" if done else "not replayable"
    if done and audit is not None:
        await audit("replay", row_id, row.document_id, row.patient_id)
    return entry
