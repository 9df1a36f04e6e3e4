"""CDA R2 intake: ``POST /v1/documents`` and a watched folder (docs/cda-intake.md, ADR 0010).

Contract:

* A document is validated before anything is stored: safe XML parse (size cap, no DOCTYPE, depth and
  element caps), HL7 v3 ``ClinicalDocument`` root, and a dry run of the header mapping and of the
  identity rules (:func:`passerelle.mappings.cda.reader.map_cda_document`), so unusable documents are
  refused up front and nothing is journaled for them.
* A positive reply (HTTP 202, file moved to ``processed/``) is given only after ``accept`` returned,
  i.e. after the journal commit. Any failure of ``accept`` gives HTTP 503 (file left in place, retried
  at the next poll), never a positive reply.
* Dedup: key ``cda:<document unique id>`` with the SHA-256 of the bytes. Same id and same bytes:
  HTTP 200 with the first journal id (idempotent); same id, other bytes: HTTP 409.
* Error bodies are RFC 7807 problem details (``application/problem+json``) with a PHI-free
  ``detail`` and a machine-readable ``reason``.

HTTP statuses: 202 accepted, 200 duplicate, 400 not well-formed / DOCTYPE / caps / bad encoding,
408 body not received within ``body_timeout_s``, 409 conflict, 413 over ``max_bytes`` (checked on Content-Length and while reading, never buffered
past the cap), 415 wrong content type or UTF-16/UTF-32, 422 not a CDA / unusable header / identity not
qualified, 503 journal unavailable (with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from passerelle.connector.intake.metrics import IntakeMetrics
from passerelle.errors import (
    DuplicateConflictError,
    EncodingError,
    MappingError,
    ParseError,
    PasserelleError,
    TooLargeError,
    TransientError,
    ValidationError,
)
from passerelle.mappings.cda.reader import map_cda, map_cda_document
from passerelle.mappings.cda.safe_xml import CdaLimits
from passerelle.mappings.document import Document
from passerelle.queue.model import AppendResult, Inbound

log = logging.getLogger(__name__)

Accept = Callable[[Sequence[Inbound]], Awaitable[list[AppendResult]]]
Clock = Callable[[], datetime]

CDA_MEDIA_TYPES = frozenset({"application/xml", "text/xml", "application/hl7-cda+xml"})
PROBLEM_TYPE_BASE = "urn:passerelle:problem:"
_IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".swp", ".ready", ".reason.txt")


class CdaIntakeSettings(BaseModel):
    """Settings of the CDA intake (HTTP endpoint and watched folder)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest CDA accepted (bytes)")
    max_depth: int = Field(200, gt=0, description="Deepest XML nesting accepted")
    max_elements: int = Field(500_000, gt=0, description="Most XML elements accepted")
    test_environment: bool = Field(False, description="Accept test/demo INS OIDs (.10/.11)")
    check_identity: bool = Field(True, description="Refuse at intake when the recordTarget INS is not usable")
    sender: str = Field("http", description="Sender name journaled for HTTP submissions")
    folder: Path | None = Field(None, description="Watched folder; unset = no folder intake")
    folder_sender: str = Field("folder", description="Sender name journaled for folder files")
    poll_interval_s: float = Field(2.0, gt=0, description="Folder poll period")
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent with 503")
    body_timeout_s: float = Field(30.0, gt=0, description="Longest time to receive a request body (else 408)")

    @property
    def limits(self) -> CdaLimits:
        return CdaLimits(max_bytes=self.max_bytes, max_depth=self.max_depth, max_elements=self.max_elements)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of one submission: ``status`` is the HTTP status it maps to."""

    status: int
    journal_id: int = 0
    document_id: str = ""
    duplicate: bool = False
    reason: str = ""
    detail: str = ""


# --- validation and journaling, shared by HTTP and folder -----------------------------------------------


def validate_cda(raw: bytes, settings: CdaIntakeSettings, now: datetime) -> Document:
    """The dry run: safe parse, CDA root, header mapping and (if configured) identity rules."""
    if settings.check_identity:
        return map_cda_document(raw, test_environment=settings.test_environment, now=now, limits=settings.limits)
    return map_cda(raw, now=now, limits=settings.limits)


def status_for(error: BaseException) -> int:
    """The one table from errors to HTTP statuses for this endpoint."""
    if isinstance(error, TooLargeError):
        return 413
    if isinstance(error, EncodingError):
        return 415 if error.reason == "unsupported_encoding" else 400
    if isinstance(error, ParseError):
        return 400
    if isinstance(error, DuplicateConflictError):
        return 409
    if isinstance(error, ValidationError | MappingError):
        return 422
    if isinstance(error, TransientError):
        return 503
    return 500


def inbound_for(raw: bytes, doc: Document, *, channel: str, sender: str) -> Inbound:
    ack = json.dumps({"status": "accepted", "document_id": doc.unique_id}).encode()
    return Inbound(
        raw=raw,
        channel=channel,
        sender=sender,
        kind="cda",
        message_id=doc.unique_id,
        dedup_key=f"cda:{doc.unique_id}",
        content_hash=hashlib.sha256(raw).hexdigest(),
        lane=f"ins:{doc.patient.ins}" if doc.patient.ins else "",
        ack=ack,
    )


async def submit(
    raw: bytes, *, accept: Accept, settings: CdaIntakeSettings, channel: str, sender: str, now: datetime
) -> Outcome:
    """Validate then journal one CDA; never raises for input or journal errors (returns the outcome)."""
    try:
        doc = await asyncio.to_thread(validate_cda, raw, settings, now)
    except PasserelleError as exc:
        return Outcome(status_for(exc), reason=exc.reason, detail=exc.message)
    except Exception as exc:  # noqa: BLE001 - a mapping bug must not kill the folder task; no traceback (PHI)
        log.error("cda intake: validation raised %s (no traceback: it may quote the document)", type(exc).__name__)
        return Outcome(500, reason="internal", detail="internal error while reading the document")
    try:
        results = await accept([inbound_for(raw, doc, channel=channel, sender=sender)])
    except PasserelleError as exc:
        log.warning("cda intake: journal append failed (%s)", exc.reason)
        return Outcome(503, document_id=doc.unique_id, reason=exc.reason, detail="journal unavailable, retry later")
    except Exception as exc:  # noqa: BLE001 - the journal is a port: anything it raises means "not committed"
        log.error("cda intake: journal append raised %s", type(exc).__name__)
        return Outcome(503, document_id=doc.unique_id, reason="queue_unavailable", detail="journal unavailable")
    if len(results) != 1:
        return Outcome(503, document_id=doc.unique_id, reason="queue_unavailable", detail="journal gave no result")
    result = results[0]
    if result.conflict:
        return Outcome(
            409,
            journal_id=result.row_id,
            document_id=doc.unique_id,
            reason=DuplicateConflictError.reason,
            detail="a different document with the same unique id was already received",
        )
    return Outcome(
        200 if result.duplicate else 202,
        journal_id=result.row_id,
        document_id=doc.unique_id,
        duplicate=result.duplicate,
    )


# --- HTTP ---------------------------------------------------------------------------------------------------


_TITLES = {
    400: "Malformed document",
    408: "Request body too slow",
    409: "Conflicting duplicate",
    413: "Document too large",
    415: "Unsupported media type",
    422: "Unusable document",
    500: "Internal error",
    503: "Journal unavailable",
}


def problem(status: int, reason: str, detail: str, *, retry_after: int | None = None) -> JSONResponse:
    """An RFC 7807 problem response; ``detail`` must already be PHI-free (error messages are)."""
    body: dict[str, Any] = {
        "type": f"{PROBLEM_TYPE_BASE}{reason}",
        "title": _TITLES.get(status, "Refused"),
        "status": status,
        "detail": detail,
        "reason": reason,
    }
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


async def read_capped(request: Request, max_bytes: int) -> bytes:
    """Read the body, refusing (TooLargeError) as soon as it passes ``max_bytes``; never buffers more."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise TooLargeError(f"body of {int(declared)} bytes exceeds the {max_bytes}-byte cap")
        except ValueError:
            raise ParseError("invalid Content-Length", reason="http") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise TooLargeError(f"body exceeds the {max_bytes}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(value: str | None) -> tuple[str, str]:
    if not value:
        return "", ""
    parts = [p.strip() for p in value.split(";")]
    charset = ""
    for p in parts[1:]:
        key, _, val = p.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip('"').lower()
    return parts[0].lower(), charset


def _outcome_label(status: int, duplicate: bool) -> str:
    if status == 202:
        return "accepted"
    if status == 200:
        return "duplicate" if duplicate else "accepted"
    if status == 409:
        return "conflict"
    return "storage_error" if status == 503 else "rejected"


def cda_router(
    accept: Accept, settings: CdaIntakeSettings, *, clock: Clock | None = None, metrics: IntakeMetrics | None = None
) -> APIRouter:
    """The ``POST /v1/documents`` router; ``accept`` is the journal append (returns after the commit)."""
    now_fn: Clock = clock or (lambda: datetime.now(UTC))
    router = APIRouter()

    def counted(response: JSONResponse, reason: str = "", duplicate: bool = False) -> JSONResponse:
        if metrics is not None:
            metrics.message("cda", _outcome_label(response.status_code, duplicate), reason)
        return response

    @router.post(
        "/v1/documents",
        status_code=202,
        responses={200: {}, 400: {}, 408: {}, 409: {}, 413: {}, 415: {}, 422: {}, 503: {}},
        summary="Submit one CDA R2 document (application/xml, text/xml, application/hl7-cda+xml)",
    )
    async def post_document(request: Request) -> JSONResponse:
        media, charset = _media_type(request.headers.get("content-type"))
        if media not in CDA_MEDIA_TYPES:
            return counted(
                problem(
                    415, "content_type", "Content-Type must be application/xml, text/xml or application/hl7-cda+xml"
                ),
                "content_type",
            )
        if charset.startswith(("utf-16", "utf-32", "ucs")):
            return counted(
                problem(415, "unsupported_encoding", "UTF-16/UTF-32 XML is not supported; send UTF-8"),
                "unsupported_encoding",
            )
        try:
            async with asyncio.timeout(settings.body_timeout_s):
                raw = await read_capped(request, settings.max_bytes)
        except TimeoutError:
            return counted(
                problem(408, "body_timeout", f"request body not received within {settings.body_timeout_s:g} s"),
                "body_timeout",
            )
        except PasserelleError as exc:
            return counted(problem(status_for(exc), exc.reason, exc.message), exc.reason)
        outcome = await submit(
            raw, accept=accept, settings=settings, channel="http", sender=settings.sender, now=now_fn()
        )
        if outcome.status in (200, 202):
            body = {
                "journal_id": outcome.journal_id,
                "document_id": outcome.document_id,
                "status": "duplicate" if outcome.duplicate else "accepted",
            }
            return counted(JSONResponse(body, status_code=outcome.status), duplicate=outcome.duplicate)
        retry = settings.retry_after_s if outcome.status == 503 else None
        return counted(problem(outcome.status, outcome.reason, outcome.detail, retry_after=retry), outcome.reason)

    return router


# --- watched folder ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FolderResult:
    name: str
    outcome: Outcome
    moved_to: Path | None  # None: left in place (journal unavailable, retried next poll)


class FolderWatcher:
    """Polls ``settings.folder`` and journals complete files.

    A file is complete when a ``<name>.ready`` marker exists beside it, or when its size and mtime are
    the same at two consecutive polls. Hidden files and ``.tmp``/``.part``/``.partial``/``.swp`` files
    are never picked (write there, then rename). Accepted (and duplicate) files go to ``processed/``;
    refused ones to ``failed/`` with ``<name>.reason.txt`` (reason code and PHI-free detail); when the
    journal is unavailable the file stays for the next poll. ``start()``/``stop()`` are idempotent.
    """

    def __init__(self, settings: CdaIntakeSettings, accept: Accept, *, clock: Clock | None = None) -> None:
        if settings.folder is None:
            raise ValueError("CdaIntakeSettings.folder is not set")
        self.settings = settings
        self.folder = Path(settings.folder)
        self.processed = self.folder / "processed"
        self.failed = self.folder / "failed"
        self.accept = accept
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self._seen: dict[str, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None

    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        for d in (self.folder, self.processed, self.failed):
            d.mkdir(parents=True, exist_ok=True)
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="cda-folder-watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        try:
            await asyncio.wait_for(task, timeout=max(5.0, self.settings.poll_interval_s * 2))
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            try:
                await self.poll_once()
            except OSError as exc:
                log.warning("cda folder: poll failed (%s)", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.settings.poll_interval_s)

    def _candidates(self) -> list[Path]:
        """Complete files ready to take (updates the size/mtime memory as a side effect)."""
        ready: list[Path] = []
        current: dict[str, tuple[int, int]] = {}
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
            name = entry.name
            if not entry.is_file(follow_symlinks=False) or name.startswith(".") or name.endswith(_IGNORED_SUFFIXES):
                continue
            st = entry.stat(follow_symlinks=False)
            sig = (st.st_size, st.st_mtime_ns)
            marker = self.folder / f"{name}.ready"
            if marker.exists() or self._seen.get(name) == sig:
                ready.append(Path(entry.path))
            else:
                current[name] = sig
        self._seen = current
        return ready

    async def poll_once(self) -> list[FolderResult]:
        """One scan: take every complete file. Returns what happened to each (for tests and logs)."""
        paths = await asyncio.to_thread(self._candidates)
        results: list[FolderResult] = []
        for path in paths:
            results.append(await self._take(path))
        return results

    async def _take(self, path: Path) -> FolderResult:
        name = path.name
        size = (await asyncio.to_thread(path.stat)).st_size
        if size > self.settings.max_bytes:
            outcome = Outcome(
                413, reason=TooLargeError.reason, detail=f"file exceeds the {self.settings.max_bytes}-byte cap"
            )
        else:
            raw = await asyncio.to_thread(path.read_bytes)
            outcome = await submit(
                raw,
                accept=self.accept,
                settings=self.settings,
                channel="folder",
                sender=self.settings.folder_sender,
                now=self.clock(),
            )
        if outcome.status == 503:
            log.warning("cda folder: file left in place, journal unavailable (size=%d)", size)
            return FolderResult(name, outcome, None)
        if outcome.status in (200, 202):
            target = await asyncio.to_thread(self._move, path, self.processed)
            log.info("cda folder: journaled row=%s size=%d", outcome.journal_id, size)
        else:
            target = await asyncio.to_thread(self._move, path, self.failed)
            reason_text = f"reason: {outcome.reason}\nstatus: {outcome.status}\ndetail: {outcome.detail}\n"
            await asyncio.to_thread(target.with_name(f"{target.name}.reason.txt").write_text, reason_text, "utf-8")
            log.info("cda folder: refused (%s) size=%d", outcome.reason, size)
        await asyncio.to_thread(self.folder.joinpath(f"{name}.ready").unlink, True)
        return FolderResult(name, outcome, target)

    @staticmethod
    def _move(path: Path, directory: Path) -> Path:
        target = directory / path.name
        n = 1
        while target.exists():
            target = directory / f"{path.stem}.{n}{path.suffix}"
            n += 1
        return path.replace(target)
