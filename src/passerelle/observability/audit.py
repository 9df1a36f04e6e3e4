"""The audit trail's record model, its recorder, and its export as FHIR R4 AuditEvent resources.

An audit record says who did what, when, to which document and patient, with which outcome and why —
identifiers, decisions and reasons only, never clinical content (docs/audit.md, docs/security.md). Records are append-only: nothing here (nor in any store) updates or deletes one.

The stores live in ``passerelle.queue.audit*`` and import this module's :class:`AuditRecord` (this module
imports no other area, so the dependency stays one-way).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol


class AuditAction(StrEnum):
    RECEIVED = "received"  # a message was accepted into the journal
    CONSENT_DECISION = "consent-decision"  # the consent policy decided (outcome deliver/park/refuse)
    DELIVERY = "delivery"  # a push to the patient space succeeded or was refused by it
    REFUSAL = "refusal"  # a document was refused before delivery (mapping, identity, policy)
    DEAD_LETTER = "dead-letter"  # retries exhausted
    REPLAY = "replay"  # an operator put a message back in the queue
    ADMIN = "admin"  # any other administrative action (login, configuration change...); see reason


class AuditOutcome(StrEnum):
    DELIVER = "deliver"
    PARK = "park"
    REFUSE = "refuse"
    DEAD = "dead"
    SUCCESS = "success"
    FAILURE = "failure"


#: Longest free-text field accepted; a reason or detail is a code or a short phrase, never a payload.
MAX_TEXT = 200
_SAFE = re.compile(r"^[\x20-\x7e\u00a0-\u024f]*$")  # printable, no control characters


@dataclass(frozen=True)
class AuditRecord:
    """One audit record. ``id`` is 0 until a store assigns it (increasing in append order)."""

    at: datetime
    action: AuditAction
    outcome: AuditOutcome
    reason: str
    actor: str = "passerelle"  # component or operator identity
    row_id: int = 0  # journal row
    document_id: str = ""  # document unique id (OID)
    patient_id: str = ""  # INS (identifier only)
    patient_oid: str = ""  # assigning authority of patient_id, when known
    detail: str = ""  # PHI-free detail: HTTP status, remote code, journal state...
    id: int = 0

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("audit time must be timezone-aware")
        object.__setattr__(self, "action", AuditAction(self.action))
        object.__setattr__(self, "outcome", AuditOutcome(self.outcome))
        for name in ("reason", "actor", "document_id", "patient_id", "patient_oid", "detail"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > MAX_TEXT or not _SAFE.match(value):
                raise ValueError(f"audit field {name} must be a short printable text (≤ {MAX_TEXT} characters)")


_DOCUMENT_ACTIONS = frozenset({"consent-decision", "delivery", "refusal", "dead-letter"})


class AuditAppender(Protocol):
    async def append(self, records: Sequence[AuditRecord]) -> list[int]: ...


class AuditTrail:
    """Records with the time from ``clock``: the dispatch worker, the intakes and the listeners call :meth:`record`.

    ``store`` is any :class:`passerelle.queue.audit.AuditStore`. Raises ValueError for an unknown action
    or outcome or an unsafe text (the worker logs and counts audit failures without losing the row).
    """

    def __init__(
        self, store: AuditAppender, clock: Callable[[], datetime] = lambda: datetime.now(UTC), *, transport: str = ""
    ) -> None:
        self.store = store
        self.clock = clock
        #: Patient-space transport (mhd | dmp) written as ``transport=<t>`` in the detail of document records.
        self.transport = transport

    async def record(
        self,
        *,
        action: str,
        outcome: str,
        reason: str,
        row_id: int = 0,
        document_id: str = "",
        patient_id: str = "",
        actor: str = "passerelle",
        patient_oid: str = "",
        detail: str = "",
    ) -> None:
        if self.transport and not detail and action in _DOCUMENT_ACTIONS:
            detail = f"transport={self.transport}"
        record = AuditRecord(
            at=self.clock(),
            action=AuditAction(action),
            outcome=AuditOutcome(outcome),
            reason=reason,
            actor=actor,
            row_id=row_id,
            document_id=document_id,
            patient_id=patient_id,
            patient_oid=patient_oid,
            detail=detail,
        )
        await self.store.append([record])

    def admin_hook(self, actor: str) -> Callable[[str, int, str, str], Awaitable[None]]:
        """A ``(action, row_id, document_id, patient_id)`` callback recording an operator's action (the
        message browser's replay hook): action ``replay`` or any other string as an ``admin`` action."""

        async def hook(action: str, row_id: int, document_id: str, patient_id: str) -> None:
            known = action == AuditAction.REPLAY.value
            await self.record(
                action=AuditAction.REPLAY if known else AuditAction.ADMIN,
                outcome=AuditOutcome.SUCCESS,
                reason="operator" if known else action,
                row_id=row_id,
                document_id=document_id,
                patient_id=patient_id,
                actor=actor,
            )

        return hook


# --- FHIR AuditEvent export ---------------------------------------------------------------------------

ACTION_SYSTEM = "urn:passerelle:audit-action"
JOURNAL_ROW_SYSTEM = "urn:passerelle:journal-row"
RFC3986 = "urn:ietf:rfc:3986"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"

# FHIR AuditEvent.outcome: 0 success, 4 minor failure, 8 serious failure, 12 major failure.
_OUTCOME_CODE = {
    AuditOutcome.DELIVER: "0",
    AuditOutcome.SUCCESS: "0",
    AuditOutcome.PARK: "4",
    AuditOutcome.REFUSE: "4",
    AuditOutcome.DEAD: "8",
    AuditOutcome.FAILURE: "8",
}
# AuditEvent.type: DICOM codes where one fits, the action itself as subtype.
_TYPE = {
    AuditAction.RECEIVED: ("110107", "Import"),
    AuditAction.DELIVERY: ("110106", "Export"),
    AuditAction.ADMIN: ("110100", "Application Activity"),
}


def to_audit_event(record: AuditRecord, *, source_id: str, source_name: str = "Passerelle") -> dict[str, Any]:
    """FHIR R4 AuditEvent (JSON) for one record, patient and document as entities (BALP-like)."""
    type_code, type_display = _TYPE.get(record.action, ("", ""))
    event: dict[str, Any] = {"resourceType": "AuditEvent"}
    if record.id:
        event["id"] = f"audit-{record.id}"
    event["type"] = (
        {"system": _DCM, "code": type_code, "display": type_display}
        if type_code
        else {"system": ACTION_SYSTEM, "code": record.action.value}
    )
    event["subtype"] = [{"system": ACTION_SYSTEM, "code": record.action.value}]
    event["action"] = _fhir_action(record)
    event["recorded"] = record.at.isoformat()
    event["outcome"] = _OUTCOME_CODE[record.outcome]
    event["outcomeDesc"] = f"{record.outcome.value}: {record.reason}" if record.reason else record.outcome.value
    event["agent"] = [
        {
            "who": {"identifier": {"system": f"urn:oid:{source_id}", "value": record.actor}},
            "requestor": record.actor != "passerelle",
        }
    ]
    event["source"] = {
        "observer": {"identifier": {"system": RFC3986, "value": f"urn:oid:{source_id}"}, "display": source_name},
        "type": [{"system": _SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }
    entities: list[dict[str, Any]] = []
    if record.patient_id:
        identifier = {"value": record.patient_id}
        if record.patient_oid:
            identifier = {"system": f"urn:oid:{record.patient_oid}", "value": record.patient_id}
        entities.append(
            {
                "what": {"identifier": identifier},
                "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    if record.document_id:
        entities.append(
            {
                "what": {"identifier": {"system": RFC3986, "value": f"urn:oid:{record.document_id}"}},
                "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": _OBJECT_ROLE, "code": "3", "display": "Report"},
            }
        )
    if record.row_id:
        entity: dict[str, Any] = {
            "what": {"identifier": {"system": JOURNAL_ROW_SYSTEM, "value": str(record.row_id)}},
            "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": _OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        }
        if record.detail:
            entity["detail"] = [{"type": "detail", "valueString": record.detail}]
        entities.append(entity)
    if entities:
        event["entity"] = entities
    return event


def to_audit_bundle(
    records: Sequence[AuditRecord], *, source_id: str, source_name: str = "Passerelle"
) -> dict[str, Any]:
    """A ``collection`` Bundle of AuditEvents (for an export file or an ATNA FHIR feed)."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": to_audit_event(record, source_id=source_id, source_name=source_name)} for record in records
        ],
    }


def _fhir_action(record: AuditRecord) -> str:
    """C create, R read, U update, D delete, E execute."""
    if record.action == AuditAction.DELIVERY and record.reason in ("publish", "replace"):
        return "C"
    if record.action == AuditAction.DELIVERY and record.reason == "delete":
        return "D"
    if record.action == AuditAction.RECEIVED:
        return "C"
    return "E"
