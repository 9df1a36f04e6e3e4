"""The one exception tree of Passerelle.

Every error raised on purpose is a :class:`PasserelleError`. Its branch says whether trying again may help:
:class:`PermanentError` subclasses describe the input or a business refusal (never retried),
:class:`TransientError` subclasses describe the environment (retried with backoff until a deadline).
Foreign exceptions are wrapped at the boundary with ``raise ... from exc``.

Each class states, as class keywords, its HL7 table 0357 code (``hl7_code``, used when it becomes an ERR
segment) and its short, PHI-free ``reason`` (metric labels, journal states); an instance may narrow the
reason. Error texts may be sent back to senders (MSA-3, ERR-7, HTTP problem details): they never contain
patient data, only field locations, codes and sizes.
"""

from __future__ import annotations


class PasserelleError(Exception):
    """Base of every error Passerelle raises on purpose."""

    #: HL7 table 0357 code used when this error becomes an ERR segment.
    hl7_code: str = "207"
    #: Short, PHI-free reason code used in metrics labels and journal states.
    reason: str = "internal"

    def __init_subclass__(cls, *, hl7_code: str | None = None, reason: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if hl7_code is not None:
            cls.hl7_code = hl7_code
        if reason is not None:
            cls.reason = reason

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


class FramingError(PermanentError, reason="framing"):
    """The MLLP framing of the bytes is broken."""


class ParseError(PermanentError, hl7_code="102", reason="parse"):
    """The bytes cannot be read as the declared format."""


class EncodingError(ParseError, reason="encoding"):
    """The bytes are not valid in the declared (or configured) character set."""


class UnsupportedMessageError(PermanentError, hl7_code="200", reason="unsupported"):
    """Message type, event, processing id or version not handled here."""


class ValidationError(PermanentError, hl7_code="101", reason="validation"):
    """Readable input that breaks a rule of its specification (CI-SIS volet, CDA header...)."""


class DuplicateConflictError(PermanentError, hl7_code="205", reason="duplicate_conflict"):
    """Same sender and control id as an earlier message, but different bytes."""


class TooLargeError(PermanentError, reason="too_large"):
    """Over a configured size limit."""


class SenderNotAllowedError(PermanentError, reason="sender_not_allowed"):
    """The authenticated party (client certificate, token, calling AE title) may not speak for the sender
    the input names (MSH-3/MSH-4, the DICOM Issuer of Patient ID...). ``location`` names the field."""

    def __init__(self, message: str, *, location: str = "", claimed: str = "") -> None:
        super().__init__(message, location=location)
        #: The sender the input named (an identifier, for the audit trail; never sent back).
        self.claimed = claimed


class MappingError(PermanentError, reason="mapping"):
    """A valid input that cannot be turned into a document of the national model."""


class IdentityError(MappingError, reason="identity_not_qualified"):
    """No qualified national identity (INS) usable for the patient space."""


# --- permanent: downstream business refusals --------------------------------------------------------


class ConsentRefusedError(PermanentError, reason="consent_refused"):
    """The consent policy refused the document."""


class RemoteRejectedError(PermanentError, reason="remote_rejected"):
    """The patient space refused the document for a business or contract reason (4xx)."""

    def __init__(self, message: str, *, status: int = 0, remote_code: str = "", reason: str | None = None):
        super().__init__(message, reason=reason)
        self.status = status
        self.remote_code = remote_code


# --- transient --------------------------------------------------------------------------------------


class QueueUnavailableError(TransientError, reason="queue_unavailable"):
    """The journal could not commit (disk full, database down, lock timeout)."""


class RemoteTransientError(TransientError, reason="remote_transient"):
    """Transport failure, timeout, 408/425/429/5xx, or an ambiguous answer from the patient space."""

    def __init__(self, message: str, *, status: int = 0, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RemoteAmbiguousError(RemoteTransientError, reason="remote_ambiguous"):
    """The patient space answered 2xx with a body that is not the expected resource: the outcome is
    unknown, so the document is not counted as delivered and the push is tried again (same idempotency key)."""


class RemoteCredentialError(RemoteTransientError, reason="remote_credentials"):
    """The patient space refused our credentials (401, or 403 without a business code), the token endpoint
    did, or its server refused our client certificate with a TLS alert (expired, revoked, unknown CA...).
    An operator must act (alert); retried with backoff meanwhile, never in a tight loop."""


class RemoteEndpointError(RemoteTransientError, reason="remote_endpoint"):
    """The configured URL does not lead to the patient space's service: HTTP 404 without a protocol
    answer (no FHIR OperationOutcome), a redirect (never followed), or a capability statement that is not one. ``space.url`` is
    probably wrong: an operator must act (``/readyz`` says so); retried with backoff meanwhile."""


class RemoteUntrustedCertificateError(RemoteTransientError, reason="tls_untrusted"):
    """The patient space's server certificate is not trusted by ``space.ca_file`` (or the system's trust
    store): the TLS handshake failed on certificate verification, nothing was sent. An operator must
    act (the trust store, or a wrong host behind ``space.url``); retried with backoff meanwhile, so the
    backlog drains once the trust is fixed (docs/adr/0028-dmp-answers-from-a-real-platform.md)."""


#: ``reason`` of the transient failures an operator must fix, counted apart in metrics (by this label).
OPERATOR_REASONS = {"remote_credentials": "credential", "tls_untrusted": "tls_untrusted"}


def transient_result(exc: RemoteTransientError) -> str:
    """The metrics ``result`` of a transient failure: ``credential`` or ``tls_untrusted`` (retried, but an
    operator must act; each has its alert), else ``transient``."""
    return OPERATOR_REASONS.get(exc.reason, "transient")
