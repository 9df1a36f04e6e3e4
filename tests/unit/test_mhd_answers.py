"""Reading the patient space's answers (adapters/mhd_answers.py): status, transaction response, error code."""

from __future__ import annotations

import pytest

from passerelle.adapters.mhd_answers import (
    MalformedAnswerError,
    outcome_code,
    parse_status,
    parse_transaction_response,
)
from passerelle.adapters.space import SpaceState


def test_parse_status() -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "status", "valueCode": "FERME"},
            {"name": "opposed", "valueBoolean": True},
            {"name": "authorBlocked", "valueBoolean": False},
            {"name": "minor", "valueBoolean": True},
        ],
    }
    status = parse_status(body)
    assert status.state == SpaceState.FERME and status.opposed and status.minor and not status.author_blocked


@pytest.mark.parametrize(
    "body",
    [
        None,
        {"resourceType": "Bundle"},
        {"resourceType": "Parameters", "parameter": []},
        {"resourceType": "Parameters", "parameter": [{"name": "status", "valueCode": "OUVERT"}]},
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "status", "valueCode": "ACTIF"}, {"name": "opposed", "valueBoolean": "yes"}],
        },
    ],
)
def test_parse_status_rejects_malformed(body: object) -> None:
    with pytest.raises(MalformedAnswerError):
        parse_status(body)


def test_parse_transaction_response() -> None:
    body = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "201 Created", "location": "List/1"}},
            {"response": {"status": "200 OK", "location": "DocumentReference/2"}},
        ],
    }
    types = ["List", "DocumentReference"]
    entries = parse_transaction_response(body, types)
    assert [(e.status, e.location) for e in entries] == [(201, "List/1"), (200, "DocumentReference/2")]
    with pytest.raises(MalformedAnswerError):
        parse_transaction_response(body, [*types, "Binary"])
    with pytest.raises(MalformedAnswerError):
        parse_transaction_response({**body, "type": "batch-response"}, types)
    bad = {**body, "entry": [{"response": {"status": "400 Bad"}}, {"response": {"status": "201"}}]}
    with pytest.raises(MalformedAnswerError):
        parse_transaction_response(bad, types)
    with pytest.raises(MalformedAnswerError, match="order"):
        parse_transaction_response(body, ["DocumentReference", "List"])
    versioned = {
        **body,
        "entry": [
            {"response": {"status": "201 Created", "location": "http://space/fhir/List/1/_history/1"}},
            {"response": {"status": "201 Created"}},
        ],
    }
    assert [e.status for e in parse_transaction_response(versioned, types)] == [201, 201]


def test_outcome_code() -> None:
    oo = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "business-rule",
                "details": {"coding": [{"system": "urn:passerelle:dmp-error-code", "code": "DMPClosed"}]},
            }
        ],
    }
    assert outcome_code(oo) == "DMPClosed"
    assert outcome_code({"resourceType": "OperationOutcome", "issue": []}) == ""
    assert outcome_code({"resourceType": "Bundle"}) == ""
    assert outcome_code("DMPClosed") == ""
