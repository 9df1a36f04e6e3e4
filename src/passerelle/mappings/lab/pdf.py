"""The readable PDF rendering of a lab report (carried in the CR-BIO's FR-Document-PDF-copie section).

Deterministic: reportlab's ``invariant`` mode fixes the creation date and document id, so the same
report always gives the same bytes (and the same CDA hash).
"""

from __future__ import annotations

import io
from datetime import datetime
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from passerelle.mappings.codes import interpretation_display, unit_display
from passerelle.mappings.document import Action
from passerelle.mappings.lab.model import LabReport, LabResult, ReferenceRange, ResultStatus, ValueKind

TITLE = "Compte rendu d'examens biologiques"


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%d/%m/%Y %H:%M") if value else ""


def _fmt_date(yyyymmdd: str) -> str:
    return f"{yyyymmdd[6:8]}/{yyyymmdd[4:6]}/{yyyymmdd[0:4]}"


def format_value(result: LabResult) -> str:
    if result.status is ResultStatus.CANCELLED:
        return "non réalisé"
    if result.kind is ValueKind.QUANTITY:
        return f"{result.number} {unit_display(result.unit)}".strip()
    if result.kind is ValueKind.INTERVAL:
        return f"{result.comparator} {result.number} {unit_display(result.unit)}".strip()
    if result.kind is ValueKind.CODED and result.coded is not None:
        return result.coded.display or result.coded.code
    return result.text


def format_range(rng: ReferenceRange | None) -> str:
    if rng is None:
        return ""
    if rng.text:
        return rng.text
    unit = f" {unit_display(rng.unit)}".rstrip() if rng.unit else ""
    if rng.low is not None and rng.high is not None:
        return f"{rng.low} - {rng.high}{unit}"
    if rng.low is not None:
        return f">= {rng.low}{unit}"
    if rng.high is not None:
        return f"<= {rng.high}{unit}"
    return ""


def format_interpretation(result: LabResult) -> str:
    return ", ".join(interpretation_display(c) or c for c in result.interpretation)


def render_pdf(report: LabReport) -> bytes:
    """A4 PDF listing the header facts and every result of ``report`` (pure: no clock, no file)."""
    styles = getSampleStyleSheet()
    small = ParagraphStyle("small", parent=styles["Normal"], fontSize=8, leading=10)
    cell = ParagraphStyle("cell", parent=styles["Normal"], fontSize=8, leading=9.5)
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        invariant=1,
        title=TITLE,
        author=report.laboratory.name,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
    )

    def p(text: str, style: ParagraphStyle = styles["Normal"]) -> Paragraph:
        return Paragraph(escape(text), style)

    patient = report.patient
    lab = report.laboratory
    story: list[object] = [p(TITLE, styles["Title"])]
    lab_lines = [lab.name, lab.address.line, f"{lab.address.postal_code} {lab.address.city}".strip()]
    story.append(p(" - ".join(x for x in lab_lines if x) + f" (FINESS {lab.finess})", small))
    if report.version > 1:
        story.append(p(f"Version {report.version} : remplace et annule la version précédente du compte rendu.", small))
    story.append(Spacer(1, 4 * mm))
    used = f" (nom utilisé : {patient.used_family} {patient.used_given})" if patient.used_family else ""
    facts = [
        ("Patient", f"{patient.birth_family} {patient.birth_given_names}{used}"),
        ("Né(e) le", f"{_fmt_date(patient.birth_date)} - sexe {patient.sex}"),
        ("INS", patient.ins),
        ("Demande", report.order_number or report.filler_number),
        ("Prescripteur", f"{report.prescriber.given} {report.prescriber.family}" if report.prescriber else ""),
        ("Reçu le", _fmt_time(report.received)),
        ("Validé le", f"{_fmt_time(report.validated)} par {report.validator.given} {report.validator.family}"),
    ]
    for specimen in report.specimens:
        facts.append(
            ("Prélèvement", f"{specimen.type.display or specimen.type.code} le {_fmt_time(specimen.collected)}")
        )
    table = Table([[p(k, cell), p(v, cell)] for k, v in facts if v], colWidths=[30 * mm, 150 * mm])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story += [table, Spacer(1, 5 * mm)]

    for chapter in report.chapters:
        story.append(p(chapter.display or chapter.code, styles["Heading2"]))
        for battery in (b for b in report.batteries if b.chapter.code == chapter.code):
            if battery.label or battery.code.code != chapter.code:
                story.append(p(battery.label or battery.code.display, styles["Heading4"]))
            rows = [[p(h, cell) for h in ("Analyse", "Résultat", "Valeurs de référence", "Interprétation")]]
            for result in battery.results:
                label = result.display_label + (" (corrigé)" if result.status is ResultStatus.CORRECTED else "")
                rows.append(
                    [
                        Paragraph(f"{escape(label)}<br/>LOINC {escape(result.code.code)}", cell),
                        p(format_value(result), cell),
                        p(format_range(result.reference_range), cell),
                        Paragraph(
                            f"<b>{escape(format_interpretation(result))}</b>"
                            if set(result.interpretation) - {"N"}
                            else escape(format_interpretation(result)),
                            cell,
                        ),
                    ]
                )
                if result.comment:
                    rows.append([p(result.comment, small), "", "", ""])
            grid = Table(rows, colWidths=[75 * mm, 40 * mm, 35 * mm, 30 * mm], repeatRows=1)
            grid.setStyle(
                TableStyle(
                    [
                        ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
                        ("VALIGN", (0, 0), (-1, -1), "TOP"),
                        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#F2F2F2")]),
                    ]
                )
            )
            story += [grid, Spacer(1, 3 * mm)]
    if report.action is Action.DELETE:  # pragma: no cover - a deletion carries no document
        story.append(p("Document supprimé.", styles["Normal"]))
    story.append(Spacer(1, 5 * mm))
    story.append(p(f"Document {report.unique_id} - version {report.version}", small))
    doc.build(story)
    return buffer.getvalue()
