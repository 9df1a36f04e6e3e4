"""The two requests a gateway makes for every document, answered below the web framework.

ITI-65 (``POST /fhir``) and the status lookup (``GET /fhir/Patient/$dmp-status``) are handled by
:class:`HotPaths`, a plain ASGI middleware in front of the FastAPI routes (and behind the fault
injector, so injected faults apply to them as to every FHIR request): the same checks, the same
answers, byte for byte, as the FastAPI routes they replace, without the per-request cost of routing,
dependency resolution and response classes (most of the sandbox's time per request when every
document of a busy gateway comes through; docs/sandbox.md). An accepted push is stored, recorded and
remembered under its idempotency key in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from passerelle.sandbox.bundle import INS_OID_PREFIX, Submission, read_submission
from passerelle.sandbox.outcome import SpaceRefusal, refusal_outcome, simple_outcome
from passerelle.sandbox.runtime import SandboxRuntime, authorization_ok
from passerelle.sandbox.space import accept_push, check_can_receive, split_token, status_parameters

FHIR_JSON = b"application/fhir+json"
PUSH_PATHS = frozenset({"/fhir", "/fhir/"})
STATUS_PATH = "/fhir/Patient/$dmp-status"

#: (HTTP status, JSON body, extra headers)
Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


class HotPaths:
    """ASGI middleware answering ITI-65 and the status lookup; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, runtime: SandboxRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path in PUSH_PATHS:
            answer = self._push(_headers(scope), await _body(receive))
        elif method == "GET" and path == STATUS_PATH:
            answer = self._status(_headers(scope), scope.get("query_string", b""))
        else:
            await self.app(scope, receive, send)
            return
        status, body, extra = answer
        headers = [(b"content-length", str(len(body)).encode("ascii")), (b"content-type", FHIR_JSON), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _push(self, headers: dict[str, str], body: bytes) -> Answer:
        if not _bearer_ok(headers, self.runtime.fhir_token):
            return _unauthorized()
        push = Push(self.runtime, body, headers.get("idempotency-key") or None, headers.get("x-actor") or "")
        replayed = push.replay()
        if replayed is not None:
            return replayed
        try:
            return 200, push.store(push.read()), []
        except SpaceRefusal as refusal:
            push.record("refused", refusal.code, refusal.http_status)
            return _json(refusal.http_status, refusal_outcome(refusal.code, refusal.diagnostics))

    def _status(self, headers: dict[str, str], query: bytes) -> Answer:
        """≈ DMP TD0.2: the space's status, opposition, whether ``author`` is blocked, minority."""
        if not _bearer_ok(headers, self.runtime.fhir_token):
            return _unauthorized()
        params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
        system, ins = split_token(params.get("identifier", ""))
        if not ins or not system.startswith(INS_OID_PREFIX):
            return _json(
                400,
                simple_outcome(
                    "error", "invalid", "identifier=urn:oid:<INS OID>|<INS> is required (INS OID 1.2.250.1.213.1.4.*)"
                ),
            )
        state = self.runtime.store.patient_or_default(ins, system, self.runtime.config.auto_create_patients)
        return _json(200, status_parameters(state, params.get("author") or None))


class Push:
    """One ITI-65 request: its replay, its reading, and what the space records of it."""

    def __init__(self, runtime: SandboxRuntime, body: bytes, key: str | None, actor: str) -> None:
        self.runtime, self.body, self.key, self.actor = runtime, body, key, actor
        self.request_hash = hashlib.sha256(body).hexdigest()
        self.ins: str | None = None
        self.unique_ids: list[str] = []

    def replay(self) -> Answer | None:
        """The answer already given to this idempotency key for the same body, if any."""
        cached = self.runtime.store.idempotent_response(self.key) if self.key is not None else None
        if cached is None or cached[0] != self.request_hash:
            return None
        self.actor = self.actor or "unknown"
        self.record("replayed", None, cached[1])
        return cached[1], cached[2].encode("utf-8"), []

    def read(self) -> Submission:
        try:
            raw = json.loads(self.body)
            submission = read_submission(raw, self.runtime.validator)
        except (ValueError, RecursionError, SpaceRefusal) as exc:
            self.actor = self.actor or "unknown"
            if isinstance(exc, SpaceRefusal):
                raise
            raise SpaceRefusal("InvalidBundle", "the body is not JSON") from exc
        self.ins = submission.patient.value
        self.unique_ids = [d.unique_id for d in submission.documents]
        if not self.actor:
            first = next(iter(sorted(submission.authors)), "")
            self.actor = f"professional:{first}" if first else "professional"
        return submission

    def store(self, submission: Submission) -> bytes:
        """Store an accepted push; its record and its idempotent answer go in the same transaction."""
        store = self.runtime.store
        state = store.patient_or_default(
            submission.patient.value, submission.patient.system, self.runtime.config.auto_create_patients
        )
        check_can_receive(state, submission.authors)
        with store.transaction():
            response = accept_push(store, state, submission, self.actor)
            created = sum(1 for e in response["entry"] if _created_document(e["response"]))
            self.record("accepted" if created else "duplicate", None, 200)
            store.bump("documents_stored", created)
            payload = json.dumps(response)
            if self.key is not None:
                store.save_idempotent_response(self.key, self.request_hash, 200, payload)
        return payload.encode("utf-8")

    def record(self, outcome: str, code: str | None, http_status: int) -> None:
        self.runtime.store.record_push(
            ins=self.ins,
            actor=self.actor,
            idempotency_key=self.key,
            outcome=outcome,
            code=code,
            http_status=http_status,
            unique_ids=self.unique_ids if outcome != "replayed" else [],
        )


def _created_document(response: dict[str, Any]) -> bool:
    return str(response["location"]).startswith("DocumentReference/") and str(response["status"]).startswith("201")


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


def _bearer_ok(headers: dict[str, str], expected: str | None) -> bool:
    return authorization_ok(headers.get("authorization", ""), expected)


def _json(status: int, body: dict[str, Any]) -> Answer:
    # what starlette's JSONResponse renders
    return status, json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8"), []


def _unauthorized() -> Answer:
    status, body, _ = _json(401, simple_outcome("error", "login", "a bearer token is required"))
    return status, body, [(b"www-authenticate", b"Bearer")]
