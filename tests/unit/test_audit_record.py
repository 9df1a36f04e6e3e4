"""Audit record model and FHIR AuditEvent export (observability/audit.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from passerelle.observability.audit import (
    MAX_TEXT,
    AuditAction,
    AuditOutcome,
    AuditRecord,
    AuditTrail,
    to_audit_bundle,
    to_audit_event,
)
from passerelle.queue.audit import AuditQuery
from passerelle.queue.audit_memory import MemoryAuditStore

AT = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
SOURCE = "1.2.250.1.999.9"


def record(**changes: object) -> AuditRecord:
    base: dict[str, object] = {
        "at": AT,
        "action": "delivery",
        "outcome": "deliver",
        "reason": "publish",
        "row_id": 12,
        "document_id": "1.2.250.1.999.2.3.1",
        "patient_id": "280017512345610",
        "patient_oid": "1.2.250.1.213.1.4.10",
        "detail": "HTTP 200",
        "id": 5,
    }
    base.update(changes)
    return AuditRecord(**base)  # type: ignore[arg-type]


def test_strings_become_enums() -> None:
    r = record()
    assert r.action is AuditAction.DELIVERY and r.outcome is AuditOutcome.DELIVER


@pytest.mark.parametrize(
    "changes",
    [
        {"action": "read-the-cda"},
        {"outcome": "maybe"},
        {"at": datetime(2026, 11, 22, 3, 0)},
        {"reason": "x" * (MAX_TEXT + 1)},
        {"detail": "line1\nline2"},
        {"detail": "<ClinicalDocument>\x00"},
    ],
)
def test_invalid_records_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        record(**changes)


@pytest.mark.parametrize("action", list(AuditAction))
@pytest.mark.parametrize("outcome", list(AuditOutcome))
def test_every_record_exports_a_valid_audit_event(action: AuditAction, outcome: AuditOutcome) -> None:
    event = to_audit_event(record(action=action, outcome=outcome), source_id=SOURCE)
    AuditEvent.model_validate(event)


def test_delivery_event_content() -> None:
    event = to_audit_event(record(), source_id=SOURCE)
    assert event["id"] == "audit-5"
    assert event["type"]["code"] == "110106"  # Export
    assert event["subtype"][0]["code"] == "delivery"
    assert event["action"] == "C"
    assert event["outcome"] == "0"
    assert event["recorded"] == "2026-11-22T03:00:00+00:00"
    assert event["outcomeDesc"] == "deliver: publish"
    entities = {e["role"]["display"]: e for e in event["entity"]}
    assert entities["Patient"]["what"]["identifier"] == {
        "system": "urn:oid:1.2.250.1.213.1.4.10",
        "value": "280017512345610",
    }
    assert entities["Report"]["what"]["identifier"]["value"] == "urn:oid:1.2.250.1.999.2.3.1"
    assert entities["Domain Resource"]["detail"][0]["valueString"] == "HTTP 200"
    assert event["agent"][0]["requestor"] is False


@pytest.mark.parametrize(
    ("changes", "action", "outcome"),
    [
        ({"reason": "delete"}, "D", "0"),
        ({"action": "consent-decision", "outcome": "park", "reason": "space_not_active"}, "E", "4"),
        ({"action": "refusal", "outcome": "refuse", "reason": "patient_opposed"}, "E", "4"),
        ({"action": "dead-letter", "outcome": "dead", "reason": "deadline"}, "E", "8"),
        ({"action": "replay", "outcome": "success", "reason": "operator", "actor": "admin:alice"}, "E", "0"),
    ],
)
def test_action_and_outcome_codes(changes: dict[str, object], action: str, outcome: str) -> None:
    event = to_audit_event(record(**changes), source_id=SOURCE)
    assert (event["action"], event["outcome"]) == (action, outcome)
    if "actor" in changes:
        assert event["agent"][0]["requestor"] is True
        assert event["agent"][0]["who"]["identifier"]["value"] == "admin:alice"


def test_minimal_record_without_identifiers() -> None:
    event = to_audit_event(
        AuditRecord(at=AT, action=AuditAction.ADMIN, outcome=AuditOutcome.FAILURE, reason="login"), source_id=SOURCE
    )
    AuditEvent.model_validate(event)
    assert "entity" not in event and "id" not in event


def test_bundle_export_validates() -> None:
    bundle = to_audit_bundle([record(), record(id=6, action="refusal", outcome="refuse")], source_id=SOURCE)
    parsed = Bundle.model_validate(bundle)
    assert parsed.entry is not None and len(parsed.entry) == 2


async def test_trail_matches_the_worker_audit_sink() -> None:
    store = MemoryAuditStore()
    trail = AuditTrail(store, clock=lambda: AT)
    await trail.record(action="consent-decision", outcome="refuse", reason="patient_opposed", row_id=1)
    with pytest.raises(ValueError):
        await trail.record(action="nonsense", outcome="refuse", reason="x", row_id=1)
    (got,) = await store.query(AuditQuery())
    assert got.reason == "patient_opposed" and got.at == AT and got.id == 1


async def test_admin_hook_records_operator_actions() -> None:
    store = MemoryAuditStore()
    hook = AuditTrail(store, clock=lambda: AT).admin_hook("admin:alice")
    await hook("replay", 9, "1.2.3", "280017512345610")
    await hook("config-change", 0, "", "")
    replay, change = await store.query(AuditQuery())
    assert (replay.action, replay.outcome, replay.actor, replay.row_id) == (
        AuditAction.REPLAY,
        AuditOutcome.SUCCESS,
        "admin:alice",
        9,
    )
    assert (change.action, change.reason) == (AuditAction.ADMIN, "config-change")
