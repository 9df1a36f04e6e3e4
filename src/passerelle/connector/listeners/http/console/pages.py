"""The console's pages (GET): overview, message list, one message's journey, dead letters, audit trail,
and the downloads of a message (raw, generated document, metadata), which are audited.

Every page reads through :mod:`passerelle.connector.admin` (the browser's shared logic) and the journal's
browser port; lists page by id (keyset), never by offset, so a page costs the same at row 1,000,000.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import quote_plus

from fastapi import APIRouter, Depends, Query, Request, Response

from passerelle.connector.admin.browser import REPLAYABLE, journey, mask_ins, row_summary
from passerelle.connector.admin.documents import Rendered, document_file
from passerelle.connector.listeners.http.console.base import ConsoleBase, ConsoleRefusal
from passerelle.connector.listeners.http.sessions import Session
from passerelle.errors import PasserelleError
from passerelle.observability.audit import AuditAction
from passerelle.queue.audit import AuditQuery
from passerelle.queue.model import Query as JournalQuery
from passerelle.queue.model import Row, State

PAGE = 50
CHANNELS = ("mllp", "http", "folder", "dicom")
RAW_EXTENSION = {"cda": "xml", "dicom": "dcm"}


def _day(value: str) -> datetime | None:
    """A ``YYYY-MM-DD`` date input (empty: None); a malformed one is ignored like an empty one."""
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


class ConsolePages(ConsoleBase):
    def routes(self, router: APIRouter) -> None:
        read = [Depends(self.read)]
        for path, endpoint in (
            ("/", self.overview),
            ("/messages", self.messages),
            ("/messages/{row_id}", self.message),
            ("/messages/{row_id}/raw", self.raw),
            ("/messages/{row_id}/document", self.document),
            ("/messages/{row_id}/metadata", self.metadata),
            ("/dead-letters", self.dead_letters),
            ("/audit", self.audit_trail),
        ):
            router.add_api_route(path, endpoint, methods=["GET"], dependencies=read, include_in_schema=False)

    # --- overview ---------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        src, now = self.src, self.src.clock()
        counts = await src.journal.counts()
        hour, day = (
            await src.journal.activity(now - timedelta(hours=1)),
            await src.journal.activity(now - timedelta(days=1)),
        )
        oldest = await src.journal.oldest_pending()
        certificates = await asyncio.to_thread(src.certificates)
        context = {
            "counts": [(s.value, counts.get(s, 0)) for s in State],
            "hour": hour,
            "day": day,
            "oldest_age": int((now - oldest).total_seconds()) if oldest is not None else None,
            "readiness": src.readiness(),
            "space": src.space,
            "certificates": [(c, c.days_left(now)) for c in certificates],
        }
        return self.page(request, "overview.html", context)

    # --- message list -----------------------------------------------------------------------------

    def _filters(self, request: Request) -> tuple[JournalQuery, dict[str, Any]]:
        q = request.query_params
        states = [State(s) for s in q.getlist("state") if s in State.__members__.values()]
        since, until = _day(q.get("since", "")), _day(q.get("until", ""))
        zone = self.src.zone
        query = JournalQuery(
            states=states,
            channel=q.get("channel", "") if q.get("channel", "") in CHANNELS else "",
            sender=q.get("sender", "").strip(),
            patient_id=q.get("patient", "").strip(),
            since=datetime.combine(since.date(), time(), zone) if since else None,
            until=datetime.combine(until.date() + timedelta(days=1), time(), zone) if until else None,
            limit=PAGE,
            before_id=_int(q.get("before")),
            after_id=_int(q.get("after")),
        )
        form = {
            "states": [s.value for s in states], "channel": query.channel, "sender": query.sender,
            "patient": query.patient_id, "since": since.date().isoformat() if since else "",
            "until": until.date().isoformat() if until else "",
        }  # fmt: skip
        return query, form

    async def messages(self, request: Request) -> Response:
        query, form = self._filters(request)
        rows = await self.src.journal.find(query)
        keep = [(k, v) for k, v in request.query_params.multi_items() if k not in ("before", "after")]
        base = "&".join(f"{k}={_q(v)}" for k, v in keep)
        paged = query.before_id is not None or query.after_id is not None
        newer = f"/messages?{base}&after={rows[0].id}" if rows and paged else ""
        older = f"/messages?{base}&before={rows[-1].id}" if len(rows) == PAGE else ""
        context = {
            "rows": [self._listed(r) for r in rows], "form": form, "states": [s.value for s in State],
            "channels": CHANNELS, "newer": newer, "older": older, "newest": f"/messages?{base}" if paged else "",
        }  # fmt: skip
        return self.page(request, "messages.html", context)

    @staticmethod
    def _listed(row: Row) -> dict[str, Any]:
        summary = row_summary(row)
        summary["patient_masked"] = mask_ins(row.patient_id)
        return summary

    # --- one message ------------------------------------------------------------------------------

    async def message(self, request: Request, row_id: int) -> Response:
        return await self.message_page(request, row_id, revealed=False)

    async def message_page(self, request: Request, row_id: int, *, revealed: bool) -> Response:
        row = await self._row(request, row_id)
        story = await journey(self.src.journal, row_id)
        assert story is not None  # the row exists
        story["patient_masked"] = mask_ins(row.patient_id)
        context = {
            "m": story, "revealed": revealed, "replayable": row.state in REPLAYABLE and not row.payload_purged,
            "purged": row.payload_purged, "truncated": row.truncated, "sha256": row.sha256,
        }  # fmt: skip
        return self.page(request, "message.html", context)

    async def _row(self, request: Request, row_id: int) -> Row:
        row = await self.src.journal.get(row_id)
        if row is None:
            raise ConsoleRefusal(self.error(request, 404, "error.no_message"))
        return row

    # --- downloads (audited) ----------------------------------------------------------------------

    async def raw(self, request: Request, row_id: int) -> Response:
        row, session = await self._row(request, row_id), _session(request)
        if row.payload_purged:
            raise ConsoleRefusal(self.error(request, 410, "error.purged"))
        await self.audit(session, "download-raw", row_id=row.id, document_id=row.document_id, patient_id=row.patient_id)
        name = f"message-{row.id}.{RAW_EXTENSION.get(row.kind, 'hl7')}"
        return _download(row.raw, name, "application/octet-stream")

    async def document(self, request: Request, row_id: int, n: Annotated[int, Query(ge=0, le=99)] = 0) -> Response:
        row, session = await self._row(request, row_id), _session(request)
        docs = await self._rendered(request, row)
        if isinstance(docs, str) or n >= len(docs):
            raise ConsoleRefusal(self.error(request, 404, "error.no_document"))
        doc = docs[n]
        await self.audit(
            session, "download-document", row_id=row.id, document_id=doc.unique_id, patient_id=row.patient_id
        )
        name, media = document_file(doc)
        return _download(doc.content, name, media)

    async def metadata(self, request: Request, row_id: int) -> Response:
        row, session = await self._row(request, row_id), _session(request)
        docs = await self._rendered(request, row)
        body: Any = {"handled": docs} if isinstance(docs, str) else [d.metadata() for d in docs]
        await self.audit(
            session, "download-metadata", row_id=row.id, document_id=row.document_id, patient_id=row.patient_id
        )
        text = json.dumps(body, indent=2, ensure_ascii=False, default=str).encode()
        return _download(text, f"metadata-{row.id}.json", "application/json")

    async def _rendered(self, request: Request, row: Row) -> Rendered:
        if self.src.render is None or row.payload_purged:
            raise ConsoleRefusal(self.error(request, 404, "error.no_document"))
        try:
            return await self.src.render(row)
        except PasserelleError as exc:  # the mapping's own refusal: PHI-free by construction
            raise ConsoleRefusal(self.error(request, 422, exc.message)) from exc

    # --- dead letters, audit ----------------------------------------------------------------------

    async def dead_letters(self, request: Request, state: str = "dead", before: int | None = None) -> Response:
        chosen = State(state) if state in {s.value for s in REPLAYABLE} else State.DEAD
        rows = await self.src.journal.find(JournalQuery(states=[chosen], limit=PAGE, before_id=before))
        context = {
            "rows": [self._listed(r) for r in rows], "state": chosen.value, "replayable": [s.value for s in REPLAYABLE],
            "older": f"/dead-letters?state={chosen.value}&before={rows[-1].id}" if len(rows) == PAGE else "",
        }  # fmt: skip
        return self.page(request, "dead_letters.html", context)

    async def audit_trail(self, request: Request) -> Response:
        q, now = request.query_params, self.src.clock()
        since = _day(q.get("since", ""))
        start = datetime.combine(since.date(), time(), self.src.zone) if since else now - timedelta(days=1)
        action = q.get("action", "")
        query = AuditQuery(
            since=start, action=AuditAction(action) if action in AuditAction.__members__.values() else None,
            actor=q.get("actor", "").strip(), after_id=_int(q.get("after")) or 0, limit=PAGE,
        )  # fmt: skip
        records = await self.src.audit_store.query(query)
        base = f"since={start.astimezone(self.src.zone).date().isoformat()}&action={_q(action)}&actor={_q(query.actor)}"
        context = {
            "records": [(r, mask_ins(r.patient_id)) for r in records], "actions": [a.value for a in AuditAction],
            "form": {"since": start.astimezone(self.src.zone).date().isoformat(), "action": action, "actor": query.actor},
            "next": f"/audit?{base}&after={records[-1].id}" if len(records) == PAGE else "",
        }  # fmt: skip
        return self.page(request, "audit.html", context)


def _q(value: str) -> str:
    return quote_plus(value)


def _session(request: Request) -> Session:
    session = getattr(request.state, "session", None)
    if not isinstance(session, Session):
        raise RuntimeError("console page served without its session dependency")
    return session


def _download(content: bytes, name: str, media: str) -> Response:
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return Response(content, media_type=media, headers=headers)
