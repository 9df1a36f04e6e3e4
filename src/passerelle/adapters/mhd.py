"""PDSm / IHE MHD client for the patient space (and the sandbox), per docs/patient-space-api.md.

:class:`MhdSpace` implements :class:`passerelle.adapters.space.PatientSpace` over ``httpx.AsyncClient``:

- ITI-65 ``POST {url}`` with the bundle from :func:`passerelle.mappings.mhd.bundle.build_provide_bundle` and
  ``Idempotency-Key: <uniqueId>``; deletion ``DELETE {url}/DocumentReference?identifier=…`` with
  ``X-Author``; status ``GET {url}/Patient/$dmp-status``.
- **One attempt per call**: no retry loop here. The worker retries transient errors on its own schedule,
  persisted in the journal; the only repeat inside a call is a single token refresh after a ``401``.
- Limits: connect/read/write/pool timeouts plus a total deadline per call, a response size cap (the body
  is read in chunks and the connection closed past the cap: :func:`passerelle.adapters.http.fetch`, shared
  with the DMP transport), redirects never followed. A server certificate not trusted by ``space.ca_file``
  → :class:`~passerelle.errors.RemoteUntrustedCertificateError` (retried, counted and alerted apart); our
  client certificate refused by the server's TLS alert → :class:`RemoteCredentialError`.
- Classification (ADR 0009): 2xx with the expected resource → receipt; 2xx with any
  other body → :class:`RemoteAmbiguousError`; 3xx → transient (not followed); 401 (after one refresh) and
  403 without a business code → :class:`RemoteCredentialError`; 404 without an OperationOutcome (a
  wrong ``space.url``) → :class:`RemoteEndpointError` (retried, never a refusal); 403/4xx with a
  business code → :class:`RemoteRejectedError`; 408/425/429/5xx, connection errors, timeouts, oversized answers →
  :class:`RemoteTransientError` with ``retry_after`` from ``Retry-After`` (seconds or HTTP date).
- :meth:`MhdSpace.probe` reads the capability statement (``GET {url}/metadata``) with the same
  credentials: the gateway's start-up and periodic check of its configuration (``/readyz``).
- Secrets come from a file or an environment variable named in :class:`SpaceSettings`, never from the
  settings themselves; nothing logged carries the INS or the document content.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TypedDict, Unpack
from urllib.parse import quote_plus

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from passerelle.adapters.dmp.settings import DmpSettings
from passerelle.adapters.http import fetch, retry_after, space_timeouts, space_transport
from passerelle.adapters.mhd_answers import (
    MalformedAnswerError,
    is_operation_outcome,
    outcome_code,
    parse_status,
    parse_transaction_response,
)
from passerelle.adapters.space import DeliveryOutcome, DeliveryReceipt, SpaceStatus
from passerelle.errors import (
    IdentityError,
    RemoteAmbiguousError,
    RemoteCredentialError,
    RemoteEndpointError,
    RemoteRejectedError,
    RemoteTransientError,
)
from passerelle.mappings.document import Action, Code, Document, Patient
from passerelle.mappings.identity.ins import allowed_ins_oids
from passerelle.mappings.mhd.bundle import SubmissionInfo, build_provide_bundle, deletion_identifier, derived_oid

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
_DEFAULT_HEADERS = {"Accept": FHIR_JSON, "User-Agent": "passerelle"}
TRANSIENT_STATUSES = frozenset({408, 425, 429})

#: PHI-free reason per business code of the protocol (used in metrics, journal states, audit).
REMOTE_CODE_REASONS: Mapping[str, str] = {
    "DMPClosed": "space_closed",
    "DMPNotFound": "space_not_active",
    "PatientOpposed": "patient_opposed",
    "AuthorBlocked": "author_blocked",
    "InvalidBundle": "invalid_bundle",
    "UnknownReplacedDocument": "unknown_replaced_document",
    "UniqueIdConflict": "unique_id_conflict",
    "UnknownDocument": "unknown_document",
    "NotAuthor": "not_author",
}


class SpaceTransport(StrEnum):
    MHD = "mhd"  # PDSm / IHE MHD ITI-65 (and the sandbox)
    DMP = "dmp"  # the DMP's SOAP services (TD0.2, ITI-41, ITI-18, ITI-57): adapters/dmp/


class SpaceAuth(StrEnum):
    NONE = "none"
    OAUTH2 = "oauth2"  # client credentials, bearer token
    MTLS = "mtls"  # client certificate


class SpaceSettings(BaseModel):
    """Settings of the patient-space client (mounted as ``space`` in the global settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = "http://127.0.0.1:8090/fhir"
    transport: SpaceTransport = SpaceTransport.MHD
    dmp: DmpSettings = Field(default_factory=DmpSettings)
    auth: SpaceAuth = SpaceAuth.NONE
    # OAuth2 client credentials: the secret is read from a file or from the environment variable named
    # here, never written in the configuration.
    token_url: str = ""
    client_id: str = ""
    client_secret_file: Path | None = None
    client_secret_env: str = ""
    scope: str = ""
    token_refresh_margin_s: float = Field(default=30.0, ge=0)
    # mutual TLS (and/or a private CA for the server certificate)
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    ca_file: Path | None = None
    # limits
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    write_timeout_s: float = Field(default=30.0, gt=0)
    pool_timeout_s: float = Field(default=5.0, gt=0)
    total_timeout_s: float = Field(default=60.0, gt=0)
    #: Longest answer read (bytes): checked on Content-Length, then while the body streams in; a longer
    #: answer is cut, its connection closed, and the call retried (both transports, adapters/http.py).
    max_response_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    #: Requests in flight at once (keep-alive connections); unset: sized to the dispatch window
    #: (``worker.concurrency``). A smaller value also caps that window (docs/adr/0026-pipelined-dispatch.md).
    max_connections: int | None = Field(default=None, ge=1)
    # submission metadata
    source_id: str = Field(default_factory=lambda: derived_oid("passerelle-source-id"))
    content_type: Code = Code(code="04", system="1.2.250.1.213.2.2", display="Hospitalisation de jour")
    #: Accept test/demo INS assigning authorities (1.2.250.1.213.1.4.10/.11). Off in production.
    test_environment: bool = False

    @field_validator("url", "token_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _auth_complete(self) -> SpaceSettings:
        if self.auth == SpaceAuth.OAUTH2:
            if not self.token_url or not self.client_id:
                raise ValueError("auth=oauth2 needs token_url and client_id")
            if bool(self.client_secret_file) == bool(self.client_secret_env):
                raise ValueError("auth=oauth2 needs exactly one of client_secret_file, client_secret_env")
        if self.auth == SpaceAuth.MTLS and not (self.client_cert_file and self.client_key_file):
            raise ValueError("auth=mtls needs client_cert_file and client_key_file")
        return self


def read_client_secret(settings: SpaceSettings, environ: Mapping[str, str]) -> str:
    """The OAuth2 client secret from its file or environment variable. Raises ValueError when missing."""
    if settings.client_secret_file is not None:
        try:
            secret = settings.client_secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read space.client_secret_file: {exc.strerror}") from exc
    else:
        secret = environ.get(settings.client_secret_env, "").strip()
    if not secret:
        raise ValueError("the OAuth2 client secret is empty or missing")
    return secret


class _Options(TypedDict, total=False):
    """What a request may carry besides its method and URL."""

    content: bytes | None
    params: Mapping[str, str] | None
    headers: Mapping[str, str] | None
    data: Mapping[str, str] | None
    auth: tuple[str, str] | None


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class MhdSpace:
    """PatientSpace over PDSm/MHD. Build once at start-up; :meth:`aclose` at shutdown (idempotent).

    ``transport`` replaces the network (``httpx.MockTransport`` in unit tests); ``environ`` is where the
    secret's environment variable is looked up (the process environment by default); ``monotonic`` and
    ``now`` are the clocks for token expiry and HTTP-date ``Retry-After``.
    Raises ValueError at construction when the configured secret or certificate files are unusable.
    """

    def __init__(
        self,
        settings: SpaceSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._monotonic = monotonic
        self._now = now
        self._secret = ""
        if settings.auth == SpaceAuth.OAUTH2:
            self._secret = read_client_secret(settings, os.environ if environ is None else environ)
        self._token = ""
        self._token_expiry = 0.0
        self._token_lock = asyncio.Lock()
        self._closed = False
        # The transport is called directly, without httpx's client layer (cookies, auth and redirect
        # flows, URL merging): redirects are never followed here, authentication is ours, and that
        # layer cost more per request than the exchange itself (docs/adr/0026-pipelined-dispatch.md).
        self._transport = space_transport(settings, verify=_ssl_context(settings), transport=transport)
        self._timeouts = space_timeouts(settings).as_dict()
        self._base = httpx.URL(settings.url)

    # --- PatientSpace ---------------------------------------------------------------------------------

    async def provide(self, doc: Document) -> DeliveryReceipt:
        """ITI-65 for one document. See the module docstring for the error classification."""
        if doc.action == Action.DELETE:
            raise ValueError("provide() publishes or replaces; use delete() for a deletion")
        self._check_identity(doc.patient)
        submission = SubmissionInfo(
            source_id=self._settings.source_id,
            # stable per document, so that a re-push is byte-identical
            submission_time=doc.creation_time,
            content_type=self._settings.content_type,
        )
        bundle = build_provide_bundle([doc], submission)
        body = json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        key = doc.unique_id
        answer = await self._call(
            "POST",
            self._settings.url,
            content=body,
            headers={"Content-Type": FHIR_JSON, "Idempotency-Key": key},
        )
        if not 200 <= answer.status < 300:
            raise self._error(answer)
        try:
            entries = parse_transaction_response(
                answer.json(), [entry["resource"]["resourceType"] for entry in bundle["entry"]]
            )
        except MalformedAnswerError as exc:
            raise RemoteAmbiguousError(f"ambiguous ITI-65 answer: {exc}", status=answer.status) from exc
        docref = entries[1]  # entry order: SubmissionSet, DocumentReference, Binary
        outcome = DeliveryOutcome.CREATED if docref.status == 201 else DeliveryOutcome.ALREADY_STORED
        log.debug("space: document %s %s (HTTP %d)", doc.unique_id, outcome.value, answer.status)
        return DeliveryReceipt(
            unique_id=doc.unique_id,
            outcome=outcome,
            http_status=answer.status,
            location=docref.location,
            idempotency_key=key,
        )

    async def delete(self, doc: Document) -> DeliveryReceipt:
        """Delete ``doc.replaces`` (or ``doc.unique_id``) as ``doc.author``; a repeated delete succeeds."""
        self._check_identity(doc.patient)
        target = doc.replaces or doc.unique_id
        key = f"delete:{target}"
        answer = await self._call(
            "DELETE",
            f"{self._settings.url}/DocumentReference",
            params={"identifier": deletion_identifier(doc)},
            headers={"X-Author": doc.author.person_id or doc.author.organisation_id, "Idempotency-Key": key},
        )
        if not 200 <= answer.status < 300:
            raise self._error(answer)
        if not is_operation_outcome(answer.json()):
            raise RemoteAmbiguousError("ambiguous deletion answer: not an OperationOutcome", status=answer.status)
        log.info("space: document %s deleted (HTTP %d)", target, answer.status)
        return DeliveryReceipt(
            unique_id=target, outcome=DeliveryOutcome.DELETED, http_status=answer.status, idempotency_key=key
        )

    async def status(self, patient: Patient, author_id: str) -> SpaceStatus:
        """Status lookup (≈ DMP TD0.2) for ``patient`` as seen by ``author_id``."""
        self._check_identity(patient)
        answer = await self._call(
            "GET",
            f"{self._settings.url}/Patient/$dmp-status",
            params={"identifier": f"urn:oid:{patient.ins_oid}|{patient.ins}", "author": author_id},
        )
        if not 200 <= answer.status < 300:
            raise self._error(answer)
        try:
            return parse_status(answer.json())
        except MalformedAnswerError as exc:
            raise RemoteAmbiguousError(f"ambiguous status answer: {exc}", status=answer.status) from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._transport.aclose()

    async def probe(self) -> str:
        """Read the capability statement (``GET {url}/metadata``) with our credentials; returns a short
        PHI-free summary. Raises as the other calls do; a 2xx that is not a CapabilityStatement →
        :class:`RemoteEndpointError` (``space.url`` is not a FHIR base)."""
        answer = await self._call("GET", f"{self._settings.url}/metadata")
        if not 200 <= answer.status < 300:
            raise self._error(answer)
        body = answer.json()
        if not isinstance(body, dict) or body.get("resourceType") != "CapabilityStatement":
            raise RemoteEndpointError("the space URL's /metadata is not a CapabilityStatement", status=answer.status)
        return f"CapabilityStatement (FHIR {body.get('fhirVersion') or '?'})"

    # --- internals ------------------------------------------------------------------------------------

    def _check_identity(self, patient: Patient) -> None:
        if not patient.ins or patient.ins_oid not in allowed_ins_oids(self._settings.test_environment):
            raise IdentityError(
                "the patient's INS assigning authority is not accepted by this patient space",
                location="patient.ins_oid",
            )

    async def _call(self, method: str, url: str, **options: Unpack[_Options]) -> _Answer:
        """One request (plus one retry after a 401 with a fresh token). Transport errors → transient."""
        for refreshed in (False, True):
            headers = dict(options.get("headers") or {})
            if self._settings.auth == SpaceAuth.OAUTH2:
                headers["Authorization"] = f"Bearer {await self._bearer()}"
            sent: _Options = {**options, "headers": headers}
            answer = await self._send(method, url, **sent)
            if answer.status == 401 and self._settings.auth == SpaceAuth.OAUTH2 and not refreshed:
                log.warning("space: 401 from the patient space, refreshing the token once")
                self._token = ""
                continue
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, method: str, url: str, **options: Unpack[_Options]) -> _Answer:
        if self._closed:
            raise RuntimeError("MhdSpace is closed")
        headers = {**_DEFAULT_HEADERS, **(options.get("headers") or {})}
        auth = options.get("auth")
        if auth is not None:
            headers["Authorization"] = _basic_auth(*auth)
        request = httpx.Request(
            method,
            self._base if url == self._settings.url else httpx.URL(url),
            params=options.get("params"),
            headers=headers,
            content=options.get("content"),
            data=options.get("data"),
            extensions={"timeout": self._timeouts},
        )
        fetched = await fetch(
            self._transport.handle_async_request,
            request,
            max_bytes=self._settings.max_response_bytes,
            total_timeout_s=self._settings.total_timeout_s,
            label="patient space",
        )
        return _Answer(status=fetched.status, headers=fetched.headers, body=fetched.body)

    async def _bearer(self) -> str:
        async with self._token_lock:
            if self._token and self._monotonic() < self._token_expiry:
                return self._token
            settings = self._settings
            form = {"grant_type": "client_credentials"}
            if settings.scope:
                form["scope"] = settings.scope
            answer = await self._send(
                "POST",
                settings.token_url,
                data=form,
                headers={"Accept": "application/json"},
                auth=(settings.client_id, self._secret),
            )
            if answer.status in (400, 401, 403):
                raise RemoteCredentialError(
                    f"token endpoint refused the client credentials (HTTP {answer.status})", status=answer.status
                )
            if not 200 <= answer.status < 300:
                error = self._error(answer)
                if isinstance(error, RemoteTransientError):
                    raise error
                raise RemoteCredentialError(
                    f"token endpoint answered HTTP {answer.status}", status=answer.status
                ) from error
            body = answer.json()
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise RemoteAmbiguousError("token endpoint answer without access_token", status=answer.status)
            lifetime = _expires_in(body.get("expires_in") if isinstance(body, dict) else None)
            self._token = token
            self._token_expiry = self._monotonic() + max(lifetime - settings.token_refresh_margin_s, 0.0)
            return token

    def _error(self, answer: _Answer) -> RemoteTransientError | RemoteRejectedError:
        status = answer.status
        if 300 <= status < 400:
            log.error("space: redirect (HTTP %d) not followed; check space.url", status)
            return RemoteEndpointError(f"redirect (HTTP {status}) not followed", status=status)
        if status in TRANSIENT_STATUSES or status >= 500:
            return RemoteTransientError(
                f"patient space unavailable (HTTP {status})",
                status=status,
                retry_after=retry_after(answer.headers.get("Retry-After"), self._now()),
            )
        code = outcome_code(answer.json())
        if status == 404 and not is_operation_outcome(answer.json()):
            log.error("space: HTTP 404 without a FHIR answer; check space.url")
            return RemoteEndpointError("patient space URL not found (HTTP 404 without a FHIR answer)", status=status)
        if status == 401 or (status == 403 and not code):
            log.error("space: credentials refused (HTTP %d)", status)
            return RemoteCredentialError(f"patient space refused our credentials (HTTP {status})", status=status)
        if 400 <= status < 500:
            return RemoteRejectedError(
                f"patient space refused the request ({code or 'no code'}, HTTP {status})",
                status=status,
                remote_code=code,
                reason=REMOTE_CODE_REASONS.get(code, "remote_rejected"),
            )
        return RemoteTransientError(f"unexpected HTTP status {status}", status=status)


def _expires_in(value: object) -> float:
    """Token lifetime in seconds; RFC 6749 makes ``expires_in`` optional (default 5 minutes here)."""
    if isinstance(value, bool):
        return 300.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().isdigit():
        return float(value.strip())
    return 300.0


def _basic_auth(client_id: str, secret: str) -> str:
    # RFC 6749 §2.3.1: form-urlencode both parts before the Basic scheme.
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _ssl_context(settings: SpaceSettings) -> ssl.SSLContext | bool:
    if settings.ca_file is None and settings.auth != SpaceAuth.MTLS:
        return True
    try:
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        if settings.auth == SpaceAuth.MTLS:
            assert settings.client_cert_file is not None and settings.client_key_file is not None
            context.load_cert_chain(str(settings.client_cert_file), str(settings.client_key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the patient-space TLS files: {exc}") from exc
    return context
