"""``POST /v1/documents``: one CDA R2 document per request, through the CDA intake (docs/cda-intake.md).

The listener owns what is HTTP: the content type (415), the body size cap (``cda.max_bytes``) checked on
``Content-Length`` and while streaming, never buffering past it (413, :mod:`.body`: the rest drained up
to twice the cap, else ``Connection: close``), the body deadline (408). Every
other answer is the intake's verdict through the one reply table: 202/200 with the journal id, or an
RFC 7807 problem (``application/problem+json``, PHI-free ``detail``, machine-readable ``reason``), with
``Retry-After`` on 503. A positive answer only after the journal commit.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from passerelle.connector.intake.binding import Principal
from passerelle.connector.intake.cda import CdaIntake
from passerelle.connector.intake.replies import Outcome, Verdict, http_status, problem_body
from passerelle.connector.listeners.http.auth import Authenticator, caller
from passerelle.connector.listeners.http.body import BodyTooLarge, OwnBody, read_capped
from passerelle.errors import EncodingError, FramingError, PasserelleError
from passerelle.errors import UnsupportedMessageError as Unsupported

CDA_MEDIA_TYPES = frozenset({"application/xml", "text/xml", "application/hl7-cda+xml"})


def media_type(value: str | None) -> tuple[str, str]:
    """``(type, charset)`` of a Content-Type header, lower-cased ("" when absent)."""
    if not value:
        return "", ""
    parts = [p.strip() for p in value.split(";")]
    charset = ""
    for p in parts[1:]:
        key, _, val = p.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip('"').lower()
    return parts[0].lower(), charset


def content_type_error(header: str | None) -> PasserelleError | None:
    media, charset = media_type(header)
    if media not in CDA_MEDIA_TYPES:
        message = "Content-Type must be application/xml, text/xml or application/hl7-cda+xml"
        return Unsupported(message, reason="content_type")
    if charset.startswith(("utf-16", "utf-32", "ucs")):
        return EncodingError("UTF-16/UTF-32 XML is not supported; send UTF-8", reason="unsupported_encoding")
    return None


class DocumentsApi:
    """The ``POST /v1/documents`` route over one :class:`CdaIntake` (channel ``http``), for ``intake``
    identities only: each document is journaled under its identity's sender."""

    def __init__(self, intake: CdaIntake, auth: Authenticator) -> None:
        self.intake = intake
        self.settings = intake.settings
        self.auth = auth

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route(
            "/v1/documents",
            self.post_document,
            methods=["POST"],
            status_code=202,
            dependencies=[Depends(self.auth.intake)],
            responses={200: {}, 400: {}, 401: {}, 403: {}, 408: {}, 409: {}, 413: {}, 415: {}, 422: {}, 503: {}},
            summary="Submit one CDA R2 document (application/xml, text/xml, application/hl7-cda+xml)",
        )
        return router

    def own_body(self) -> OwnBody:
        """The route's body cap for :class:`~.body.BodyCap`: a ``Content-Length`` over ``cda.max_bytes`` is
        refused before authentication, with the intake's answer (and count)."""
        return OwnBody(self.settings.max_bytes, lambda exc: self.answer(self.intake.refuse(exc), exc.headers))

    async def post_document(self, request: Request) -> JSONResponse:
        identity = caller(request)
        refusal = content_type_error(request.headers.get("content-type"))
        if refusal is not None:
            return self.answer(self.intake.refuse(refusal))
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                raw = await read_capped(request, self.settings.max_bytes)
        except TimeoutError:
            timeout = self.settings.body_timeout_s
            late = FramingError(f"request body not received within {timeout:g} s", reason="body_timeout")
            return self.answer(self.intake.refuse(late))
        except BodyTooLarge as exc:
            return self.answer(self.intake.refuse(exc), exc.headers)
        except PasserelleError as exc:
            return self.answer(self.intake.refuse(exc))
        return self.answer(
            await self.intake.receive(raw, principal=Principal.of(f"token:{identity.name}", [identity.sender]))
        )

    def answer(self, verdict: Verdict, headers: dict[str, str] | None = None) -> JSONResponse:
        status = http_status(verdict)
        if verdict.positive:
            body = {
                "journal_id": verdict.row_id,
                "document_id": verdict.message_id,
                "status": "duplicate" if verdict.outcome is Outcome.DUPLICATE else "accepted",
            }
            return JSONResponse(body, status_code=status)
        extra = {**(headers or {}), **({"Retry-After": str(self.settings.retry_after_s)} if status == 503 else {})}
        return JSONResponse(
            problem_body(status, verdict.reason, verdict.detail),
            status_code=status,
            media_type="application/problem+json",
            headers=extra,
        )
