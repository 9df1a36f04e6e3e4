"""One-call entry points for the dispatch worker and the ``map`` CLI (pure: the caller passes the context)."""

from __future__ import annotations

from dataclasses import dataclass

from passerelle.mappings.document import Action, Document, Provenance
from passerelle.mappings.hl7v2.decode import Message
from passerelle.mappings.lab.cda import build_crbio_cda
from passerelle.mappings.lab.document import to_document
from passerelle.mappings.lab.groups import order_numbers
from passerelle.mappings.lab.model import LabReport
from passerelle.mappings.lab.oru import OruContext, from_oru, lab_segments, series_sender
from passerelle.mappings.lab.pdf import render_pdf


@dataclass(frozen=True)
class Generated:
    cda: bytes
    pdf: bytes


def generate(report: LabReport) -> Generated:
    """The PDF rendering of ``report`` and the CR-BIO CDA embedding it (both empty for a deletion)."""
    if report.action is Action.DELETE:
        return Generated(cda=b"", pdf=b"")
    pdf = render_pdf(report)
    return Generated(cda=build_crbio_cda(report, pdf), pdf=pdf)


def series_key(message: str | Message, sender: str = "") -> str:
    """The key under which the versions of this message's lab order are tracked (journal ``series``).

    ``lab:<sender>:<order>`` with sender = ``sender`` or MSH-3^MSH-4 and order = ORC-2/OBR-2 placer
    number, else ORC-3/OBR-3 filler number — the same inputs as the deterministic document ids.
    Look it up before :func:`map_lab_results` to pass the previous version; store the result after.
    """
    segs = lab_segments(message)
    return f"lab:{series_sender(segs[0], sender)}:{order_numbers(segs)[2]}"


def map_lab_results(message: str | Message, context: OruContext, provenance: Provenance) -> Document:
    """LAB-3 ORU^R01 (decoded message or text) → the CR-BIO Document (publish, replace or delete)."""
    report = from_oru(message, context)
    return to_document(report, generate(report).cda, provenance)
