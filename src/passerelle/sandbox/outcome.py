"""Business refusals of the patient-space protocol and their ``OperationOutcome`` form."""

from __future__ import annotations

from typing import Any

ERROR_CODE_SYSTEM = "urn:passerelle:dmp-error-code"

#: Business code -> HTTP status (docs/patient-space-api.md, "Business refusal codes").
HTTP_STATUS: dict[str, int] = {
    "DMPClosed": 422,
    "DMPNotFound": 422,
    "PatientOpposed": 422,
    "AuthorBlocked": 403,
    "InvalidBundle": 400,
    "UnknownReplacedDocument": 422,
    "UniqueIdConflict": 409,
    "UnknownDocument": 404,
    "NotAuthor": 403,
}

_ISSUE_CODE: dict[str, str] = {
    "InvalidBundle": "invalid",
    "UniqueIdConflict": "duplicate",
    "UnknownDocument": "not-found",
    "UnknownReplacedDocument": "not-found",
    "AuthorBlocked": "forbidden",
    "NotAuthor": "forbidden",
}


class SpaceRefusal(Exception):
    """A business refusal: becomes an ``OperationOutcome`` with the code and its HTTP status.

    ``diagnostics`` is sent back to the caller: field locations and codes only, never patient data.
    """

    def __init__(self, code: str, diagnostics: str) -> None:
        super().__init__(f"{code}: {diagnostics}")
        self.code = code
        self.diagnostics = diagnostics
        self.http_status = HTTP_STATUS[code]


def refusal_outcome(code: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": _ISSUE_CODE.get(code, "business-rule"),
                "details": {"coding": [{"system": ERROR_CODE_SYSTEM, "code": code}], "text": code},
                "diagnostics": diagnostics,
            }
        ],
    }


def simple_outcome(severity: str, code: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }
