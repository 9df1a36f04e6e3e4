"""Who may call the HTTP listener, and with which role (ADR 0025, docs/console.md).

Identities come from bearer tokens read from files at start (``http.tokens``; ``http.admin_token_file``
is one more ``operate`` token named ``admin``) or from verified client certificates (mutual TLS,
``http.client_certificates``: a subject mapped to a name and a role). Roles nest: ``operate`` may do
everything ``read`` may; ``intake`` may only post documents, as its own sender.

Every route but ``/healthz``, ``/readyz`` and (unless ``http.metrics_auth``) ``/metrics`` declares the role
it needs with one of :class:`Authenticator`'s dependencies. The API answers a missing or unknown token
with 401 and ``WWW-Authenticate: Bearer``, a known identity without the role with 403. Tokens are
compared in constant time against every configured token (SHA-256 digests through
:func:`hmac.compare_digest`, no early exit), so timing tells neither which token nor how much of it
matched. Every refusal is counted (``passerelle_http_auth_refusals_total{surface, reason}``, fixed label
values) and audited with the client's address, never the token, coalesced per address, class and
minute (:mod:`passerelle.observability.refusals`).

Failed token attempts are throttled per client address (:mod:`.throttle`, ``http.login_throttle``, ADR
0031): past 5 unknown tokens within 5 minutes, the address's token attempts (API requests carrying an
``Authorization`` header, console logins) answer 429 with ``Retry-After``, their token never looked at.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from passerelle.config.settings import HttpRole, HttpSettings
from passerelle.connector.listeners.http.throttle import TokenThrottle
from passerelle.connector.listeners.mllp.tls import _norm_dn
from passerelle.observability.refusals import RefusalLog, Surface

log = logging.getLogger(__name__)

#: What each role may do: operate includes read; intake stands alone.
GRANTS: Mapping[HttpRole, frozenset[HttpRole]] = {
    HttpRole.READ: frozenset({HttpRole.READ}),
    HttpRole.OPERATE: frozenset({HttpRole.READ, HttpRole.OPERATE}),
    HttpRole.INTAKE: frozenset({HttpRole.INTAKE}),
}

#: Why a request was refused: the only values of the metric's ``reason`` label.
REASONS = ("missing", "unknown", "role", "certificate", "csrf", "expired", "login", "throttled")
#: The refusal classes of the audit trail, by (surface, reason).
AUDIT_CLASSES: Mapping[tuple[str, str], str] = {
    ("api", "missing"): "missing_token",
    ("api", "unknown"): "unknown_token",
    ("api", "role"): "wrong_role",
    ("api", "certificate"): "client_certificate",
    ("api", "throttled"): "token_throttled",
    ("console", "missing"): "no_session",
    ("console", "expired"): "session_expired",
    ("console", "role"): "wrong_role",
    ("console", "csrf"): "csrf",
    ("console", "login"): "login_failed",
    ("console", "throttled"): "login_throttled",
}
#: HTTP refusals in the audit trail (actor ``http:<address>``).
SURFACE = Surface("http")


class TokenFileError(ValueError):
    """Token files that cannot serve: one line per problem, each starting with the setting's path."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: its configured name (audited), role, and sender (intake only)."""

    name: str
    role: HttpRole
    sender: str = ""
    via: str = "token"  # token | certificate

    def may(self, needed: HttpRole) -> bool:
        return needed in GRANTS[self.role]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def token_file_problems(settings: HttpSettings) -> list[str]:
    """Each token file that is unreadable or empty, one line with the setting's path (for pre-flight)."""
    problems: list[str] = []
    for path_name, path in _token_files(settings):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path_name}: cannot read {path} ({getattr(exc, 'strerror', None) or 'not UTF-8'})")
            continue
        if not text.strip():
            problems.append(f"{path_name}: {path} is empty")
    return problems


def _token_files(settings: HttpSettings) -> list[tuple[str, Path]]:
    files = [(f"http.tokens[{i}].token_file", t.token_file) for i, t in enumerate(settings.tokens)]
    if settings.admin_token_file is not None:
        files.insert(0, ("http.admin_token_file", settings.admin_token_file))
    return files


class TokenBook:
    """The configured bearer tokens (digests only), matched in constant time."""

    def __init__(self, entries: Sequence[tuple[Identity, str]]) -> None:
        self._entries = [(identity, _digest(secret)) for identity, secret in entries]

    @classmethod
    def from_settings(cls, settings: HttpSettings) -> TokenBook:
        """Read every token file once; :class:`TokenFileError` when one is unreadable or empty."""
        problems = token_file_problems(settings)
        if problems:
            raise TokenFileError(problems)
        entries: list[tuple[Identity, str]] = []
        if settings.admin_token_file is not None:
            entries.append((Identity("admin", HttpRole.OPERATE), settings.admin_token_file.read_text("utf-8").strip()))
        for t in settings.tokens:
            entries.append((Identity(t.name, t.role, t.sender), t.token_file.read_text("utf-8").strip()))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, given: str) -> Identity | None:
        """The identity whose token is ``given``; every token is compared, whatever matches first."""
        probe = _digest(given.strip())
        found: Identity | None = None
        for identity, digest in self._entries:
            if hmac.compare_digest(probe, digest) and found is None:
                found = identity
        return found


class CertificateBook:
    """Client certificate subjects (a CN or a full RFC 4514 DN) taken as identities."""

    def __init__(self, subjects: Mapping[str, Identity]) -> None:
        self._subjects = {_norm_dn(s): identity for s, identity in subjects.items()}

    @classmethod
    def from_settings(cls, settings: HttpSettings) -> CertificateBook:
        return cls(
            {c.subject: Identity(c.name, c.role, c.sender, via="certificate") for c in settings.client_certificates}
        )

    def match(self, subject_dn: str | None) -> Identity | None:
        """The identity of a verified peer whose subject DN (RFC 4514, most specific first) is
        ``subject_dn``: by the full DN, else by its CN."""
        if not subject_dn or not self._subjects:
            return None
        dn = _norm_dn(subject_dn)
        cn = next((p for p in dn.split(",") if p.startswith("CN=")), "")
        return self._subjects.get(dn) or (self._subjects.get(cn.removeprefix("CN=")) if cn else None)


def peer_subject(scope: Mapping[str, Any]) -> str | None:
    """The verified client certificate's subject from the ASGI TLS extension (``scope["extensions"]
    ["tls"]["client_cert_name"]``), filled by :mod:`.tls`; None without mutual TLS."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    name = tls.get("client_cert_name")
    return name if isinstance(name, str) and name else None


#: Records one refusal: (surface, reason, client address, "METHOD /route/template").
RefusalRecorder = Callable[[str, str, str, str], Awaitable[None]]


async def _no_record(surface: str, reason: str, client: str, what: str) -> None:
    return None


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def route_of(request: Request) -> str:
    """``METHOD /path/{template}``: the route, never the query string (it may carry an INS)."""
    route = request.scope.get("route")
    path = getattr(route, "path", None) or "(no route)"
    return f"{request.method} {path}"


class Authenticator:
    """Identifies callers and hands out one FastAPI dependency per role (:attr:`read`, :attr:`operate`,
    :attr:`intake`), for a route's ``dependencies``: each refuses, or keeps the caller's
    :class:`Identity` for the route (:func:`caller`)."""

    def __init__(
        self,
        tokens: TokenBook,
        certificates: CertificateBook | None = None,
        record: RefusalRecorder = _no_record,
        throttle: TokenThrottle | None = None,
    ) -> None:
        self.tokens = tokens
        self.certificates = certificates or CertificateBook({})
        self.record = record
        self.throttle = throttle
        self.read = self.dependency(HttpRole.READ)
        self.operate = self.dependency(HttpRole.OPERATE)
        self.intake = self.dependency(HttpRole.INTAKE)

    def identify(self, request: Request) -> tuple[Identity | None, str]:
        """The caller, or None and why (``missing``: no credential; ``unknown``: a token nobody holds;
        ``certificate``: a verified client certificate nobody is mapped to). A bearer token, when sent,
        decides alone; else a verified client certificate."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                return None, "unknown"
            found = self.tokens.match(value)
            return found, "" if found else "unknown"
        subject = peer_subject(request.scope)
        found = self.certificates.match(subject)
        return found, "" if found else "certificate" if subject else "missing"

    async def refuse(self, request: Request, surface: str, reason: str) -> None:
        """Count and audit one refusal (the recorder never sees a credential)."""
        try:
            await self.record(surface, reason, client_address(request), route_of(request))
        except Exception as exc:  # noqa: BLE001 - a failing audit store must not turn a 401 into a 500
            log.warning("http auth: refusal not recorded (%s)", type(exc).__name__)

    async def throttled(self, request: Request, surface: str) -> int | None:
        """The seconds the client's address must wait before its next token attempt (this one is then
        refused: counted and audited as ``throttled``), ``None`` when it may try."""
        wait = self.throttle.retry_after(client_address(request)) if self.throttle is not None else None
        if wait is not None:
            await self.refuse(request, surface, "throttled")
        return wait

    def failed(self, request: Request) -> None:
        """A token attempt from the client's address failed (the throttle counts it)."""
        if self.throttle is not None:
            self.throttle.failed(client_address(request))

    def succeeded(self, request: Request) -> None:
        """A login from the client's address succeeded (the throttle forgets its failures)."""
        if self.throttle is not None:
            self.throttle.succeeded(client_address(request))

    async def _not_throttled(self, request: Request) -> None:
        """A bearer token from a throttled address: 429 before the token is looked at."""
        if "authorization" not in request.headers:
            return
        wait = await self.throttled(request, "api")
        if wait is not None:
            raise HTTPException(429, "too many failed token attempts from this address", {"Retry-After": str(wait)})

    def dependency(self, role: HttpRole) -> Callable[[Request], Awaitable[Identity]]:
        async def require(request: Request) -> Identity:
            await self._not_throttled(request)
            identity, why = self.identify(request)
            if identity is None:
                if why == "unknown":
                    self.failed(request)
                await self.refuse(request, "api", why)
                error = ', error="invalid_token"' if why == "unknown" else ""
                headers = {"WWW-Authenticate": f'Bearer realm="passerelle"{error}'}
                raise HTTPException(401, "authentication required: a bearer token", headers=headers)
            if not identity.may(role):
                await self.refuse(request, "api", "role")
                headers = {"WWW-Authenticate": 'Bearer realm="passerelle", error="insufficient_scope"'}
                raise HTTPException(403, f"the {role.value} role is needed", headers=headers)
            request.state.identity = identity
            return identity

        require.__name__ = f"require_{role.value}"
        return require


def caller(request: Request) -> Identity:
    """The identity a route's dependency authenticated (routes declare it in ``dependencies``)."""
    identity = getattr(request.state, "identity", None)
    if not isinstance(identity, Identity):
        raise RuntimeError("route served without an authentication dependency")
    return identity


def build_authenticator(
    settings: HttpSettings, record: RefusalRecorder = _no_record, clock: Callable[[], float] = time.monotonic
) -> Authenticator:
    """The listener's authenticator (reads the token files: :class:`TokenFileError` when one cannot serve),
    its throttle (``http.login_throttle``) reading the time from ``clock`` (seconds)."""
    throttle = TokenThrottle.from_settings(settings.login_throttle, clock)
    return Authenticator(TokenBook.from_settings(settings), CertificateBook.from_settings(settings), record, throttle)


def refusal_recorder(count: Callable[[str, str], None], refusals: RefusalLog | None) -> RefusalRecorder:
    """Counts every refusal (``count(surface, reason)``) and records it in the audit trail through the
    coalescing ``refusals`` (reason ``access-refused``, actor ``http:<client address>``, class
    ``<surface> <AUDIT_CLASSES>``, the route in the first record of a minute), never the credential."""

    async def record(surface: str, reason: str, client: str, what: str) -> None:
        count(surface, reason)
        log.info("http auth: %s refused (%s) from %s: %s", surface, reason, client, what)
        if refusals is not None:
            cls = f"{surface} {AUDIT_CLASSES.get((surface, reason), reason)}"
            await refusals.refused(SURFACE, client, cls, note=what)

    return record
