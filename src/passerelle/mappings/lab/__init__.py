"""CR-BIO 2024.01 generation: lab results (typed, or read from a LAB-3 ORU^R01) → CDA R2 + PDF → Document.

Typical flow (pure functions; the caller supplies configuration, the clock and the previous version)::

    report = from_oru(text, OruContext(oid_root=..., now=..., laboratory=..., loinc=table, previous=prev))
    generated = generate(report)               # CDA bytes + PDF bytes (deterministic)
    document = to_document(report, generated.cda, provenance)

or in one call, with the previous version looked up under ``series_key(text)``::

    document = map_lab_results(text, context, provenance)
"""

from __future__ import annotations

from passerelle.mappings.lab.cda import build_crbio_cda
from passerelle.mappings.lab.document import CLASS_CODE, FORMAT_CODE, TYPE_CODE, to_document
from passerelle.mappings.lab.ids import set_id_for, unique_id_for
from passerelle.mappings.lab.model import (
    Address,
    Battery,
    Laboratory,
    LabPatient,
    LabReport,
    LabResult,
    Person,
    ReferenceRange,
    ResultStatus,
    Specimen,
    ValueKind,
)
from passerelle.mappings.lab.oru import OruContext, PreviousVersion, from_oru
from passerelle.mappings.lab.pdf import render_pdf
from passerelle.mappings.lab.pipeline import Generated, generate, map_lab_results, series_key

__all__ = [
    "CLASS_CODE",
    "FORMAT_CODE",
    "TYPE_CODE",
    "Address",
    "Battery",
    "Generated",
    "LabPatient",
    "LabReport",
    "LabResult",
    "Laboratory",
    "OruContext",
    "Person",
    "PreviousVersion",
    "ReferenceRange",
    "ResultStatus",
    "Specimen",
    "ValueKind",
    "build_crbio_cda",
    "from_oru",
    "generate",
    "map_lab_results",
    "render_pdf",
    "series_key",
    "set_id_for",
    "to_document",
    "unique_id_for",
]
