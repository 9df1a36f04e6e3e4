"""Request bodies: one capped reader for every route that takes a body (docs/bad-input.md B-HTTP-7).

* :func:`read_capped` reads a body up to a cap, refusing it (:class:`BodyTooLarge`) as soon as the
  declared ``Content-Length`` or the bytes received pass the cap; it never buffers more than the cap.
* Over the cap, the rest is read and dropped up to :data:`DRAIN_FACTOR` times the cap, so the answer
  (413) reaches a client still sending and the connection can serve its next request; a body longer
  than that is not read: :attr:`BodyTooLarge.headers` asks for ``Connection: close`` (uvicorn then closes
  the connection instead of reading the rest).
* :class:`BodyCap` is the ASGI middleware that reads every request body of the application before the
  application sees it, so before authentication: an unauthenticated 20 MB body is answered 413 after at
  most :data:`DRAIN_FACTOR` × :data:`API_MAX_BYTES` bytes, never read whole then answered 401. A route
  that reads its own body (``POST /v1/documents``, under ``cda.max_bytes``, with its deadline) is an
  :class:`OwnBody`: only its declared ``Content-Length`` is checked here, before authentication too, and
  an answer it gives before reading the whole body (a 401) closes the connection.
* :class:`BodyCap` reads within a deadline (``http.body_timeout_s``, :data:`BODY_TIMEOUT_S`): a client
  trickling its body (uvicorn has no body timeout) gets 408 and ``Connection: close`` when it passes,
  instead of holding a connection and a request slot for as long as it likes (docs/bad-input.md
  B-HTTP-8). Every body refused here is counted (``passerelle_http_body_refusals_total{surface,reason}``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from passerelle.connector.intake.replies import problem_body
from passerelle.errors import ParseError, TooLargeError

#: The largest body of the JSON API (``/v1/...``) and of the console's forms (ids, filters, a token).
API_MAX_BYTES = 64 * 1024
#: Over the cap, the body is drained up to this many times the cap, else the connection is closed.
DRAIN_FACTOR = 2
#: The longest time to receive a body :class:`BodyCap` reads (``http.body_timeout_s``).
BODY_TIMEOUT_S = 30.0


class BodyTooLarge(TooLargeError):
    """A body over its cap; ``drained`` when the rest was read (the connection may serve another request)."""

    def __init__(self, message: str, *, drained: bool) -> None:
        super().__init__(message)
        self.drained = drained

    @property
    def headers(self) -> dict[str, str]:
        """The headers the 413 answer needs: ``Connection: close`` when the rest of the body was not read."""
        return {} if self.drained else {"Connection": "close"}


async def read_capped(request: Request, max_bytes: int) -> bytes:
    """The body of ``request``, at most ``max_bytes``; :class:`BodyTooLarge` past it, ``ParseError`` for
    an unreadable ``Content-Length``, ``ClientDisconnect`` when the client goes away."""
    return await read_body(request.receive, request.headers, max_bytes)


async def read_body(receive: Receive, headers: Headers, max_bytes: int) -> bytes:
    """The ASGI form of :func:`read_capped`: the body from ``receive``. A client waiting for
    ``100 Continue`` is never invited to send a body over the cap (nothing to drain: it is refused at once)."""
    budget = await check_declared(receive, headers, max_bytes)
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        chunk, more = _chunk(await receive())
        size += len(chunk)
        if size > max_bytes:
            drained = not more or await _drain(receive, budget - size)
            raise BodyTooLarge(f"body exceeds the {max_bytes}-byte cap", drained=drained)
        chunks.append(chunk)
    return b"".join(chunks)


async def check_declared(receive: Receive, headers: Headers, max_bytes: int) -> int:
    """Refuse (:class:`BodyTooLarge`) a body whose ``Content-Length`` passes ``max_bytes``, draining it when
    it is within the drain budget; else the budget left for draining (0 for a client waiting for
    ``100 Continue``: it is never invited to send a body over the cap)."""
    waiting = "100-continue" in headers.get("expect", "").lower()
    budget = 0 if waiting else DRAIN_FACTOR * max_bytes
    declared = _declared(headers.get("content-length"))
    if declared is not None and declared > max_bytes:
        drained = declared <= budget and await _drain(receive, budget)
        raise BodyTooLarge(f"body of {declared} bytes exceeds the {max_bytes}-byte cap", drained=drained)
    return budget


def _declared(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ParseError("invalid Content-Length", reason="http") from None


def _chunk(message: Message) -> tuple[bytes, bool]:
    """``(body, more_body)`` of one ASGI receive message; a disconnect raises ``ClientDisconnect``."""
    if message["type"] != "http.request":
        raise ClientDisconnect()
    return bytes(message.get("body", b"")), bool(message.get("more_body", False))


async def _drain(receive: Receive, budget: int) -> bool:
    """Read and drop the rest of a body, at most ``budget`` bytes; ``True`` when it ended within."""
    while budget >= 0:
        chunk, more = _chunk(await receive())
        budget -= len(chunk)
        if not more:
            return budget >= 0
    return False


@dataclass(frozen=True)
class OwnBody:
    """A route that reads its own body under its own cap (``POST /v1/documents``): :class:`BodyCap` still
    checks its declared ``Content-Length`` before authentication, and answers ``refuse(error)`` over it."""

    max_bytes: int
    refuse: Callable[[BodyTooLarge], Response]


class BodyCap:
    """ASGI middleware: every request body read (at most ``max_bytes``, within ``timeout_s``) before the
    application runs.

    Over the cap: ``/v1/...`` paths get an RFC 7807 problem (413, ``reason: too_large``), the others
    ``page(request, 413)`` (the console's error page) when given; past the deadline the same with 408
    (``reason: body_timeout``) and ``Connection: close``. Each is counted by ``count(surface, reason)``
    (surface ``api`` for ``/v1/...``, else ``console``). The paths in ``own`` read their own body; only
    their declared ``Content-Length`` is checked here (and the drain of a body over it timed).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int = API_MAX_BYTES,
        own: Mapping[str, OwnBody] | None = None,
        page: Callable[[Request, int], Response] | None = None,
        timeout_s: float = BODY_TIMEOUT_S,
        count: Callable[[str, str], None] | None = None,
    ) -> None:
        self.app, self.max_bytes, self.own, self.page = app, max_bytes, dict(own or {}), page
        self.timeout_s, self.count = timeout_s, count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else Headers()
        if "content-length" not in headers and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        own = self.own.get(scope["path"])
        try:
            async with asyncio.timeout(self.timeout_s):
                if own is not None:
                    await check_declared(receive, headers, own.max_bytes)
                    receive, send = _close_if_unread(receive, send)
                else:
                    receive = _replay(await read_body(receive, headers, self.max_bytes), receive)
        except ClientDisconnect:
            return
        except BodyTooLarge as exc:
            response = own.refuse(exc) if own is not None else self._refused(scope, 413, "too_large")
            response.headers.update(exc.headers)
            await response(scope, receive, send)
            return
        except TimeoutError:
            response = self._refused(scope, 408, "body_timeout")
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refused(self, scope: Scope, status: int, reason: str) -> Response:
        """The answer to a body refused here, counted: a problem for the API, else the console's page."""
        api = str(scope["path"]).startswith("/v1/")
        if self.count is not None:
            self.count("api" if api else "console", reason)
        if self.page is None or api:
            detail = (
                f"request body over the {self.max_bytes}-byte cap"
                if status == 413
                else f"request body not received within {self.timeout_s:g} s"
            )
            body = problem_body(status, reason, detail)
            return JSONResponse(body, status_code=status, media_type="application/problem+json")
        return self.page(Request(scope), status)


def _close_if_unread(receive: Receive, send: Send) -> tuple[Receive, Send]:
    """``receive`` and ``send`` of a route reading its own body: an answer sent before the whole body was
    received (a 401, a 415) carries ``Connection: close``, so uvicorn closes instead of reading the rest."""
    done = False

    async def tracked() -> Message:
        nonlocal done
        message = await receive()
        done = done or message["type"] != "http.request" or not message.get("more_body", False)
        return message

    async def guarded(message: Message) -> None:
        if message["type"] == "http.response.start" and not done:
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)

    return tracked, guarded


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` giving ``body`` whole, then what the connection says (its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
