"""The narrow port the dispatch worker uses to reach a patient's space.

The worker knows only :class:`PatientSpace`; the composition root picks the implementation
(:class:`passerelle.adapters.mhd.MhdSpace` for PDSm/MHD and the sandbox,
:class:`passerelle.adapters.dmp.client.DmpSpace` for the DMP's SOAP services, chosen by
:func:`passerelle.adapters.factory.build_space`; fakes in tests).

Contract of every implementation:

- **One attempt per call.** An adapter never retries by itself: the worker owns retries, persists the
  attempt count and the next due time in the journal row, so retries survive a restart and never
  overtake a patient's later documents.
- **Errors say whether to try again.** :class:`~passerelle.errors.RemoteTransientError` (and its
  subclasses ``RemoteAmbiguousError``, ``RemoteCredentialError``) means "the outcome is unknown or the
  environment failed: try again later, same document, same idempotency key"; its ``retry_after`` (seconds,
  or ``None``) is the space's own hint. :class:`~passerelle.errors.RemoteRejectedError` means a final
  business or contract refusal; ``remote_code`` carries the space's code (``DMPClosed``,
  ``PatientOpposed``, ``AuthorBlocked``, ``DMPNotFound``, ``UniqueIdConflict``...) and ``reason`` a
  PHI-free reason for metrics and the journal. :class:`~passerelle.errors.IdentityError` is raised before
  any network call when the patient's INS cannot be sent to this space (e.g. a test INS in production).
  :func:`configuration_error` tells which answers show that our configuration of the space is wrong (an
  operator must act; readiness reports it), :func:`space_answered` which ones show it understood us.
- **Idempotent delivery.** Pushing the same document twice stores it once: the second answer is
  :attr:`DeliveryOutcome.ALREADY_STORED`, which the worker treats as delivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from passerelle.errors import (
    RemoteCredentialError,
    RemoteEndpointError,
    RemoteRejectedError,
    RemoteTransientError,
    RemoteUntrustedCertificateError,
)
from passerelle.mappings.document import Document, Patient

__all__ = [
    "DeliveryOutcome",
    "DeliveryReceipt",
    "PatientSpace",
    "SpaceProbe",
    "SpaceState",
    "SpaceStatus",
    "configuration_error",
    "space_answered",
]


class SpaceState(StrEnum):
    """State of a patient's space, in the vocabulary of the DMP status service (TD0.2) and PAM ZFA-1."""

    ACTIF = "ACTIF"
    FERME = "FERME"
    INEXISTANT = "INEXISTANT"


@dataclass(frozen=True)
class SpaceStatus:
    """Answer of the status lookup for one patient as seen by one author.

    Every field but ``state`` has a default, so a transport that learns more (e.g. the DMP's TD0.2
    authorisation state) adds an optional field without touching the other transports or the gate.
    """

    state: SpaceState
    opposed: bool = False  # the patient opposed feeding the space
    author_blocked: bool = False  # the patient blocked this author
    minor: bool = False  # the space's holder is a minor (legal representants see the space)
    authorisation: str = ""  # DMP TD0.2 authorisation of the asking professional (VALIDE, EXPIRE...); "" if not given


class DeliveryOutcome(StrEnum):
    CREATED = "created"  # the space stored the document now
    ALREADY_STORED = "already_stored"  # same unique id and same content already there: nothing new stored
    DELETED = "deleted"  # the reference is now entered-in-error (also when it already was)
    UPDATED = "updated"  # only the metadata changed (e.g. confidentiality codes, DMP ITI-57)


@dataclass(frozen=True)
class DeliveryReceipt:
    """What the space acknowledged for one document (identifiers only, fit for the audit trail)."""

    unique_id: str
    outcome: DeliveryOutcome
    http_status: int
    location: str = ""  # e.g. DocumentReference/<id> in the space
    idempotency_key: str = ""
    remote_answer: str = ""  # PHI-free summary of the space's answer (status, codes, message ids) for the journal
    transport: str = ""  # mhd | dmp


class PatientSpace(Protocol):
    """A patient-space client. All methods make at most one attempt (see the module docstring)."""

    async def provide(self, doc: Document) -> DeliveryReceipt:
        """Publish or replace ``doc`` (action publish/replace)."""
        ...

    async def delete(self, doc: Document) -> DeliveryReceipt:
        """Delete the document ``doc.replaces`` (or ``doc.unique_id``) authored by ``doc.author``."""
        ...

    async def status(self, patient: Patient, author_id: str) -> SpaceStatus:
        """State of the patient's space, opposition, whether ``author_id`` is blocked, minority."""
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...


@runtime_checkable
class SpaceProbe(Protocol):
    """A space client that can check, without naming any real patient, that its configuration works:
    the URL leads to the service and the credentials are accepted (ADR 0023). One attempt; returns a
    short PHI-free summary of the answer, or raises as the other calls do."""

    async def probe(self) -> str: ...


def configuration_error(exc: BaseException | None) -> str | None:
    """``"credentials"``, ``"endpoint"`` or ``"tls_untrusted"`` when the space's answer shows a
    configuration error, else None.

    Credentials: 401, or 403 without a business code (and a token endpoint refusing us). Endpoint: 404
    without a protocol answer (MHD: no OperationOutcome; DMP: no SOAP envelope), a ``/metadata`` that
    is not a capability statement, or a redirect (never followed: ``space.url`` is not the service's).
    TLS: the server's certificate is not trusted by ``space.ca_file``."""
    if isinstance(exc, RemoteCredentialError):
        return "credentials"
    if isinstance(exc, RemoteUntrustedCertificateError):
        return "tls_untrusted"
    if isinstance(exc, RemoteEndpointError):
        return "endpoint"
    if isinstance(exc, RemoteTransientError | RemoteRejectedError) and exc.status == 404:
        return "endpoint" if not getattr(exc, "remote_code", "") else None
    return None


def space_answered(exc: BaseException | None) -> bool:
    """True when the space understood the request: a success, or a business refusal with its code."""
    return exc is None or (isinstance(exc, RemoteRejectedError) and bool(exc.remote_code))
