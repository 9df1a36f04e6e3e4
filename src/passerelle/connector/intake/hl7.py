"""HL7v2 intake: one frame payload in, one acknowledgement out, the journal committed in between.

Contract (docs/ack-contract.md; the codes come from the one reply table, :mod:`.replies`):

* Every message with a readable MSH is journaled: accepted ones as ``ACCEPTED`` with their dedup key
  (MSH-3.1^MSH-4.1^MSH-10: the sender and its control id) and the positive ACK to replay; refused ones as
  ``REJECTED`` with a PHI-free reason and no dedup key (a corrected resend with the same MSH-10 must not
  be taken for a conflict). Payloads without a recognisable MSH are journaled as ``REJECTED`` too.
* Sender binding (ADR 0024): when the listener hands a :class:`~.binding.Principal` (mutual TLS with
  ``mllp.tls.bindings``), a message whose MSH-3.1^MSH-4.1 the principal may not use is refused (AR,
  ERR-2 ``MSH^1^3`` or ``MSH^1^4``) before the duplicate register is consulted: it is journaled as
  ``REJECTED`` without a key, audited (``sender_not_allowed``) and counted, and can neither answer nor
  block the genuine sender's message with the same MSH-10.
* The positive ACK is built before the commit and returned only after ``journal_append`` returned.
* Same dedup key, same bytes: the stored ACK is replayed. Same key, other bytes: AR, ERR-3 205.
* Any failure of ``journal_append`` gives AR (original mode) / CE (enhanced), ERR-3 207, never AA.
* Enhanced mode (MSH-15 set): NE means no reply (``None``) although the message is stored; ER and SU
  reply only on error / on success.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import itertools
import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from passerelle.connector.intake.binding import Principal, audit_refusal
from passerelle.connector.intake.handover import HANDED_KINDS, Decoded, DecodedMessages
from passerelle.connector.intake.ports import Accept, Clock, Hl7IntakeMetrics, NullMetrics, utcnow
from passerelle.connector.intake.replies import Outcome, Verdict, hl7_refusal, internal_error, refused
from passerelle.errors import (
    DuplicateConflictError,
    PasserelleError,
    QueueUnavailableError,
    SenderNotAllowedError,
    TooLargeError,
    UnsupportedMessageError,
)
from passerelle.mappings.hl7v2.ack import build_ack, encode_reply, should_reply
from passerelle.mappings.hl7v2.decode import CHARSETS, Message, decode_message
from passerelle.mappings.hl7v2.header import Header, read_header, salvage_header
from passerelle.mappings.hl7v2.volet import Classified, MessageKind, classify
from passerelle.observability.audit import AuditTrail
from passerelle.queue.model import AppendResult, Inbound, State

log = logging.getLogger(__name__)

#: Above this many bytes (one frame or a batch), decoding runs in a worker thread, not on the event loop.
OFFLOAD_BYTES = 16 * 1024


def _check_charset(value: str | None) -> str | None:
    """A fallback charset is an MSH-18 value (table 0211 subset we decode) or a Python codec name."""
    if value is None or value.strip().upper() in CHARSETS:
        return value
    try:
        codecs.lookup(value)
    except LookupError as exc:
        raise ValueError(f"unknown character set {value!r}: use an MSH-18 value or a Python codec") from exc
    return value


class SenderOptions(BaseModel):
    """Per-sender decoding policy (key: ``MSH-3.1^MSH-4.1`` or ``MSH-3.1``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    _charset = field_validator("fallback_charset")(_check_charset)

    fallback_charset: str | None = Field(
        default=None, description="Charset when MSH-18 is empty: an MSH-18 value ('8859/15') or codec"
    )
    allow_cp1252: bool = Field(
        default=False, description="Read 0x80-0x9F bytes of an 8859/1 or 8859/15 message as Windows-1252"
    )

    def decode(self, raw: bytes) -> Message:
        """``raw`` decoded with these options: the one call intake and the worker share, so a message
        the door accepted reads the same when it is mapped."""
        return decode_message(raw, fallback_charset=self.fallback_charset, allow_cp1252=self.allow_cp1252)


class Hl7IntakeSettings(BaseModel):
    """HL7v2 intake settings (the ``hl7`` group of the application settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    _charset = field_validator("fallback_charset")(_check_charset)

    fallback_charset: str | None = Field(default=None, description="Charset when MSH-18 is empty (default ASCII)")
    allow_cp1252: bool = False
    senders: dict[str, SenderOptions] = Field(default_factory=dict)
    test_environment: bool = Field(default=False, description="Accept test/demo INS OIDs (1.2.250.1.213.1.4.10/.11)")
    accepted_processing_ids: frozenset[str] = frozenset({"P"})
    max_message_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    check_embedded_documents: bool = Field(
        default=True, description="Decode embedded base64 and check well-formed XML before the ACK"
    )
    accept_adt_without_zfa: bool = Field(
        default=False,
        description="Acknowledge (AA) PAM ADT events without ZFA and record them as handled with nothing to do, "
        "instead of refusing them (AR 201); for PAM feeds that cannot filter events",
    )
    channel: str = "mllp"

    def options_for(self, header: Header | None) -> SenderOptions:
        return self.options_for_sender(header.sender if header is not None else "")

    def options_for_sender(self, sender: str) -> SenderOptions:
        """Options for a journal sender ``MSH-3.1^MSH-4.1``: exact key, then ``MSH-3.1``, then defaults."""
        if sender:
            for key in (sender, sender.split("^", 1)[0]):
                if key in self.senders:
                    return self.senders[key]
        return SenderOptions(fallback_charset=self.fallback_charset, allow_cp1252=self.allow_cp1252)

    def decode(self, raw: bytes, sender: str) -> Message:
        """A journal row's payload decoded with its sender's options (as intake decoded it)."""
        return self.options_for_sender(sender).decode(raw)

    def decode_incoming(self, raw: bytes) -> Message:
        """A payload as received, decoded with :meth:`incoming_options`."""
        return self.incoming_options(raw).decode(raw)

    def incoming_options(self, raw: bytes) -> SenderOptions:
        """The options of a payload as received: its sender's need MSH-3/4 before decoding, read from the
        raw MSH line (only when per-sender options exist)."""
        return self.options_for(salvage_header(raw) if self.senders else None)


@dataclass(frozen=True, slots=True)
class _Prepared:
    inbound: Inbound
    header: Header | None
    codec: str
    reply: bytes  # the ACK for this message if the commit succeeds
    error: PasserelleError | None  # why it is refused; None when accepted
    decoded: Decoded | None = None  # what the worker may map from once the row is stored (accepted ORU/MDM)

    @property
    def control_id(self) -> str:
        return self.header.control_id if self.header is not None else ""


class Hl7Intake:
    """Turns HL7v2 payloads into journal rows and acknowledgements (see module docstring)."""

    def __init__(
        self,
        journal_append: Accept,
        settings: Hl7IntakeSettings,
        *,
        metrics: Hl7IntakeMetrics | None = None,
        clock: Clock | None = None,
        audit: AuditTrail | None = None,
        lab_sender: Callable[[str], bool] | None = None,
        handover: DecodedMessages | None = None,
    ) -> None:
        """``lab_sender``: whether a sender may send discrete lab results (a CR-BIO laboratory is
        configured for it); None takes them from everyone and leaves the decision to the worker.
        ``handover``: where accepted ORU/MDM messages are left, decoded, for the worker of this process."""
        self._handover = handover
        self._append = journal_append
        self._lab_sender = lab_sender
        self._settings = settings
        self._metrics: Hl7IntakeMetrics = metrics or NullMetrics()
        self._clock: Clock = clock or utcnow
        self._audit = audit
        self._counter = itertools.count(1)

    async def handle(self, payload: bytes, peer: str, principal: Principal | None = None) -> bytes | None:
        """Acknowledgement for one payload (no MLLP framing), or None when none must be sent.

        ``principal``: who the listener authenticated on this connection and the senders it may use
        (``None``: no binding, every sender is taken)."""
        return (await self.handle_batch([(payload, peer)], principal))[0]

    async def handle_batch(
        self, payloads: Sequence[tuple[bytes, str]], principal: Principal | None = None
    ) -> list[bytes | None]:
        """Acknowledgements for several payloads of one connection, journaled in ONE ``journal_append``
        call, in order (``principal`` as for :meth:`handle`)."""
        if not payloads:
            return []
        now = self._clock()
        if sum(len(raw) for raw, _ in payloads) > OFFLOAD_BYTES:  # big inputs are decoded off the event loop
            prepared = await asyncio.to_thread(self._prepare_all, payloads, now, principal)
        else:
            prepared = self._prepare_all(payloads, now, principal)
        try:
            results = await self._append([p.inbound for p in prepared])
            if len(results) != len(prepared):
                raise QueueUnavailableError("journal returned an unexpected number of results")
        except Exception as exc:  # noqa: BLE001 - any storage failure must become AR/CE 207, never AA
            error = exc if isinstance(exc, PasserelleError) else QueueUnavailableError("journal append failed")
            log.error("hl7 intake: journal append failed for %d message(s): %s", len(prepared), type(exc).__name__)
            failed = [Verdict(Outcome.UNAVAILABLE, None, p.control_id, error) for p in prepared]
            return [self._reply(p, v, now) for p, v in zip(prepared, failed, strict=True)]
        if self._handover is not None:  # before any await: the worker was woken when the append returned
            self._hand_over(self._handover, prepared, results)
        if principal is not None:
            await self._audit_refusals(prepared, results, principal)
        return [self._reply(p, self._settled(p, r), now, r.stored_ack) for p, r in zip(prepared, results, strict=True)]

    async def handle_oversize(self, msh_prefix: bytes, size: int, peer: str) -> bytes | None:
        """Reply for a frame the listener refused for its size (``msh_prefix``: its first segment).

        Journals a REJECTED row holding only that first segment (for the browser), then answers AE
        with ERR-3 207 and MSA-2 = MSH-10 when readable. A journal failure does not change the
        answer: the message was refused either way.
        """
        now = self._clock()
        header = salvage_header(msh_prefix)
        error = TooLargeError(f"message of {size} bytes is over the size limit")
        p = self._rejected(msh_prefix, peer, now, header, "ascii", error)
        try:
            await self._append([p.inbound])
        except Exception as exc:  # noqa: BLE001 - the refusal stands; the row is only informative
            log.error("hl7 intake: could not journal an oversize refusal: %s", type(exc).__name__)
        self._metrics.message("hl7", Outcome.REJECTED, error.reason)
        return p.reply if should_reply(header, False) else None

    # --- internals --------------------------------------------------------------------------

    @staticmethod
    def _hand_over(handover: DecodedMessages, prepared: list[_Prepared], results: list[AppendResult]) -> None:
        """Leave each newly stored message's reading for the worker (not a duplicate's: no new row)."""
        for p, result in zip(prepared, results, strict=True):
            if p.decoded is not None and not (result.duplicate or result.conflict):
                handover.put(result.row_id, p.decoded)

    def _prepare_all(
        self, payloads: Sequence[tuple[bytes, str]], now: datetime, principal: Principal | None = None
    ) -> list[_Prepared]:
        return [self._prepare(raw, peer, now, principal) for raw, peer in payloads]

    def _control_id(self, now: datetime) -> str:
        return f"{now:%Y%m%d%H%M%S}{next(self._counter) % 1_000_000:06d}"

    def _prepare(self, raw: bytes, peer: str, now: datetime, principal: Principal | None = None) -> _Prepared:
        header: Header | None = None
        codec = "ascii"
        classified: Classified | None = None
        msg: Message | None = None
        options: SenderOptions | None = None
        try:
            if len(raw) > self._settings.max_message_bytes:
                header = salvage_header(raw)
                raise TooLargeError(f"message larger than {self._settings.max_message_bytes} bytes")
            options = self._settings.incoming_options(raw)
            msg = options.decode(raw)
            codec = msg.codec
            header = read_header(msg)
            if principal is not None:
                check_sender(header, principal)
            classified = self._classify(msg, header)
        except PasserelleError as exc:
            return self._rejected(raw, peer, now, header or salvage_header(raw), codec, exc)
        except Exception as exc:  # noqa: BLE001 - a bug on one input must not cost the connection
            # no traceback text: an exception message could quote message content
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log.error(
                "hl7 intake: unexpected %s at %s:%s while reading a message",
                type(exc).__name__,
                frame.filename.rsplit("/", 1)[-1],
                frame.lineno,
            )
            return self._rejected(raw, peer, now, header or salvage_header(raw), codec, internal_error("message"))
        finally:
            if msg is not None:
                for warning in msg.warnings:
                    name, _, count = warning.partition("=")
                    self._metrics.decode_warning(name, int(count) if count.isdigit() else 1)
        text = build_ack(header, now=now, control_id=self._control_id(now))
        inbound = Inbound(
            raw=raw,
            channel=self._settings.channel,
            sender=header.sender,
            kind=classified.kind.journal_kind,
            message_id=header.control_id,
            dedup_key=header.dedup_key,
            content_hash=hashlib.sha256(raw).hexdigest(),
            lane=classified.patient.lane(header.sender),
            state=State.ACCEPTED,
            ack=encode_reply(text, codec),
        )
        decoded = None
        if inbound.kind in HANDED_KINDS:
            decoded = Decoded(options, self._settings.test_environment, msg, header, classified)
        return _Prepared(inbound, header, codec, inbound.ack, None, decoded)

    def _classify(self, msg: Message, header: Header) -> Classified:
        """The volet's rules, then this site's: discrete lab results only from a configured laboratory
        (refused at the door, AR 200, rather than acknowledged and then refused by the worker)."""
        classified = classify(
            msg,
            header,
            test_environment=self._settings.test_environment,
            accepted_processing_ids=self._settings.accepted_processing_ids,
            check_documents=self._settings.check_embedded_documents,
            accept_adt_without_zfa=self._settings.accept_adt_without_zfa,
        )
        lab = self._lab_sender
        if classified.kind is MessageKind.LAB_RESULTS and lab is not None and not lab(header.sender):
            raise UnsupportedMessageError(
                "discrete lab results are not configured for this sender (lab.senders)",
                location="MSH^1^3",
                reason="lab_not_configured",
            )
        return classified

    def _rejected(
        self, raw: bytes, peer: str, now: datetime, header: Header | None, codec: str, exc: PasserelleError
    ) -> _Prepared:
        refusal = hl7_refusal(exc)
        text = build_ack(header, now=now, control_id=self._control_id(now), refusal=refusal)
        ack = encode_reply(text, codec)
        detail = f"{exc.reason}: ERR-3 {refusal.err3} {exc.location} {exc.message}".strip()[:500]
        inbound = Inbound(
            raw=raw,
            channel=self._settings.channel,
            sender=header.sender if header is not None else f"peer:{peer}",
            kind="hl7",
            message_id=header.control_id if header is not None else "",
            dedup_key="",
            content_hash=hashlib.sha256(raw).hexdigest(),
            state=State.REJECTED,
            detail=detail,
            ack=ack,
            readable=header is not None,
        )
        return _Prepared(inbound, header, codec, ack, exc)

    async def _audit_refusals(self, prepared: list[_Prepared], results: list[AppendResult], who: Principal) -> None:
        for p, result in zip(prepared, results, strict=True):
            if isinstance(p.error, SenderNotAllowedError):
                sender, channel = p.error.claimed, self._settings.channel
                log.warning("hl7 intake: row %d refused: sender %r not bound to %s", result.row_id, sender, who.name)
                await audit_refusal(
                    self._audit, who, channel=channel, row_id=result.row_id, message_id=p.control_id, claimed=sender
                )

    def _settled(self, p: _Prepared, result: AppendResult) -> Verdict:
        """The verdict once the journal answered for this message."""
        if result.conflict:
            error = DuplicateConflictError(
                "message control id already used for a different message", location="MSH^1^10"
            )
            log.warning("hl7 intake: MSH-10 %r reused with different bytes (row %d)", p.control_id, result.row_id)
            return refused(error, row_id=result.row_id, message_id=p.control_id)
        if result.duplicate:
            log.info("hl7 intake: duplicate MSH-10 %r, replaying ACK of row %d", p.control_id, result.row_id)
            return Verdict(Outcome.DUPLICATE, result.row_id, p.control_id)
        if p.error is not None:
            log.info("hl7 intake: row %d rejected (MSH-10 %r): %s", result.row_id, p.control_id, p.error.reason)
            return refused(p.error, row_id=result.row_id, message_id=p.control_id)
        size = len(p.inbound.raw)
        log.info("hl7 intake: row %d accepted (MSH-10 %r, %d bytes)", result.row_id, p.control_id, size)
        return Verdict(Outcome.ACCEPTED, result.row_id, p.control_id)

    def _reply(self, p: _Prepared, verdict: Verdict, now: datetime, stored: bytes | None = None) -> bytes | None:
        """Count the verdict and pick the ACK: the stored one for a duplicate, a fresh one when the
        journal refused or failed, else the one built before the commit."""
        self._metrics.message(p.inbound.kind, verdict.outcome, verdict.reason)
        reply = p.reply
        if verdict.outcome is Outcome.DUPLICATE:
            reply = stored or p.reply
        elif verdict.outcome in (Outcome.CONFLICT, Outcome.UNAVAILABLE) and verdict.error is not None:
            text = build_ack(p.header, now=now, control_id=self._control_id(now), refusal=hl7_refusal(verdict.error))
            reply = encode_reply(text, p.codec)
        return reply if should_reply(p.header, verdict.positive) else None


#: The MSH field named in ERR-2 when the sender's component ``i`` is not allowed.
_SENDER_FIELDS = (("MSH^1^3", "sending application (MSH-3)"), ("MSH^1^4", "sending facility (MSH-4)"))


def check_sender(header: Header, principal: Principal) -> None:
    """Raise :class:`SenderNotAllowedError` naming MSH-3 or MSH-4 when ``principal`` may not send as
    ``header.sender`` (MSH-3.1^MSH-4.1)."""
    index = principal.first_mismatch(header.sender)
    if index is None:
        return
    location, field = _SENDER_FIELDS[min(index, 1)]
    message = f"{field} not allowed for this connection's certificate"
    raise SenderNotAllowedError(message, location=location, claimed=header.sender)
