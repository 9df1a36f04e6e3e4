"""The console's actions: log in and out, switch language, reveal an INS (audited), and replay dead
letters or parked messages (the ``operate`` role: a dry-run preview first, then an explicit confirmation).
Every POST form carries the CSRF token of its session (:mod:`..sessions`); the static files and the
login page are the only routes open without a session.
"""

from __future__ import annotations

import secrets
from importlib import resources

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from passerelle.config.settings import HttpRole
from passerelle.connector.admin.browser import replay_rows
from passerelle.connector.admin.documents import preview_of
from passerelle.connector.listeners.http.console.base import LANGUAGE_COOKIE, ConsoleRefusal, local_path
from passerelle.connector.listeners.http.console.catalogue import LANGUAGES
from passerelle.connector.listeners.http.console.pages import ConsolePages, _session
from passerelle.connector.listeners.http.sessions import LOGIN_COOKIE, SESSION_COOKIE, Session

STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
#: Most rows one replay from the console may take (the CLI and the API take up to 1,000).
MAX_SELECTION = 200


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


class ConsoleActions(ConsolePages):
    """The console's routes: its pages (:class:`ConsolePages`) and its actions."""

    def router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)
        self.routes(router)
        router.add_api_route("/login", self.login_page, methods=["GET"])
        router.add_api_route("/login", self.login, methods=["POST"])
        router.add_api_route("/static/{name}", self.static, methods=["GET"])
        router.add_api_route("/language/{lang}", self.language, methods=["GET"])
        read, operate = [Depends(self.read)], [Depends(self.operate)]
        router.add_api_route("/logout", self.logout, methods=["POST"], dependencies=read)
        router.add_api_route("/messages/{row_id}/reveal", self.reveal, methods=["POST"], dependencies=read)
        router.add_api_route("/dead-letters/preview", self.preview, methods=["POST"], dependencies=operate)
        router.add_api_route("/dead-letters/replay", self.replay, methods=["POST"], dependencies=operate)
        return router

    # --- open routes ------------------------------------------------------------------------------

    async def static(self, name: str) -> Response:
        if name not in STATIC:
            return Response(status_code=404)
        data = resources.files(__package__).joinpath("static", name).read_bytes()
        return Response(data, media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})

    async def language(self, request: Request, lang: str, next: str = "/") -> Response:
        response = RedirectResponse(local_path(next), 303)
        if lang in LANGUAGES:
            _cookie(response, request, LANGUAGE_COOKIE, lang, max_age=365 * 86400)
        return response

    async def login_page(self, request: Request, next: str = "/") -> Response:
        return self._login_form(request, local_path(next), status=200, error="")

    def _login_form(self, request: Request, target: str, *, status: int, error: str) -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        identity, _ = self.src.auth.identify(request)
        certificate = identity.name if identity is not None and identity.role is not HttpRole.INTAKE else ""
        context = {
            "next": target,
            "login_csrf": self.src.sessions.csrf(nonce),
            "error": error,
            "certificate": certificate,
        }
        response = self.page(request, "login.html", context, status=status)
        _cookie(response, request, LOGIN_COOKIE, nonce)
        return response

    async def login(self, request: Request) -> Response:
        """A pasted token (or, with mutual TLS, the client certificate) opens a session. From an address
        past its failed attempts (``http.login_throttle``), 429 before anything is looked at."""
        auth = self.src.auth
        wait = await auth.throttled(request, "console")
        if wait is not None:
            throttled = self.error(request, 429, "error.throttled")
            throttled.headers["Retry-After"] = str(wait)
            return throttled
        fields = await self.form(request, None, bound_to=request.cookies.get(LOGIN_COOKIE))
        target = local_path(_first(fields, "next"))
        token = _first(fields, "token").strip()
        if token:
            identity = auth.tokens.match(token)
        else:
            identity = auth.identify(request)[0] if _first(fields, "certificate") else None
        if identity is None or identity.role is HttpRole.INTAKE:
            if identity is None and token:
                auth.failed(request)
            await auth.refuse(request, "console", "login")
            message = "login.refused" if identity is None else "login.intake"
            return self._login_form(request, target, status=401 if identity is None else 403, error=message)
        auth.succeeded(request)
        session = self.src.sessions.open(identity)
        await self.audit(session, "login")
        response = RedirectResponse(target, 303)
        _cookie(response, request, SESSION_COOKIE, session.id)
        response.delete_cookie(LOGIN_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # --- with a session ---------------------------------------------------------------------------

    async def logout(self, request: Request) -> Response:
        session = _session(request)
        await self.form(request, session)
        self.src.sessions.close(session.id)
        await self.audit(session, "logout")
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def reveal(self, request: Request, row_id: int) -> Response:
        """The patient's INS in clear on the message page, for this one answer; audited."""
        session = _session(request)
        await self.form(request, session)
        row = await self._row(request, row_id)
        await self.audit(session, "reveal-ins", row_id=row.id, document_id=row.document_id, patient_id=row.patient_id)
        return await self.message_page(request, row_id, revealed=True)

    async def preview(self, request: Request) -> Response:
        """What a replay of the selected rows would do (a dry run), and the form that confirms it."""
        session = _session(request)
        ids = self._selection(request, session, await self.form(request, session))
        preview = preview_of(self.src.render) if self.src.render is not None else None
        result = await replay_rows(
            self.src.journal, ids, now=self.src.clock(), actor=session.identity.name, dry_run=True, preview=preview
        )
        return self.page(request, "replay.html", {"result": result, "ids": ids, "done": False})

    async def replay(self, request: Request) -> Response:
        session = _session(request)
        fields = await self.form(request, session)
        ids = self._selection(request, session, fields)
        if _first(fields, "confirm") != "yes":
            raise ConsoleRefusal(self.error(request, 400, "replay.unconfirmed", session))
        name = session.identity.name
        hook = self.src.audit.admin_hook(f"console:{name}") if self.src.audit is not None else None
        result = await replay_rows(self.src.journal, ids, now=self.src.clock(), actor=name, dry_run=False, audit=hook)
        self.src.wake()
        return self.page(request, "replay.html", {"result": result, "ids": ids, "done": True})

    def _selection(self, request: Request, session: Session, fields: dict[str, list[str]]) -> list[int]:
        ids = sorted({int(v) for v in fields.get("id", []) if v.isdigit()})
        if not ids or len(ids) > MAX_SELECTION:
            raise ConsoleRefusal(self.error(request, 400, "replay.selection", session))
        return ids


def _first(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name) or [""]
    return values[0]
