"""One HTTP exchange with a DMP service: POST, bounded read, SOAP answer, classification.

No retry here (the worker owns retries). Transport errors, timeouts, oversized answers, 408/425/429/5xx
without a SOAP envelope → :class:`RemoteTransientError` (with ``Retry-After``); 401/403 without an envelope
→ :class:`RemoteCredentialError`; a SOAP fault → the table of :mod:`passerelle.adapters.dmp.errors`; an
answer that is not SOAP, or relates to another message → :class:`RemoteAmbiguousError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

from passerelle.adapters.dmp.envelope import MalformedAnswerError, SoapAnswer, parse_answer
from passerelle.adapters.dmp.errors import fault_error
from passerelle.errors import RemoteAmbiguousError, RemoteCredentialError, RemoteTransientError

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({408, 425, 429})
MAX_RETRY_AFTER = 24 * 3600.0


@dataclass(frozen=True)
class Exchange:
    """What one request sends."""

    transaction: str  # TD0.2 | ITI-41 | ITI-18 | ITI-57 (for messages and metrics)
    url: str
    content_type: str
    body: bytes
    message_id: str


@dataclass(frozen=True)
class Limits:
    total_timeout_s: float
    max_response_bytes: int


def retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` in seconds (delta or HTTP date), clamped to [0, 24 h]."""
    from email.utils import parsedate_to_datetime

    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - now).total_seconds()
        except (TypeError, ValueError, IndexError):
            return None
    return None if seconds != seconds else min(max(seconds, 0.0), MAX_RETRY_AFTER)


async def _read(client: httpx.AsyncClient, request: httpx.Request, limits: Limits) -> tuple[httpx.Response, bytes]:
    response = await client.send(request, stream=True)
    try:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limits.max_response_bytes:
                raise RemoteTransientError(
                    f"answer larger than {limits.max_response_bytes} bytes", status=response.status_code
                )
            chunks.append(chunk)
    finally:
        await response.aclose()
    return response, b"".join(chunks)


async def exchange(
    client: httpx.AsyncClient, call: Exchange, limits: Limits, now: Callable[[], datetime]
) -> tuple[SoapAnswer, int]:
    """Send ``call`` once; return the SOAP answer (not a fault) and the HTTP status, or raise."""
    request = client.build_request("POST", call.url, content=call.body, headers={"Content-Type": call.content_type})
    try:
        async with asyncio.timeout(limits.total_timeout_s):
            response, body = await _read(client, request, limits)
    except TimeoutError as exc:
        raise RemoteTransientError(
            f"{call.transaction}: no complete answer within {limits.total_timeout_s:g} s"
        ) from exc
    except httpx.TimeoutException as exc:
        raise RemoteTransientError(f"{call.transaction}: timeout ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise RemoteTransientError(f"{call.transaction}: transport error ({type(exc).__name__})") from exc
    status = response.status_code
    try:
        answer = parse_answer(response.headers.get("Content-Type", ""), body)
    except MalformedAnswerError as exc:
        raise _http_error(call, status, response.headers.get("Retry-After"), now, str(exc)) from exc
    if answer.fault is not None:
        log.warning("dmp: %s SOAP fault %s %s", call.transaction, answer.fault.code, answer.fault.subcode)
        raise fault_error(call.transaction, answer.fault.code, answer.fault.subcode, status)
    if not 200 <= status < 300 or answer.payload is None:
        raise _http_error(call, status, response.headers.get("Retry-After"), now, "no answer in the SOAP body")
    if answer.relates_to and answer.relates_to != call.message_id:
        raise RemoteAmbiguousError(f"{call.transaction}: the answer relates to another message", status=status)
    return answer, status


def _http_error(
    call: Exchange, status: int, retry: str | None, now: Callable[[], datetime], why: str
) -> RemoteTransientError:
    if status in TRANSIENT_STATUSES or status >= 500:
        return RemoteTransientError(
            f"{call.transaction}: DMP unavailable (HTTP {status})", status=status, retry_after=retry_after(retry, now())
        )
    if status in (401, 403):
        log.error("dmp: %s credentials refused (HTTP %d)", call.transaction, status)
        return RemoteCredentialError(f"{call.transaction}: credentials refused (HTTP {status})", status=status)
    if 200 <= status < 300:
        return RemoteAmbiguousError(f"{call.transaction}: unreadable answer ({why})", status=status)
    # Any other status without a SOAP envelope is a wrong URL or a proxy: retried, loudly, never refused.
    log.error("dmp: %s answered HTTP %d without SOAP; check space.url", call.transaction, status)
    return RemoteTransientError(f"{call.transaction}: HTTP {status} without a SOAP answer", status=status)
