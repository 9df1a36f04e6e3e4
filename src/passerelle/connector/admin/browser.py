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
        "size": row.size,  # of the message as received (a rejected one keeps only its first 64 KiB)
        "sha256": row.sha256,  # of the message as received: identifies it even once its payload is gone
        "payload": payload_state(row),
    }


def payload_state(row: Row) -> str:
    """What the journal still holds of the message: ``stored``, ``truncated`` (a rejected message's first
    64 KiB) or ``purged`` (retention emptied it; size and SHA-256 remain; it can no longer be replayed)."""
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
    stored = [{"at": e.at.isoformat(), "kind": e.kind, "detail": e.detail, "data": e.data} for e in events]
    if not any(e["kind"] in ("received", "rejected") for e in stored):
        # The receipt is the row itself (kept out of the events table to keep intake commits small).
        kind = "rejected" if row.state is State.REJECTED else "received"
        detail = row.detail if row.state is State.REJECTED else f"{row.channel} from {row.sender}"
        stored.insert(0, {"at": row.received_at.isoformat(), "kind": kind, "detail": detail, "data": {}})
    out["events"] = stored
    return out


async def replay_rows(
    journal: AdminJournal,
    row_ids: Sequence[int],
    *,
    now: datetime,
    actor: str,
    dry_run: bool,
    preview: Preview | None = None,
    audit: AuditHook | None = None,
) -> dict[str, Any]:
    """Put dead-lettered, refused or parked rows back in their lane. The space's idempotency on the
    document unique id guarantees a replay never creates a duplicate document."""
    items: list[dict[str, Any]] = []
    for row_id in row_ids:
        row = await journal.get(row_id)
        if row is None:
            items.append({"id": row_id, "result": "not found"})
            continue
        if row.state not in REPLAYABLE:
            items.append({"id": row_id, "state": row.state.value, "result": "not replayable"})
            continue
        entry: dict[str, Any] = {"id": row_id, "state": row.state.value, "document_id": row.document_id}
        if dry_run:
            entry["result"] = "would replay"
            if preview is not None:
                try:
                    entry["would_send"] = await preview(row)
                except Exception as exc:  # noqa: BLE001 - a preview error is reported, not raised
                    entry["would_send"] = {"error": type(exc).__name__, "detail": getattr(exc, "message", "")}
        else:
            done = await journal.requeue(row_id, now, f"replayed by {actor}")
            entry["result"] = "replayed" if done else "not replayable"
            if done and audit is not None:
                await audit("replay", row_id, row.document_id, row.patient_id)
        items.append(entry)
    return {
        "dry_run": dry_run,
        "count": sum(1 for i in items if i["result"] in ("replayed", "would replay")),
        "items": items,
    }
