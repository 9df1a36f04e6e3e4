"""The intake outcome vocabulary, and the ONE table from errors to replies on every channel.

Every intake (HL7v2 over MLLP, CDA over HTTP or a folder, DICOM over C-STORE or a folder) ends one
input with a :class:`Verdict`: an :class:`Outcome` from one small vocabulary, the journal row, and the
error when the input was not taken. What each channel sends back is read from :data:`TABLE`, the only
place where an exception becomes an HL7 acknowledgement code (MSA-1 + ERR-3), an HTTP status (with an
RFC 7807 problem body) or a DICOM C-STORE status. docs/ack-contract.md, docs/cda-intake.md and
docs/dicom.md publish the three columns; ADR 0017 says why the rows are what they are.

Texts sent back (MSA-3, ERR-7, problem ``detail``, DICOM Error Comment) are the messages of our own
exceptions (:mod:`passerelle.errors`), which never carry patient data; a foreign exception's text is
never sent ("internal error").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from passerelle.errors import (
    DuplicateConflictError,
    EncodingError,
    FramingError,
    MappingError,
    ParseError,
    PasserelleError,
    PermanentError,
    QueueUnavailableError,
    SenderNotAllowedError,
    TooLargeError,
    TransientError,
    UnsupportedMessageError,
    ValidationError,
)
from passerelle.mappings.hl7v2.ack import HL7_0357, Refusal, Reply


class Outcome(StrEnum):
    """What became of one input. The values are the ``outcome`` label of the intake metrics."""

    ACCEPTED = "accepted"  # committed to the journal: positive reply
    DUPLICATE = "duplicate"  # same key and bytes as a committed input: positive reply, nothing new stored
    CONFLICT = "conflict"  # same key, other bytes: refused, nothing stored
    REJECTED = "rejected"  # the input itself is refused (kept as a REJECTED row where the channel does)
    UNAVAILABLE = "unavailable"  # nothing committed for a transient reason (journal down): send it again


POSITIVE = frozenset({Outcome.ACCEPTED, Outcome.DUPLICATE})


@dataclass(frozen=True, slots=True)
class Verdict:
    """The end of one input: outcome, journal row (when one was written) and why it was not taken."""

    outcome: Outcome
    row_id: int | None = None
    message_id: str = ""  # MSH-10, document unique id or SOP Instance UID, when known
    error: PasserelleError | None = None

    @property
    def positive(self) -> bool:
        return self.outcome in POSITIVE

    @property
    def reason(self) -> str:
        """A fixed, PHI-free reason code ("" when taken)."""
        return self.error.reason if self.error is not None else ""

    @property
    def detail(self) -> str:
        """The PHI-free text sent back ("" when taken)."""
        return error_text(self.error) if self.error is not None else ""


# --- the table ---------------------------------------------------------------------------------------

#: C-STORE statuses we send (PS3.4 Annex B.2.3 and PS3.7 Annex C).
DICOM_SUCCESS = 0x0000
DICOM_OUT_OF_RESOURCES = 0xA700  # "Refused: Out of Resources": the transient class, senders retry
DICOM_NOT_AUTHORIZED = 0x0124  # PS3.7 C.4 "Refused: Not Authorized"
DICOM_SOP_CLASS_MISMATCH = 0xA900
DICOM_CANNOT_UNDERSTAND = 0xC000
DICOM_NOT_PUBLISHABLE = 0xC001
DICOM_DUPLICATE_CONFLICT = 0xC002


@dataclass(frozen=True, slots=True)
class Answer:
    """How one error class is answered on each channel."""

    outcome: Outcome
    hl7: Reply  # MSA-1 (original / enhanced mode), ERR-3 ("" = the error's own HL7 0357 code), ERR-4
    http: int
    dicom: int


def _row(outcome: Outcome, ack: str, err3: str, http: int, dicom: int) -> Answer:
    original, enhanced = {"AE": ("AE", "CR"), "AR": ("AR", "CR"), "AR/CE": ("AR", "CE")}[ack]
    return Answer(outcome, Reply(original, enhanced, err3, "E"), http, dicom)


_REFUSED, _TRANSIENT = Outcome.REJECTED, Outcome.UNAVAILABLE

#: THE table: the first row whose class matches (and whose reason, when given, equals the error's) wins.
#: HL7: content errors are AE (the same bytes fail the same way), circumstantial ones AR (HL7 v2.5
#: §2.9.2: type/event/processing id/version not accepted here, or storage down). HTTP: 4xx for the
#: input, 503 for "send again later". DICOM: Cxxx "cannot understand / not publishable", A7xx for
#: everything a sender should retry (out of resources).
TABLE: Sequence[tuple[type[BaseException], str, Answer]] = (
    (DuplicateConflictError, "", _row(Outcome.CONFLICT, "AR", "205", 409, DICOM_DUPLICATE_CONFLICT)),
    # The content may be fine; this connection (certificate, token, AE) may not speak for that sender.
    (SenderNotAllowedError, "", _row(_REFUSED, "AR", "207", 403, DICOM_NOT_AUTHORIZED)),
    (UnsupportedMessageError, "unsupported_event", _row(_REFUSED, "AR", "201", 422, DICOM_NOT_PUBLISHABLE)),
    (UnsupportedMessageError, "unsupported_processing_id", _row(_REFUSED, "AR", "202", 422, DICOM_NOT_PUBLISHABLE)),
    (UnsupportedMessageError, "unsupported_version", _row(_REFUSED, "AR", "203", 422, DICOM_NOT_PUBLISHABLE)),
    (UnsupportedMessageError, "unsupported_charset", _row(_REFUSED, "AR", "203", 415, DICOM_CANNOT_UNDERSTAND)),
    (UnsupportedMessageError, "content_type", _row(_REFUSED, "AR", "200", 415, DICOM_CANNOT_UNDERSTAND)),
    (UnsupportedMessageError, "sop_class_mismatch", _row(_REFUSED, "AR", "200", 422, DICOM_SOP_CLASS_MISMATCH)),
    (UnsupportedMessageError, "", _row(_REFUSED, "AR", "200", 422, DICOM_NOT_PUBLISHABLE)),
    # Undecodable bytes are a charset configuration mismatch between two systems (MSH-18, fallback):
    # AR for HL7 (docs/ack-contract.md); the raw bytes are kept for review.
    (EncodingError, "unsupported_encoding", _row(_REFUSED, "AR", "102", 415, DICOM_CANNOT_UNDERSTAND)),
    (EncodingError, "", _row(_REFUSED, "AR", "102", 400, DICOM_CANNOT_UNDERSTAND)),
    (ParseError, "no_msh", _row(_REFUSED, "AE", "100", 400, DICOM_CANNOT_UNDERSTAND)),
    (ParseError, "required", _row(_REFUSED, "AE", "101", 400, DICOM_CANNOT_UNDERSTAND)),
    (ParseError, "", _row(_REFUSED, "AE", "102", 400, DICOM_CANNOT_UNDERSTAND)),
    (ValidationError, "", _row(_REFUSED, "AE", "", 422, DICOM_NOT_PUBLISHABLE)),
    # Too large: DICOM keeps its historical A700 ("out of resources" for that size).
    (TooLargeError, "", _row(_REFUSED, "AE", "207", 413, DICOM_OUT_OF_RESOURCES)),
    (FramingError, "body_timeout", _row(_REFUSED, "AE", "207", 408, DICOM_CANNOT_UNDERSTAND)),
    (MappingError, "", _row(_REFUSED, "AE", "207", 422, DICOM_NOT_PUBLISHABLE)),
    (PermanentError, "", _row(_REFUSED, "AE", "207", 422, DICOM_NOT_PUBLISHABLE)),
    (TransientError, "", _row(_TRANSIENT, "AR/CE", "207", 503, DICOM_OUT_OF_RESOURCES)),
    # An unexpected error (a bug): not the sender's fault, so every channel says "try again later".
    (BaseException, "", _row(_REFUSED, "AR/CE", "207", 500, DICOM_OUT_OF_RESOURCES)),
)


def answer_for(error: BaseException) -> Answer:
    """The table row for ``error``."""
    reason = getattr(error, "reason", "")
    for cls, wanted_reason, answer in TABLE:
        if isinstance(error, cls) and (not wanted_reason or wanted_reason == reason):
            return answer
    raise AssertionError("unreachable: the BaseException row matches everything")


def error_text(error: BaseException) -> str:
    """The PHI-free text sent back: our own messages only, never a foreign exception's text."""
    if isinstance(error, PasserelleError):
        return error.message[:200]
    return "internal error"


def internal_error(what: str) -> PasserelleError:
    """The error standing for an unexpected exception (its text may quote input: never kept)."""
    return PasserelleError(f"internal error while reading the {what}", reason="internal")


def refused(error: BaseException, *, row_id: int | None = None, message_id: str = "") -> Verdict:
    """The verdict for an input that was not taken because of ``error``."""
    err = error if isinstance(error, PasserelleError) else internal_error("input")
    return Verdict(answer_for(err).outcome, row_id, message_id, err)


def unavailable(message_id: str = "", *, cause: BaseException | None = None) -> Verdict:
    """Nothing was committed because the journal (or a lookup before it) failed: the sender must send
    again. The text sent back is generic; the reason code is the cause's when it is one of ours."""
    error = QueueUnavailableError("journal unavailable, retry later")
    if isinstance(cause, PasserelleError):
        error.reason = cause.reason
    return Verdict(Outcome.UNAVAILABLE, None, message_id, error)


# --- per channel -------------------------------------------------------------------------------------


def hl7_refusal(error: BaseException) -> Refusal:
    """MSA-1 codes, ERR-3 (HL7 table 0357), text and ERR-2 location for a refused HL7v2 message."""
    reply = answer_for(error).hl7
    code = reply.err3 or getattr(error, "hl7_code", "207")
    return Refusal(reply, code if code in HL7_0357 else "207", error_text(error), getattr(error, "location", ""))


def http_status(verdict: Verdict) -> int:
    """202 accepted, 200 duplicate, else the table's status for the error."""
    if verdict.outcome is Outcome.ACCEPTED:
        return 202
    if verdict.outcome is Outcome.DUPLICATE or verdict.error is None:
        return 200
    return answer_for(verdict.error).http


def dicom_status(verdict: Verdict) -> int:
    if verdict.positive or verdict.error is None:
        return DICOM_SUCCESS
    return answer_for(verdict.error).dicom


#: Error Comment (0000,0902) is LO: at most 64 characters.
DICOM_COMMENT_MAX = 64


def dicom_comment(verdict: Verdict) -> str:
    """The PHI-free Error Comment of a failure status ("" on success)."""
    if verdict.positive:
        return ""
    return verdict.detail.encode("ascii", "replace").decode("ascii")[:DICOM_COMMENT_MAX]


PROBLEM_TYPE_BASE = "urn:passerelle:problem:"
_TITLES = {
    400: "Malformed document",
    408: "Request body too slow",
    403: "Sender not allowed",
    409: "Conflicting duplicate",
    413: "Document too large",
    415: "Unsupported media type",
    422: "Unusable document",
    500: "Internal error",
    503: "Journal unavailable",
}


def problem_body(status: int, reason: str, detail: str) -> dict[str, Any]:
    """An RFC 7807 problem body; ``detail`` must already be PHI-free (:func:`error_text` is)."""
    return {
        "type": f"{PROBLEM_TYPE_BASE}{reason}",
        "title": _TITLES.get(status, "Refused"),
        "status": status,
        "detail": detail,
        "reason": reason,
    }
