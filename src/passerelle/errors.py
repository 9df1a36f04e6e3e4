"""The one exception tree of Passerelle.

Every error raised on purpose is a :class:`PasserelleError`. Its branch says whether trying again may help:
:class:`PermanentError` subclasses describe the input or a business refusal (never retried),
:class:`TransientError` subclasses describe the environment (retried with backoff until a deadline).
Foreign exceptions are wrapped at the boundary with ``raise ... from exc``.

Error texts may be sent back to senders (MSA-3, ERR-7, HTTP problem details): they never contain
patient data, only field locations, codes and sizes.
"""

from __future__ import annotations


class PasserelleError(Exception):
    """Base of every error Passerelle raises on purpose."""

    #: HL7 table 0357 code used when this error becomes an ERR segment.
    hl7_code: str = "207"
    #: Short, PHI-free reason code used in metrics labels and journal states.
    reason: str = "internal"

    def __init__(self, message: str, *, location: str = "", reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        if reason is not None:
            self.reason = reason


class PermanentError(PasserelleError):
    """The same input will fail the same way: do not retry."""


class TransientError(PasserelleError):
    """The environment failed; the same operation may succeed later."""


# --- permanent: input -------------------------------------------------------------------------------


class FramingError(PermanentError):
    reason = "framing"


class ParseError(PermanentError):
    """The bytes cannot be read as the declared format."""

    hl7_code = "102"
    reason = "parse"


class EncodingError(ParseError):
    """The bytes are not valid in the declared (or configured) character set."""

    reason = "encoding"


class UnsupportedMessageError(PermanentError):
    """Message type, event, processing id or version not handled here."""

    hl7_code = "200"
    reason = "unsupported"


class ValidationError(PermanentError):
    """Readable input that breaks a rule of its specification (CI-SIS volet, CDA header...)."""

    hl7_code = "101"
    reason = "validation"


class DuplicateConflictError(PermanentError):
    """Same sender and control id as an earlier message, but different bytes."""

    hl7_code = "205"
    reason = "duplicate_conflict"


class TooLargeError(PermanentError):
    reason = "too_large"


class SenderNotAllowedError(PermanentError):
    """The authenticated party (client certificate, token, calling AE title) may not speak for the sender
    the input names (MSH-3/MSH-4, the DICOM Issuer of Patient ID...). ``location`` names the field."""

    reason = "sender_not_allowed"

    def __init__(self, message: str, *, location: str = "", claimed: str = "") -> None:
        super().__init__(message, location=location)
        #: The sender the input named (an identifier, for the audit trail; never sent back).
        self.claimed = claimed


class MappingError(PermanentError):
    """A valid input that cannot be turned into a document of the national model."""

    reason = "mapping"


class IdentityError(MappingError):
    """No qualified national identity (INS) usable for the patient space."""

    reason = "identity_not_qualified"


# --- permanent: downstream business refusals --------------------------------------------------------


class ConsentRefusedError(PermanentError):
    reason = "consent_refused"


class RemoteRejectedError(PermanentError):
    """The patient space refused the document for a business or contract reason (4xx)."""

    reason = "remote_rejected"

    def __init__(self, message: str, *, status: int = 0, remote_code: str = "", reason: str | None = None):
        super().__init__(message, reason=reason)
        self.status = status
        self.remote_code = remote_code


# --- transient --------------------------------------------------------------------------------------


class QueueUnavailableError(TransientError):
    """The journal could not commit (disk full, database down, lock timeout)."""

    reason = "queue_unavailable"


class RemoteTransientError(TransientError):
    """Transport failure, timeout, 408/425/429/5xx, or an ambiguous answer from the patient space."""

    reason = "remote_transient"

    def __init__(self, message: str, *, status: int = 0, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RemoteAmbiguousError(RemoteTransientError):
    """The patient space answered 2xx with a body that is not the expected resource: the outcome is
    unknown, so the document is not counted as delivered and the push is tried again (same idempotency key)."""

    reason = "remote_ambiguous"


class RemoteCredentialError(RemoteTransientError):
    """The patient space refused our credentials (401, or 403 without a business code), or the token
    endpoint did. An operator must act (alert); retried with backoff meanwhile, never in a tight loop."""

    reason = "remote_credentials"
