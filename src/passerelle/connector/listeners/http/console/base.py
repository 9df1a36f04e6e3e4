"""What every console page shares: its sources, the session check per role, the CSRF-checked form, and
rendering a template in the reader's language with the security headers (ADR 0025).

Pages are server-rendered Jinja2 templates shipped in the package with their CSS and JS (no CDN, no
build step). The Content-Security-Policy lets a page load only from the gateway itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from passerelle.config.settings import HttpRole
from passerelle.connector.admin.certificates import CertificateStatus
from passerelle.connector.admin.documents import Renderer
from passerelle.connector.listeners.http.auth import Authenticator, Identity
from passerelle.connector.listeners.http.body import API_MAX_BYTES, BodyTooLarge, read_capped
from passerelle.connector.listeners.http.console.catalogue import DEFAULT_LANGUAGE, LANGUAGES, translator
from passerelle.connector.listeners.http.sessions import SESSION_COOKIE, Session, SessionStore
from passerelle.observability.audit import AuditRecord, AuditTrail
from passerelle.queue.audit import AuditQuery
from passerelle.queue.ports import AdminJournal

log = logging.getLogger(__name__)

LANGUAGE_COOKIE = "passerelle_lang"
#: Largest form body read (the forms hold ids, filters and a token): the JSON API's cap.
MAX_FORM_BYTES = API_MAX_BYTES
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


class AuditReader(Protocol):
    async def query(self, query: AuditQuery) -> list[AuditRecord]: ...


@dataclass(frozen=True)
class SpaceInfo:
    """What the overview says of the patient space: where it is and how it is reached."""

    url: str
    transport: str


@dataclass
class ConsoleSources:
    """Everything the console reads or calls; the composition root fills it (never the Gateway)."""

    journal: AdminJournal
    audit_store: AuditReader
    auth: Authenticator
    sessions: SessionStore
    readiness: Callable[[], str]
    space: SpaceInfo
    certificates: Callable[[], list[CertificateStatus]]
    wake: Callable[[], None]
    clock: Callable[[], datetime]
    audit: AuditTrail | None = None
    render: Renderer | None = None
    timezone: str = "Europe/Paris"
    zone: ZoneInfo = field(init=False)

    def __post_init__(self) -> None:
        self.zone = ZoneInfo(self.timezone)


class ConsoleRefusal(Exception):
    """Raised by a console dependency; :func:`refusal_handler` answers with its response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def refusal_handler(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ConsoleRefusal):
        return exc.response
    raise exc


def local_path(value: str | None, default: str = "/") -> str:
    """``value`` when it is a path on this site (no scheme, no host, no ``//``), else ``default``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value


def language(request: Request) -> str:
    lang = request.cookies.get(LANGUAGE_COOKIE, DEFAULT_LANGUAGE)
    return lang if lang in LANGUAGES else DEFAULT_LANGUAGE


class ConsoleBase:
    """The console's shared machinery; :class:`~.pages.ConsolePages` and :class:`~.actions.ConsoleActions`
    add the routes."""

    def __init__(self, sources: ConsoleSources) -> None:
        self.src = sources
        self.env = Environment(
            loader=PackageLoader("passerelle.connector.listeners.http.console", "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["local"] = self.local_time
        self.read = self.need(HttpRole.READ)
        self.operate = self.need(HttpRole.OPERATE)

    # --- sessions ---------------------------------------------------------------------------------

    def need(self, role: HttpRole) -> Callable[[Request], Awaitable[Session]]:
        """The dependency of a page needing ``role``: no session → the login page (303), a session
        without the role → 403. Both are counted and audited as refusals."""

        async def require(request: Request) -> Session:
            session, expired = self.src.sessions.get(request.cookies.get(SESSION_COOKIE))
            if session is None:
                await self.src.auth.refuse(request, "console", "expired" if expired else "missing")
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                target = target if request.method == "GET" else "/"  # a form is not replayed after login
                raise ConsoleRefusal(RedirectResponse(f"/login?next={quote(target, safe='')}", 303))
            if not session.identity.may(role):
                await self.src.auth.refuse(request, "console", "role")
                raise ConsoleRefusal(self.error(request, 403, "error.role", session))
            request.state.identity = session.identity
            request.state.session = session
            return session

        require.__name__ = f"console_{role.value}"
        return require

    async def form(
        self, request: Request, session: Session | None, *, bound_to: str | None = None
    ) -> dict[str, list[str]]:
        """The url-encoded form of a POST, its CSRF token checked against the session (or ``bound_to``:
        the login nonce); a bad token is a counted and audited 403."""
        try:
            body = await read_capped(request, MAX_FORM_BYTES)
        except BodyTooLarge as exc:
            raise ConsoleRefusal(self.too_large(request, session, exc.headers)) from None
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=2000)
        anchor = session.id if session is not None else bound_to
        if not self.src.sessions.csrf_ok(anchor, (fields.get("csrf") or [""])[0]):
            await self.src.auth.refuse(request, "console", "csrf")
            raise ConsoleRefusal(self.error(request, 403, "error.csrf", session))
        return fields

    async def audit(
        self, session: Session, reason: str, *, row_id: int = 0, document_id: str = "", patient_id: str = ""
    ) -> None:
        """An operator's look at identifying data (a reveal, a download): audited as ``console:<name>``."""
        if self.src.audit is None:
            return
        await self.src.audit.record(
            action="admin", outcome="success", reason=reason, actor=f"console:{session.identity.name}",
            row_id=row_id, document_id=document_id, patient_id=patient_id,
        )  # fmt: skip

    # --- rendering --------------------------------------------------------------------------------

    def local_time(self, value: datetime | str | None) -> str:
        if value is None or value == "":
            return ""
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return moment.astimezone(self.src.zone).strftime("%Y-%m-%d %H:%M:%S %z")

    def page(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        status: int = 200,
        session: Session | None = None,
    ) -> HTMLResponse:
        session = session or getattr(request.state, "session", None)
        lang = language(request)
        identity: Identity | None = session.identity if session is not None else None
        values = {
            "lang": lang,
            "t": translator(lang),
            "identity": identity,
            "can_operate": identity is not None and identity.may(HttpRole.OPERATE),
            "csrf": self.src.sessions.csrf(session.id) if session is not None else "",
            "path": request.url.path,
            "here": quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe=""),
            **context,
        }
        html = self.env.get_template(template).render(values)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def too_large(
        self, request: Request, session: Session | None = None, headers: Mapping[str, str] | None = None
    ) -> HTMLResponse:
        """The error page of a form over :data:`MAX_FORM_BYTES` (413)."""
        response = self.error(request, 413, "error.too_large", session)
        response.headers.update(headers or {})
        return response

    def error(self, request: Request, status: int, message: str, session: Session | None = None) -> HTMLResponse:
        return self.page(request, "error.html", {"status": status, "message": message}, status=status, session=session)
