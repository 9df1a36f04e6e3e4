"""Health, metrics and the message browser / replay admin API.

Read endpoints are open on the management bind address (default 127.0.0.1); write endpoints (replay)
need the admin bearer token from ``http.admin_token_file`` and answer 403 when none is configured.
Responses carry identifiers, states and reasons — never message content.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from passerelle.connector.admin.browser import AuditHook, journey, replay_rows, row_summary
from passerelle.queue.model import Query as JournalQuery
from passerelle.queue.model import State

if TYPE_CHECKING:
    from passerelle.connector.app import Gateway


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    states: list[State] = Field(default_factory=lambda: [State.DEAD])
    sender: str = ""
    patient_id: str = ""
    document_id: str = ""
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(100, ge=1, le=1000)
    dry_run: bool = True
    confirm: bool = False


def build_router(gw: Gateway) -> APIRouter:
    router = APIRouter()

    def admin(authorization: Annotated[str | None, Header()] = None) -> str:
        path = gw.settings.http.admin_token_file
        if path is None:
            raise HTTPException(403, "admin API disabled: set http.admin_token_file")
        expected = path.read_text(encoding="utf-8").strip()
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "invalid admin token")
        return "admin"

    def _hook(actor: str) -> AuditHook | None:
        return gw.audit.admin_hook(f"api:{actor}") if gw.audit is not None else None

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(response: Response) -> dict[str, Any]:
        if not gw.ready:
            response.status_code = 503
            return {"status": "not ready", "reason": gw.crashed or "starting"}
        return {"status": "ready"}

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/v1/messages")
    async def list_messages(
        state: Annotated[list[State] | None, Query()] = None,
        sender: str = "",
        patient_id: str = "",
        document_id: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before_id: int | None = None,
    ) -> list[dict[str, Any]]:
        rows = await gw.journal.find(
            JournalQuery(
                states=state or (),
                sender=sender,
                patient_id=patient_id,
                document_id=document_id,
                since=since,
                until=until,
                limit=limit,
                before_id=before_id,
            )
        )
        return [row_summary(r) for r in rows]

    @router.get("/v1/messages/{row_id}")
    async def show_message(row_id: int) -> dict[str, Any]:
        found = await journey(gw.journal, row_id)
        if found is None:
            raise HTTPException(404, "no such message")
        return found

    @router.post("/v1/messages/{row_id}/replay")
    async def replay_one(row_id: int, dry_run: bool = False, actor: str = Depends(admin)) -> dict[str, Any]:
        result = await replay_rows(
            gw.journal, [row_id], now=gw.clock(), actor=actor, dry_run=dry_run, audit=_hook(actor)
        )
        gw.worker.wake()
        return result

    @router.post("/v1/replay")
    async def replay_many(req: ReplayRequest, actor: str = Depends(admin)) -> dict[str, Any]:
        if not req.dry_run and not req.confirm:
            raise HTTPException(400, "a bulk replay needs dry_run=false and confirm=true")
        rows = await gw.journal.find(
            JournalQuery(
                states=req.states,
                sender=req.sender,
                patient_id=req.patient_id,
                document_id=req.document_id,
                since=req.since,
                until=req.until,
                limit=req.limit,
            )
        )
        result = await replay_rows(
            gw.journal, [r.id for r in rows], now=gw.clock(), actor=actor, dry_run=req.dry_run, audit=_hook(actor)
        )
        gw.worker.wake()
        return result

    return router
