"""The message browser and replay over HTTP.

Read endpoints are open on the management bind address (default 127.0.0.1); write endpoints (replay)
need the admin bearer token from ``http.admin_token_file`` and answer 403 when none is configured, 401
for a wrong token (compared in constant time). Responses carry identifiers, states and reasons --
never message content. Replays are audited when an audit trail is given.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from passerelle.connector.admin.browser import AuditHook, journey, replay_rows, row_summary, select_rows
from passerelle.observability.audit import AuditTrail
from passerelle.queue.model import Query as JournalQuery
from passerelle.queue.model import State
from passerelle.queue.ports import AdminJournal

ACTOR = "api:admin"


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

    def query(self) -> JournalQuery:
        return JournalQuery(**self.model_dump(exclude={"dry_run", "confirm"}))


@dataclass
class BrowserApi:
    """``/v1/messages`` (list, one journey) and replay (one row, or a confirmed selection).

    ``wake`` nudges the dispatch worker after a replay; ``clock`` stamps the replays.
    """

    journal: AdminJournal
    wake: Callable[[], None]
    clock: Callable[[], datetime]
    admin_token_file: Path | None
    audit: AuditTrail | None = None

    def router(self) -> APIRouter:
        router = APIRouter()
        admin = [Depends(self.admin)]
        router.add_api_route("/v1/messages", self.list_messages, methods=["GET"])
        router.add_api_route("/v1/messages/{row_id}", self.show_message, methods=["GET"])
        router.add_api_route("/v1/messages/{row_id}/replay", self.replay_one, methods=["POST"], dependencies=admin)
        router.add_api_route("/v1/replay", self.replay_many, methods=["POST"], dependencies=admin)
        return router

    def admin(self, authorization: Annotated[str | None, Header()] = None) -> None:
        path = self.admin_token_file
        if path is None:
            raise HTTPException(403, "admin API disabled: set http.admin_token_file")
        expected = path.read_text(encoding="utf-8").strip()
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "invalid admin token")

    async def list_messages(
        self,
        state: Annotated[list[State] | None, Query()] = None,
        sender: str = "",
        patient_id: str = "",
        document_id: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before_id: int | None = None,
    ) -> list[dict[str, Any]]:
        query = JournalQuery(
            states=state or (),
            sender=sender,
            patient_id=patient_id,
            document_id=document_id,
            since=since,
            until=until,
            limit=limit,
            before_id=before_id,
        )
        return [row_summary(r) for r in await self.journal.find(query)]

    async def show_message(self, row_id: int) -> dict[str, Any]:
        found = await journey(self.journal, row_id)
        if found is None:
            raise HTTPException(404, "no such message")
        return found

    async def replay_one(self, row_id: int, dry_run: bool = False) -> dict[str, Any]:
        return await self._replay([row_id], dry_run)

    async def replay_many(self, req: ReplayRequest) -> dict[str, Any]:
        if not req.dry_run and not req.confirm:
            raise HTTPException(400, "a bulk replay needs dry_run=false and confirm=true")
        return await self._replay(await select_rows(self.journal, req.query()), req.dry_run)

    def _audit_hook(self) -> AuditHook | None:
        return self.audit.admin_hook(ACTOR) if self.audit is not None else None

    async def _replay(self, row_ids: list[int], dry_run: bool) -> dict[str, Any]:
        result = await replay_rows(
            self.journal, row_ids, now=self.clock(), actor="admin", dry_run=dry_run, audit=self._audit_hook()
        )
        self.wake()
        return result
