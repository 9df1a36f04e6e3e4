"""LabReport (+ its generated CDA) → the :class:`Document` delivered to the patient space."""

from __future__ import annotations

from passerelle.mappings.document import (
    CLASS_CODE_SYSTEM,
    FORMAT_IHE_SYSTEM,
    REF_ORDER,
    Action,
    Author,
    Code,
    Document,
    DocumentKind,
    Provenance,
    ReferenceId,
    confidentiality_code,
)
from passerelle.mappings.lab.cda import TITLE, TYPE_CODE
from passerelle.mappings.lab.model import LabReport

CLASS_CODE = Code(code="10", system=CLASS_CODE_SYSTEM, display="Compte rendu")
FORMAT_CODE = Code(code="urn:ihe:lab:xd-lab:2008", system=FORMAT_IHE_SYSTEM, display="CR de biologie")
CR_BIO = DocumentKind(TYPE_CODE, CLASS_CODE, FORMAT_CODE)


def to_document(report: LabReport, cda_bytes: bytes, provenance: Provenance) -> Document:
    """The Document for ``report``; ``cda_bytes`` is what :func:`build_crbio_cda` produced (empty for a deletion)."""
    if report.action is not Action.DELETE and not cda_bytes:
        raise ValueError("a published or replacing CR-BIO needs its CDA bytes")
    lab = report.laboratory
    validator = report.validator
    author = Author(
        person_id=validator.id,
        family=validator.family,
        given=validator.given,
        role=validator.profession,
        organisation_id=lab.structure_id,
        organisation_name=lab.name,
    )
    references: tuple[ReferenceId, ...] = ()
    if report.order_number:
        references = (ReferenceId(value=report.order_number, type=REF_ORDER, assigner=report.order_oid),)
    collected = [s.collected for s in report.specimens]
    return Document(
        **report.lineage.fields(),
        **CR_BIO.fields(),
        patient=report.patient.to_patient(),
        title=TITLE,
        creation_time=report.created,
        service_start=min(collected) if collected else report.received,
        service_stop=report.validated,
        author=author,
        legal_authenticator=author,
        submission_author=author,
        facility_type=lab.facility_type,
        practice_setting=lab.practice_setting,
        confidentiality=(confidentiality_code(report.confidentiality),),
        language=report.language,
        reference_ids=references,
        provenance=provenance,
        content=cda_bytes,
    )


__all__ = ["CLASS_CODE", "FORMAT_CODE", "TYPE_CODE", "to_document"]
