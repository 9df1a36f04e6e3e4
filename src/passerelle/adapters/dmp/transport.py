"""One HTTP exchange with a DMP service: POST, bounded read, SOAP answer, classification.

No retry here (the worker owns retries). Transport errors, timeouts, oversized answers, redirects (never
followed), answers that are not SOAP (by their Content-Type: a proxy's HTML page), 408/425/429/5xx
without a SOAP envelope → :class:`RemoteTransientError` (with ``Retry-After``); a server certificate not
trusted by ``space.ca_file`` → :class:`RemoteUntrustedCertificateError`; 401/403 without an envelope,
or our client certificate refused by a TLS alert → :class:`RemoteCredentialError`; an envelope whose ``RelatesTo`` names another message, a 2xx answer
(RegistryResponse, query answer) without ``RelatesTo``, or a 2xx SOAP answer that cannot be read →
:class:`RemoteAmbiguousError`; a SOAP fault, with or without ``RelatesTo`` (a front end may fault before
WS-Addressing is read) → the table of :mod:`passerelle.adapters.dmp.errors`. docs/bad-input.md (B-Downstream) is the table of these answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

from passerelle.adapters.dmp.envelope import MalformedAnswerError, SoapAnswer, parse_answer
from passerelle.adapters.dmp.errors import fault_error
from passerelle.adapters.http import Fetched, fetch, retry_after
from passerelle.errors import RemoteAmbiguousError, RemoteCredentialError, RemoteEndpointError, RemoteTransientError

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({408, 425, 429})
#: The packagings of a SOAP 1.2 answer; anything else is not the DMP speaking.
SOAP_MEDIA_TYPES = frozenset({"application/soap+xml", "multipart/related"})


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


async def exchange(
    client: httpx.AsyncClient, call: Exchange, limits: Limits, now: Callable[[], datetime]
) -> tuple[SoapAnswer, int]:
    """Send ``call`` once; return the SOAP answer (not a fault) and the HTTP status, or raise.

    Checked in this order: the exchange itself (:func:`passerelle.adapters.http.fetch`: transport, TLS
    trust, deadline, size cap), a redirect, the packaging (SOAP 1.2 or multipart/related, else the
    status and content type say what came back), the envelope, ``RelatesTo`` naming another message
    (before anything in the answer is believed), a fault, then the payload, believed only with our
    ``RelatesTo``."""
    request = client.build_request("POST", call.url, content=call.body, headers={"Content-Type": call.content_type})
    fetched = await fetch(
        lambda r: client.send(r, stream=True),
        request,
        max_bytes=limits.max_response_bytes,
        total_timeout_s=limits.total_timeout_s,
        label=call.transaction,
    )
    status = fetched.status
    if 300 <= status < 400:
        log.error("dmp: %s redirect (HTTP %d) not followed; check space.url", call.transaction, status)
        raise RemoteEndpointError(f"{call.transaction}: redirect not followed (HTTP {status})", status=status)
    if fetched.media_type not in SOAP_MEDIA_TYPES:
        raise _not_soap(call, fetched, now)
    try:
        answer = parse_answer(fetched.headers.get("Content-Type", ""), fetched.body)
    except MalformedAnswerError as exc:
        raise _http_error(call, status, fetched.headers.get("Retry-After"), now, str(exc)) from exc
    if answer.relates_to and answer.relates_to != call.message_id:
        log.error("dmp: %s answer relates to another message than ours; refused", call.transaction)
        raise RemoteAmbiguousError(f"{call.transaction}: the answer relates to another message", status=status)
    if answer.fault is not None:
        log.warning("dmp: %s SOAP fault %s %s", call.transaction, answer.fault.code, answer.fault.subcode)
        raise fault_error(call.transaction, answer.fault.code, answer.fault.subcode, status)
    if not 200 <= status < 300 or answer.payload is None:
        raise _http_error(call, status, fetched.headers.get("Retry-After"), now, "no answer in the SOAP body")
    if not answer.relates_to:  # the service answers with RelatesTo; this may be another request's answer
        log.error("dmp: %s answer without wsa:RelatesTo; not believed", call.transaction)
        raise RemoteAmbiguousError(
            f"{call.transaction}: the answer does not name our message (no RelatesTo)", status=status
        )
    return answer, status


def _not_soap(call: Exchange, fetched: Fetched, now: Callable[[], datetime]) -> RemoteTransientError:
    """An answer that is not SOAP (a proxy's HTML page, a load balancer's text): a transport failure
    saying what came back (status and content type, never the body). 401/403 stay credential problems."""
    status = fetched.status
    what = f"HTTP {status} {fetched.media_type[:64] or 'without Content-Type'}"  # the server's header, bounded
    if status in (401, 403):
        log.error("dmp: %s credentials refused (%s)", call.transaction, what)
        return RemoteCredentialError(
            f"{call.transaction}: credentials refused, not a SOAP answer ({what})", status=status
        )
    if status in TRANSIENT_STATUSES or status >= 500:
        log.warning("dmp: %s unavailable, not a SOAP answer (%s)", call.transaction, what)
        return RemoteTransientError(
            f"{call.transaction}: DMP unavailable, not a SOAP answer ({what})",
            status=status,
            retry_after=retry_after(fetched.headers.get("Retry-After"), now()),
        )
    # A proxy's page, a wrong URL: retried, loudly, never taken for the DMP's answer.
    log.error("dmp: %s answered %s, not SOAP; check space.url and the path to the DMP", call.transaction, what)
    return RemoteTransientError(f"{call.transaction}: not a SOAP answer ({what})", status=status)


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
