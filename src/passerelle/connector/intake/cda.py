"""CDA R2 intake, shared by ``POST /v1/documents`` and the watched folder (docs/cda-intake.md, ADR 0010).

Contract:

* A document is validated before anything is stored: safe XML parse (size cap, no DOCTYPE, depth and
  element caps), HL7 v3 ``ClinicalDocument`` root, and a dry run of the header mapping and of the
  identity rules (:func:`passerelle.mappings.cda.reader.map_cda_document`), so unusable documents are
  refused up front and nothing is journaled for them. Parsing runs in a worker thread, never on the
  event loop.
* :meth:`CdaIntake.receive` ends every document with a :class:`~.replies.Verdict`; a positive one
  (accepted, duplicate) only after ``accept`` returned, i.e. after the journal commit. Any failure of
  ``accept`` is ``unavailable`` (HTTP 503, folder file left in place), never positive.
* Dedup: key ``cda:<document unique id>`` with the SHA-256 of the bytes. Same id and same bytes:
  duplicate (HTTP 200 with the first journal id); same id, other bytes: conflict (HTTP 409).
* Every verdict is counted once, here (``kind="cda"``, the channel of the intake).
* Sender binding (ADR 0024): the listener may hand the :class:`~.binding.Principal` it authenticated
  (an HTTP token bound to a sender); its one sender is journaled as the row's sender instead of the
  channel's default name.

What each verdict becomes on the wire is the one reply table's business (:mod:`.replies`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from passerelle.connector.intake.binding import Principal
from passerelle.connector.intake.ports import Accept, Clock, IntakeMetrics, NullMetrics, utcnow
from passerelle.connector.intake.replies import (
    Outcome,
    Verdict,
    http_status,
    internal_error,
    refused,
    unavailable,
)
from passerelle.errors import DuplicateConflictError, PasserelleError, TooLargeError
from passerelle.mappings.cda.reader import map_cda, map_cda_document
from passerelle.mappings.cda.safe_xml import CdaLimits
from passerelle.mappings.document import Document
from passerelle.queue.model import Inbound

log = logging.getLogger(__name__)


class CdaIntakeSettings(BaseModel):
    """Settings of the CDA intake (HTTP endpoint and watched folder)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest CDA accepted (bytes)")
    max_depth: int = Field(
        200,
        gt=0,
        le=256,
        description="Deepest XML nesting accepted (at most 256: libxml2's own bound without huge_tree)",
    )
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


def validate_cda(raw: bytes, settings: CdaIntakeSettings, now: datetime) -> Document:
    """The dry run: safe parse, CDA root, header mapping and (if configured) identity rules."""
    if settings.check_identity:
        return map_cda_document(raw, test_environment=settings.test_environment, now=now, limits=settings.limits)
    return map_cda(raw, now=now, limits=settings.limits)


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


@dataclass
class CdaIntake:
    """Validates then journals one CDA document per call (see the module docstring).

    ``accept`` is the journal append (returns after the commit); ``channel`` and ``sender`` are
    journaled with each row (``http``/``settings.sender`` or ``folder``/``settings.folder_sender``).
    """

    kind: ClassVar[str] = "cda"

    accept: Accept
    settings: CdaIntakeSettings
    channel: str
    sender: str
    metrics: IntakeMetrics = field(default_factory=NullMetrics)
    clock: Clock = utcnow

    @property
    def max_bytes(self) -> int:
        return self.settings.max_bytes

    async def receive(self, raw: bytes, *, size: int | None = None, principal: Principal | None = None) -> Verdict:
        """One document; ``size`` is its real size when the caller did not read it (over ``max_bytes``).
        ``principal``: who the listener authenticated; its one sender (if any) is journaled as the sender."""
        if (len(raw) if size is None else size) > self.max_bytes:
            return self.refuse(TooLargeError(f"document exceeds the {self.max_bytes}-byte cap"))
        try:
            doc = await asyncio.to_thread(validate_cda, raw, self.settings, self.clock())
        except PasserelleError as exc:
            return self.refuse(exc)
        except Exception as exc:  # noqa: BLE001 - a mapping bug must not kill a listener; no traceback (PHI)
            log.error("cda intake: validation raised %s (no traceback: it may quote the document)", type(exc).__name__)
            return self.refuse(internal_error("document"))
        sender = principal.sender if principal is not None and principal.sender else self.sender
        return self._count(await self._journal(raw, doc, sender))

    def refuse(self, error: PasserelleError) -> Verdict:
        """A document refused before the journal (also by the listener: content type, body timeout)."""
        return self._count(refused(error))

    def status(self, verdict: Verdict) -> str:
        """The verdict's HTTP-equivalent status, written in a folder's ``.reason.txt`` files."""
        return str(http_status(verdict))

    async def _journal(self, raw: bytes, doc: Document, sender: str) -> Verdict:
        uid = doc.unique_id
        try:
            results = await self.accept([inbound_for(raw, doc, channel=self.channel, sender=sender)])
        except Exception as exc:  # noqa: BLE001 - the journal is a port: anything it raises means "not committed"
            log.warning("cda intake: journal append failed (%s)", getattr(exc, "reason", type(exc).__name__))
            return unavailable(uid, cause=exc)
        if len(results) != 1:
            return unavailable(uid)
        result = results[0]
        if result.conflict:
            conflict = DuplicateConflictError("a different document with the same unique id was already received")
            return refused(conflict, row_id=result.row_id, message_id=uid)
        return Verdict(Outcome.DUPLICATE if result.duplicate else Outcome.ACCEPTED, result.row_id, uid)

    def _count(self, verdict: Verdict) -> Verdict:
        self.metrics.message(self.kind, verdict.outcome, verdict.reason)
        if verdict.positive:
            log.info("cda intake: %s row=%s (%s)", verdict.outcome, verdict.row_id, self.channel)
        else:
            log.info("cda intake: %s (%s) on %s", verdict.outcome, verdict.reason, self.channel)
        return verdict
