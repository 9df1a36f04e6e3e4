"""Reading the answers of a PDSm/MHD patient space (docs/patient-space-api.md): the status lookup
``Parameters``, the ITI-65 ``transaction-response`` Bundle and the ``OperationOutcome`` error code.

Pure functions over decoded JSON: :class:`passerelle.adapters.mhd.MhdSpace` calls them and turns a
:class:`MalformedAnswerError` into an ambiguous (retried) delivery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from passerelle.adapters.space import SpaceState, SpaceStatus

#: Error-code system of the patient-space protocol (OperationOutcome.issue[0].details.coding[0]).
DMP_ERROR_CODE_SYSTEM = "urn:passerelle:dmp-error-code"
_STATUS_FLAGS = {"opposed": "opposed", "authorBlocked": "author_blocked", "minor": "minor"}


class MalformedAnswerError(ValueError):
    """The patient space answered 2xx with a body that is not what the protocol promises."""


def parse_status(body: object) -> SpaceStatus:
    """Read the ``Parameters`` answer of ``Patient/$dmp-status``."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "Parameters":
        raise MalformedAnswerError("status answer is not a Parameters resource")
    state: object = None
    flags: dict[str, bool] = {}
    for param in body.get("parameter") or ():
        if not isinstance(param, Mapping):
            raise MalformedAnswerError("malformed parameter")
        name = param.get("name")
        if name == "status":
            state = param.get("valueCode")
        elif name in _STATUS_FLAGS:
            flags[_STATUS_FLAGS[str(name)]] = _boolean(param, str(name))
    try:
        return SpaceStatus(
            state=SpaceState(str(state)),
            opposed=flags.get("opposed", False),
            author_blocked=flags.get("author_blocked", False),
            minor=flags.get("minor", False),
        )
    except ValueError as exc:
        raise MalformedAnswerError("status parameter missing or unknown") from exc


def _boolean(param: Mapping[str, object], name: str) -> bool:
    value = param.get("valueBoolean")
    if not isinstance(value, bool):
        raise MalformedAnswerError(f"parameter {name} is not a boolean")
    return value


@dataclass(frozen=True)
class EntryResponse:
    status: int  # 201 created, 200 already stored
    location: str


def parse_transaction_response(body: object, request_types: Sequence[str]) -> list[EntryResponse]:
    """Read a ``transaction-response`` Bundle: one entry per request entry, in request order (a
    ``location`` must name the resource type of its request entry), each with a 2xx status."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "Bundle":
        raise MalformedAnswerError("answer is not a Bundle")
    if body.get("type") != "transaction-response":
        raise MalformedAnswerError("answer is not a transaction-response")
    entries = body.get("entry")
    if not isinstance(entries, list) or len(entries) != len(request_types):
        raise MalformedAnswerError("transaction-response does not have one entry per request entry")
    return [_entry_response(entry, resource_type) for entry, resource_type in zip(entries, request_types, strict=True)]


def _entry_response(entry: object, resource_type: str) -> EntryResponse:
    response = entry.get("response") if isinstance(entry, Mapping) else None
    if not isinstance(response, Mapping):
        raise MalformedAnswerError("entry without response")
    head = str(response.get("status", "")).split(" ", 1)[0]
    if not head.isdigit() or not 200 <= int(head) < 300:
        raise MalformedAnswerError("entry status is not a success")
    location = str(response.get("location") or "")
    if location and not location.split("/_history/", 1)[0].rpartition("/")[0].endswith(resource_type):
        raise MalformedAnswerError("transaction-response entries are not in request order")
    return EntryResponse(status=int(head), location=location)


def outcome_code(body: object) -> str:
    """The protocol error code of an ``OperationOutcome`` (``""`` when absent or not ours)."""
    if not is_operation_outcome(body):
        return ""
    assert isinstance(body, Mapping)
    issues = body.get("issue")
    if not isinstance(issues, list) or not issues or not isinstance(issues[0], Mapping):
        return ""
    details = issues[0].get("details")
    codings = details.get("coding") if isinstance(details, Mapping) else None
    if not isinstance(codings, list):
        return ""
    return next((code for coding in codings if (code := _our_code(coding))), "")


def _our_code(coding: object) -> str:
    if not isinstance(coding, Mapping) or coding.get("system") != DMP_ERROR_CODE_SYSTEM:
        return ""
    code = coding.get("code")
    if isinstance(code, str) and code.isascii() and code.isalnum() and len(code) <= 64:
        return code
    return ""


def is_operation_outcome(body: object) -> bool:
    return isinstance(body, Mapping) and body.get("resourceType") == "OperationOutcome"
