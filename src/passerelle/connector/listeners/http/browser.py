"""The message browser and replay over HTTP (``/v1/messages``, ``/v1/replay``).

Reads need the ``read`` role, replays the ``operate`` role (:mod:`.auth`). Responses carry identifiers,
states and reasons -- never message content. Replays are audited under ``api:<identity name>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from passerelle.connector.admin.browser import AuditHook, journey, replay_rows, row_summary, select_rows
from passerelle.connector.listeners.http.auth import Authenticator, caller
from passerelle.observability.audit import AuditTrail
from passerelle.queue.model import Query as JournalQuery
from passerelle.queue.model import State
from passerelle.queue.ports import AdminJournal


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
    auth: Authenticator
    audit: AuditTrail | None = None

    def router(self) -> APIRouter:
        router = APIRouter()
        read, operate = [Depends(self.auth.read)], [Depends(self.auth.operate)]
        denied: dict[int | str, dict[str, Any]] = {401: {}, 403: {}}
        router.add_api_route("/v1/messages", self.list_messages, methods=["GET"], dependencies=read, responses=denied)
        router.add_api_route("/v1/messages/{row_id}", self.show_message, methods=["GET"], dependencies=read,
                             responses=denied)  # fmt: skip
        router.add_api_route("/v1/messages/{row_id}/replay", self.replay_one, methods=["POST"], dependencies=operate,
                             responses=denied)  # fmt: skip
        router.add_api_route("/v1/replay", self.replay_many, methods=["POST"], dependencies=operate, responses=denied)
        return router

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
        after_id: int | None = None,
        channel: str = "",
    ) -> list[dict[str, Any]]:
        query = JournalQuery(
            states=state or (),
            channel=channel,
            sender=sender,
            patient_id=patient_id,
            document_id=document_id,
            since=since,
            until=until,
            limit=limit,
            before_id=before_id,
            after_id=after_id,
        )
        return [row_summary(r) for r in await self.journal.find(query)]

    async def show_message(self, row_id: int) -> dict[str, Any]:
        found = await journey(self.journal, row_id)
        if found is None:
            raise HTTPException(404, "no such message")
        return found

    async def replay_one(self, request: Request, row_id: int, dry_run: bool = False) -> dict[str, Any]:
        return await self._replay(request, [row_id], dry_run)

    async def replay_many(self, request: Request, req: ReplayRequest) -> dict[str, Any]:
        if not req.dry_run and not req.confirm:
            raise HTTPException(400, "a bulk replay needs dry_run=false and confirm=true")
        return await self._replay(request, await select_rows(self.journal, req.query()), req.dry_run)

    def _audit_hook(self, actor: str) -> AuditHook | None:
        return self.audit.admin_hook(actor) if self.audit is not None else None

    async def _replay(self, request: Request, row_ids: list[int], dry_run: bool) -> dict[str, Any]:
        name = caller(request).name
        result = await replay_rows(
            self.journal, row_ids, now=self.clock(), actor=name, dry_run=dry_run, audit=self._audit_hook(f"api:{name}")
        )
        self.wake()
        return result
