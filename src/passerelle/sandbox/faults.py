"""Fault injection on the FHIR and DMP SOAP endpoints: latency, 5xx, 429 + Retry-After, TCP resets,
timeouts, and on the SOAP endpoints ``soap:Receiver`` faults.

Switched at run time through ``PUT/DELETE /admin/faults``; ``ambiguous_rate`` (a ``200`` maintenance
page instead of the protocol's answer) is a sandbox addition. Each FHIR request draws the same five
numbers from one ``random.Random(seed)`` (a sixth one when ``soap_receiver_rate`` is set), so a given
seed and request order give the same faults.

A reset must be a real TCP RST seen by the client. The ASGI app has no socket, so the sandbox's
uvicorn protocol (:mod:`passerelle.sandbox.server`) puts an ``abort`` callable into the request scope
under ``scope["extensions"][ABORT_EXTENSION]``; it sets ``SO_LINGER`` to zero and aborts the transport.
Without that extension (in-process ASGI tests) the reset becomes a ``ConnectionResetError`` raised
into the caller.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from passerelle.sandbox.outcome import simple_outcome

ABORT_EXTENSION = "passerelle.sandbox.abort"


class FaultSettings(BaseModel):
    """The body of ``PUT /admin/faults`` (docs/patient-space-api.md)."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(default=0, ge=0, le=600_000)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    error_status: int = Field(default=503, ge=500, le=599)
    rate_429: float = Field(default=0.0, ge=0.0, le=1.0)
    retry_after_s: float = Field(default=1.0, ge=0.0, le=86_400)
    reset_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    timeout_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    timeout_s: float = Field(default=30.0, ge=0.0, le=3_600)
    ambiguous_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    #: SOAP endpoints only: a ``soap:Receiver`` fault (HTTP 500), the platform's transient failure
    soap_receiver_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int | None = None


@dataclass(frozen=True)
class FaultDecision:
    latency_s: float
    action: str | None  # "reset", "429", "error", "ambiguous", "timeout", "soap_receiver" or None


class FaultInjector:
    """Holds the current fault settings and the seeded generator; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings: FaultSettings | None = None
        self._rng = random.Random()
        self.injected: dict[str, int] = {
            "latency": 0,
            "reset": 0,
            "429": 0,
            "error": 0,
            "ambiguous": 0,
            "timeout": 0,
            "soap_receiver": 0,
        }

    @property
    def settings(self) -> FaultSettings | None:
        return self._settings

    def configure(self, settings: FaultSettings) -> None:
        with self._lock:
            self._settings = settings
            self._rng = random.Random(settings.seed)

    def clear(self) -> None:
        with self._lock:
            self._settings = None

    def decide(self, soap: bool = False) -> FaultDecision | None:
        """Draw this request's fault; ``soap`` requests may also get a ``soap:Receiver`` fault."""
        with self._lock:
            s = self._settings
            if s is None:
                return None
            reset, too_many, error, ambiguous, timeout = (self._rng.random() for _ in range(5))
            action = None
            if reset < s.reset_rate:
                action = "reset"
            elif too_many < s.rate_429:
                action = "429"
            elif error < s.error_rate:
                action = "error"
            elif ambiguous < s.ambiguous_rate:
                action = "ambiguous"
            elif timeout < s.timeout_rate:
                action = "timeout"
            if s.soap_receiver_rate and self._rng.random() < s.soap_receiver_rate and soap and action is None:
                action = "soap_receiver"
            if s.latency_ms:
                self.injected["latency"] += 1
            if action is not None:
                self.injected[action] += 1
            return FaultDecision(latency_s=s.latency_ms / 1000, action=action)


class FaultMiddleware:
    """Pure ASGI middleware applying the injector's decision to requests under one of ``prefixes``.

    Requests under any prefix but the first are SOAP requests (``soap:Receiver`` faults apply).
    """

    def __init__(self, app: ASGIApp, injector: FaultInjector, prefixes: tuple[str, ...] = ("/fhir",)) -> None:
        self.app = app
        self.injector = injector
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        decision = self.injector.decide(soap=not path.startswith(self.prefixes[0]))
        settings = self.injector.settings
        if decision is None or settings is None:
            await self.app(scope, receive, send)
            return
        if decision.latency_s:
            await asyncio.sleep(decision.latency_s)
        if decision.action == "reset":
            await _reset(scope)
            return
        if decision.action == "429":
            retry_after = str(math.ceil(settings.retry_after_s))
            body = simple_outcome("error", "throttled", "injected 429")
            await _send_json(send, 429, body, [(b"retry-after", retry_after.encode("ascii"))])
            return
        if decision.action == "error":
            body = simple_outcome("error", "transient", f"injected {settings.error_status}")
            await _send_json(send, settings.error_status, body, [])
            return
        if decision.action == "soap_receiver":
            await _send(send, 500, _RECEIVER_FAULT, b"application/soap+xml; charset=UTF-8", [])
            return
        if decision.action == "ambiguous":
            # a 2xx that is not the protocol's answer (a proxy's maintenance page): nothing processed
            await _send(send, 200, _MAINTENANCE_PAGE, b"text/html; charset=utf-8", [])
            return
        if decision.action == "timeout":
            # the request is then processed: a client that gave up cannot know whether it was stored
            await asyncio.sleep(settings.timeout_s)
        await self.app(scope, receive, send)


async def _reset(scope: Scope) -> None:
    abort: dict[str, Callable[[], None]] | None = scope.get("extensions", {}).get(ABORT_EXTENSION)
    if abort is None:
        raise ConnectionResetError("injected connection reset (no transport to abort)")
    abort["abort"]()
    await asyncio.sleep(0)  # let the protocol see the connection lost before the app returns


_RECEIVER_FAULT = (
    b'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope">'
    b"<soap:Body><soap:Fault><soap:Code><soap:Value>soap:Receiver</soap:Value><soap:Subcode>"
    b'<soap:Value xmlns:dmp="urn:passerelle:sandbox:dmp">dmp:DMPServiceUnavailable</soap:Value></soap:Subcode>'
    b'</soap:Code><soap:Reason><soap:Text xml:lang="en">injected receiver fault</soap:Text></soap:Reason>'
    b"</soap:Fault></soap:Body></soap:Envelope>"
)
_MAINTENANCE_PAGE = b"<html><body><h1>Service en maintenance</h1></body></html>"
#: answers sent as they are: a soap:Receiver fault; a 2xx that is not the protocol's answer (a proxy's
#: maintenance page, nothing processed)
_CANNED = {
    "soap_receiver": (500, _RECEIVER_FAULT, b"application/soap+xml; charset=UTF-8"),
    "ambiguous": (200, _MAINTENANCE_PAGE, b"text/html; charset=utf-8"),
}


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    await _send(send, status, json.dumps(body).encode("utf-8"), b"application/fhir+json", headers)


async def _send(
    send: Send, status: int, payload: bytes, content_type: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(payload)).encode("ascii")),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
