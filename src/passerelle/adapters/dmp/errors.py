"""The one table from the DMP's answers to the port's errors (docs/dmp-transport.md, "Errors").

Each known code — a ``RegistryError/@errorCode`` of a Failure, the subcode of a SOAP fault, or a TD0.2
acknowledgement detail — is either a **refusal** (a business or contract answer: the same request will be
refused again; the code travels in :attr:`RemoteRejectedError.remote_code` to the journal, the message
browser and the ZAM business acknowledgement) or a **retry** (the DMP or the path to it failed: same
document, same uniqueId, later), or a **credential** problem (retried, but an operator must act).

Codes not in the table: a Failure or a ``soap:Sender`` fault refuses (the DMP judged the request), a
``soap:Receiver`` fault retries (the DMP failed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

from passerelle.errors import RemoteCredentialError, RemoteRejectedError, RemoteTransientError
from passerelle.mappings.xds.responses import RegistryError

#: refuse (business answer), retry (the DMP or the path failed), credential (retried; an operator must act)
Verdict = Literal["refuse", "retry", "credential"]
VERDICTS: tuple[Verdict, ...] = ("refuse", "retry", "credential")


class Rule(NamedTuple):
    verdict: Verdict
    reason: str  # PHI-free reason for metrics, journal states and the audit trail


def _refuse(reason: str) -> Rule:
    return Rule("refuse", reason)


_RETRY = Rule("retry", "remote_busy")

#: Every code the DMP or an XDS.b registry is known to answer (IHE ITI TF-3 table 4.2.4.1-2, the DMP's
#: integration guide samples). Keep docs/dmp-transport.md in step.
ERROR_TABLE: Mapping[str, Rule] = {
    # SOAP fault subcodes and TD0.x acknowledgement details of the DMP
    "DMPInvalidCertificate": Rule("credential", "invalid_certificate"),
    "DMPAuthenticationFailure": Rule("credential", "authentication_failure"),
    "DMPClosed": _refuse("space_closed"),
    "DMPNotFound": _refuse("space_not_active"),
    "DMPIdentityCertificationFailure": _refuse("identity_not_certified"),
    "DMPAccessDenied": _refuse("access_denied"),
    "DMPTooManyRequests": _RETRY,
    # IHE XDS.b RegistryError codes
    "XDSRegistryBusy": _RETRY,
    "XDSRepositoryBusy": _RETRY,
    "XDSRegistryOutOfResources": _RETRY,
    "XDSRepositoryOutOfResources": _RETRY,
    "XDSRegistryNotAvailable": _RETRY,
    "XDSRegistryError": Rule("retry", "remote_internal_error"),
    "XDSRepositoryError": Rule("retry", "remote_internal_error"),
    "XDSUnknownPatientId": _refuse("unknown_patient"),
    "XDSPatientIdDoesNotMatch": _refuse("invalid_metadata"),
    "XDSMissingDocument": _refuse("invalid_metadata"),
    "XDSMissingDocumentMetadata": _refuse("invalid_metadata"),
    "XDSRegistryMetadataError": _refuse("invalid_metadata"),
    "XDSRepositoryMetadataError": _refuse("invalid_metadata"),
    "XDSRegistryDuplicateUniqueIdInMessage": _refuse("invalid_metadata"),
    "XDSUnknownRepositoryId": _refuse("invalid_metadata"),
    "XDSDuplicateUniqueIdInRegistry": _refuse("unique_id_conflict"),
    "XDSNonIdenticalHash": _refuse("unique_id_conflict"),
    "XDSNonIdenticalSize": _refuse("unique_id_conflict"),
    "XDSRegistryDeprecatedDocumentError": _refuse("unknown_replaced_document"),
    "UnresolvedReferenceException": _refuse("unknown_replaced_document"),
    "XDSMetadataUpdateError": _refuse("invalid_update"),
    "XDSMetadataVersionError": _refuse("invalid_update"),
    # codes of this gateway's own checks before sending
    "UnknownReplacedDocument": _refuse("unknown_replaced_document"),
    "UnknownDocument": _refuse("unknown_document"),
    "UniqueIdConflict": _refuse("unique_id_conflict"),
    "UnversionedEntry": _refuse("invalid_update"),
}

#: Codes meaning "this uniqueId is already registered": the gateway checks whether it is our document.
DUPLICATE_CODES = frozenset({"XDSDuplicateUniqueIdInRegistry"})


def rule_for(code: str, *, default: Rule) -> Rule:
    return ERROR_TABLE.get(code, default)


def error_for(rule: Rule, code: str, message: str, status: int) -> RemoteTransientError | RemoteRejectedError:
    """The port's exception for one classified answer."""
    if rule.verdict == "refuse":
        return RemoteRejectedError(message, status=status, remote_code=code, reason=rule.reason)
    if rule.verdict == "credential":
        return RemoteCredentialError(message, status=status)
    return RemoteTransientError(message, status=status)


def registry_failure(
    transaction: str, errors: Sequence[RegistryError], status: int
) -> RemoteTransientError | RemoteRejectedError:
    """A Failure: retry when any error is transient, else refuse with the first error's code."""
    codes = [e.code for e in errors if e.is_error] or ["XDSRegistryError"]
    rules = [(code, rule_for(code, default=_refuse("remote_rejected"))) for code in codes]
    listed = ", ".join(codes)
    for code, rule in rules:
        if rule.verdict != "refuse":
            return error_for(rule, code, f"{transaction} failed, to retry ({listed})", status)
    code, rule = rules[0]
    return error_for(rule, code, f"{transaction} refused by the DMP ({listed})", status)


def fault_error(transaction: str, code: str, subcode: str, status: int) -> RemoteTransientError | RemoteRejectedError:
    """A SOAP 1.2 fault: the subcode's rule when known; else Receiver → retry, anything else → refuse."""
    default = _RETRY if code == "Receiver" else _refuse("remote_rejected")
    remote = subcode or f"soap:{code or 'Fault'}"
    rule = rule_for(subcode, default=default)
    verb = "refused" if rule.verdict == "refuse" else "failed"
    return error_for(rule, remote, f"{transaction} {verb}: SOAP fault {code} {subcode}".strip(), status)
