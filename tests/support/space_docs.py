"""Synthetic documents for the consent, MHD and audit tests (no real patient data: ANS test INS OID)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from passerelle.mappings.document import (
    CLASS_CODE_SYSTEM,
    FACILITY_TYPE_SYSTEM,
    FORMAT_IHE_SYSTEM,
    INS_NIR_TEST_OID,
    LOINC,
    PRACTICE_SETTING_SYSTEM,
    Action,
    Author,
    Code,
    Document,
    Flags,
    IdentityStatus,
    Patient,
    ReferenceId,
    confidentiality_code,
)
from passerelle.mappings.identity.ins import with_key

INS = with_key("2800175123456")  # synthetic, valid key
INS_2 = with_key("1750275654321")
AUTHOR_ID = "801234567890"
ORG_ID = "1750100125"


def patient(ins: str = INS, **changes: Any) -> Patient:
    base: dict[str, Any] = {
        "ins": ins,
        "ins_oid": INS_NIR_TEST_OID,
        "identity_status": IdentityStatus.QUALIFIED,
        "local_id": "IPP0001",
        "local_id_oid": "1.2.250.1.999.1.1",
        "family": "TESTNOM",
        "given": "TESTPRENOM",
        "birth_date": "19800101",
        "sex": "F",
    }
    base.update(changes)
    return Patient(**base)


def document(unique_id: str = "1.2.250.1.999.2.3.1", **changes: Any) -> Document:
    base: dict[str, Any] = {
        "unique_id": unique_id,
        "set_id": unique_id + ".0",
        "patient": patient(),
        "type_code": Code(code="11502-2", system=LOINC, display="CR d'examens biologiques"),
        "class_code": Code(code="10", system=CLASS_CODE_SYSTEM, display="Compte rendu"),
        "format_code": Code(code="urn:ihe:lab:xd-lab:2008", system=FORMAT_IHE_SYSTEM),
        "mime_type": "text/xml",
        "title": "Compte rendu d'examens biologiques",
        "creation_time": datetime(2026, 11, 20, 8, 30, tzinfo=UTC),
        "service_start": datetime(2026, 11, 20, 7, 0, tzinfo=UTC),
        "author": Author(
            person_id=AUTHOR_ID,
            family="BIOLOGISTE",
            given="TEST",
            role=Code(code="SM03", system="1.2.250.1.213.1.1.4.5"),
            organisation_id=ORG_ID,
            organisation_name="LABO TEST",
        ),
        "facility_type": Code(code="SA25", system=FACILITY_TYPE_SYSTEM),
        "practice_setting": Code(code="AMBULATOIRE", system=PRACTICE_SETTING_SYSTEM),
        "confidentiality": (confidentiality_code("N"),),
        "reference_ids": (ReferenceId(value="ORD-1", type="urn:ihe:iti:xds:2013:order", assigner="1.2.250.1.999.3"),),
        "flags": Flags(),
        "content": b"<ClinicalDocument>synthetic</ClinicalDocument>",
    }
    base.update(changes)
    return Document(**base)


def replacement(old: Document, unique_id: str, content: bytes = b"<ClinicalDocument>v2</ClinicalDocument>") -> Document:
    return old.model_copy(
        update={
            "unique_id": unique_id,
            "version": old.version + 1,
            "action": Action.REPLACE,
            "replaces": old.unique_id,
            "content": content,
        }
    )


def deletion(old: Document) -> Document:
    return old.model_copy(update={"action": Action.DELETE, "replaces": old.unique_id})
