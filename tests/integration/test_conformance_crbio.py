"""Generated CR-BIO documents pass the ANS extended XSD and the CI-SIS schematrons with zero failed assertions."""

from __future__ import annotations

import base64
import dataclasses
import io
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree
from pypdf import PdfReader

from passerelle.mappings.document import Code
from passerelle.mappings.lab import (
    Battery,
    LabResult,
    OruContext,
    PreviousVersion,
    ReferenceRange,
    ResultStatus,
    ValueKind,
    from_oru,
    generate,
)
from passerelle.mappings.samples.lab import (
    SAMPLE_BIOLOGIST,
    SAMPLE_LAB,
    SAMPLE_OID_ROOT,
    SAMPLE_SENDER,
    sample_lab_report,
    sample_loinc_table,
    sample_oru,
)
from tests.support import conformance
from tests.support.xml_ns import CDA_NS

pytestmark = pytest.mark.corpus

LOINC = "2.16.840.1.113883.6.1"


def assert_conformant(cda: bytes) -> None:
    conformance.assert_cda_conformant(cda, conformance.CRBIO_2024, extra=("CI-SIS_Modeles_ANS",))


@pytest.fixture(scope="module")
def versions(corpus_dir: Path) -> tuple[bytes, bytes, bytes, bytes]:
    first, second = generate(sample_lab_report()), generate(sample_lab_report(corrected=True))
    return first.cda, first.pdf, second.cda, second.pdf


def test_panel_version_1_is_conformant(versions: tuple[bytes, bytes, bytes, bytes]) -> None:
    assert_conformant(versions[0])


def test_panel_version_2_replacing_version_1_is_conformant(versions: tuple[bytes, bytes, bytes, bytes]) -> None:
    v1, _, v2, _ = versions
    assert_conformant(v2)
    one, two = etree.fromstring(v1), etree.fromstring(v2)
    assert two.find("cda:setId", CDA_NS).get("root") == one.find("cda:setId", CDA_NS).get("root")  # type: ignore[union-attr]
    assert two.find("cda:versionNumber", CDA_NS).get("value") == "2"  # type: ignore[union-attr]
    parent = two.find("cda:relatedDocument[@typeCode='RPLC']/cda:parentDocument/cda:id", CDA_NS)
    assert parent is not None and parent.get("root") == one.find("cda:id", CDA_NS).get("root")  # type: ignore[union-attr]
    assert one.find("cda:relatedDocument", CDA_NS) is None


def test_panel_content_is_in_the_entries(versions: tuple[bytes, bytes, bytes, bytes]) -> None:
    doc = etree.fromstring(versions[2])
    observations = doc.xpath("//cda:observation[cda:templateId/@root='1.3.6.1.4.1.19376.1.3.1.6']", namespaces=CDA_NS)
    assert len(observations) == 20
    potassium = doc.xpath("//cda:observation[cda:code/@code='2823-3']", namespaces=CDA_NS)[0]
    assert potassium.find("cda:value", CDA_NS).get("value") == "4.4"
    assert potassium.find("cda:value", CDA_NS).get("unit") == "mmol/L"
    assert potassium.find("cda:interpretationCode", CDA_NS).get("code") == "N"
    platelets = doc.xpath("//cda:observation[cda:code/@code='777-3']", namespaces=CDA_NS)[0]
    assert platelets.find("cda:value", CDA_NS).get("unit") == "10*9/L"
    assert platelets.find("cda:interpretationCode", CDA_NS).get("code") == "L"
    low = platelets.find("cda:referenceRange/cda:observationRange/cda:value/cda:low", CDA_NS)
    assert (low.get("value"), low.get("unit")) == ("150", "10*9/L")
    # Every narrative reference resolves inside the document.
    ids = set(doc.xpath("//@ID"))
    refs = {r[1:] for r in doc.xpath("//cda:reference/@value", namespaces=CDA_NS)}
    assert refs and refs <= ids


def test_pdf_copy_opens_and_holds_the_results(versions: tuple[bytes, bytes, bytes, bytes]) -> None:
    _, pdf1, cda2, pdf2 = versions
    for pdf in (pdf1, pdf2):
        reader = PdfReader(io.BytesIO(pdf))
        text = "\n".join(page.extract_text() for page in reader.pages)
        for expected in (
            "Compte rendu d'examens biologiques",
            "ESSAI JEAN PIERRE",
            "Potassium",
            "Hémoglobine",
            "LOINC 777-3",
            "150 - 400 G/L",
            "Laboratoire de démonstration",
            "CMD-2024-0001",
        ):
            assert expected in text, expected  # fmt: skip
        assert text.count("LOINC ") == 20
    text2 = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf2)).pages)
    assert "(corrigé)" in text2 and "Version 2" in text2 and "4.4 mmol/L" in text2
    # The PDF carried in the CDA is exactly the rendering.
    media = etree.fromstring(cda2).find(".//cda:observationMedia/cda:value", CDA_NS)
    assert media is not None and media.get("mediaType") == "application/pdf"
    assert base64.b64decode(media.text or "") == pdf2


def test_generation_is_deterministic(versions: tuple[bytes, bytes, bytes, bytes]) -> None:
    again = generate(sample_lab_report())
    assert (again.cda, again.pdf) == versions[:2]


def test_from_oru_pipeline_is_conformant_for_both_versions(corpus_dir: Path) -> None:
    now = datetime(2024, 1, 5, 8, 0, tzinfo=UTC)
    context = OruContext(
        oid_root=SAMPLE_OID_ROOT, now=now, laboratory=SAMPLE_LAB, loinc=sample_loinc_table(),
        sender=SAMPLE_SENDER, test_environment=True,
    )  # fmt: skip
    v1 = from_oru(sample_oru(), context)
    assert_conformant(generate(v1).cda)
    previous = PreviousVersion(set_id=v1.set_id, version=v1.version, unique_id=v1.unique_id)
    v2 = from_oru(sample_oru(corrected=True, control_id="MSG0002"), dataclasses.replace(context, previous=previous))
    assert (v2.version, v2.replaces, v2.set_id) == (2, v1.unique_id, v1.set_id)
    assert_conformant(generate(v2).cda)


def test_every_value_kind_is_conformant(corpus_dir: Path) -> None:
    """Coded, text, interval, cancelled and text-range results, a comment, and no prescriber."""
    paris = timezone(timedelta(hours=1))
    when = datetime(2024, 1, 4, 10, 0, tzinfo=paris)
    base = sample_lab_report()
    results = (
        LabResult(code=Code(code="11475-1", system=LOINC, display="Micro-organisme identifié"),
                  kind=ValueKind.CODED, coded=Code(code="3092008", system="2.16.840.1.113883.6.96",
                  display="Staphylococcus aureus"), interpretation=("A",), observed=when),
        LabResult(code=Code(code="8251-1", system=LOINC, display="Commentaire"), kind=ValueKind.TEXT,
                  text="Prélèvement conforme", observed=when, comment="Transmis au prescripteur"),
        LabResult(code=Code(code="1988-5", system=LOINC, display="CRP"), kind=ValueKind.INTERVAL,
                  number=Decimal("0.5"), unit="mg/L", comparator="<", observed=when,
                  reference_range=ReferenceRange(high=Decimal("5"), unit="mg/L"), interpretation=("N",)),
        LabResult(code=Code(code="2345-7", system=LOINC, display="Glucose"), kind=ValueKind.QUANTITY,
                  status=ResultStatus.CANCELLED, observed=when),
        LabResult(code=Code(code="5195-3", system=LOINC, display="Antigène HBs"), kind=ValueKind.CODED,
                  coded=Code(code="260385009", system="2.16.840.1.113883.6.96", display="Négatif"),
                  reference_range=ReferenceRange(text="Négatif"), interpretation=("NEG",), observed=when),
    )  # fmt: skip
    battery = Battery(
        code=Code(code="18725-2", system=LOINC, display="Microbiologie"),
        chapter=Code(code="18725-2", system=LOINC, display="Microbiologie"),
        results=results,
    )
    report = base.model_copy(update={"batteries": (*base.batteries, battery), "prescriber": None})
    report = type(report).model_validate(report.model_dump())  # re-run the validators
    assert report.validator == SAMPLE_BIOLOGIST
    assert_conformant(generate(report).cda)


def test_removing_the_pdf_section_of_a_generated_document_is_caught(
    versions: tuple[bytes, bytes, bytes, bytes],
) -> None:
    root = etree.fromstring(versions[0])
    for section in root.xpath("//cda:section[cda:templateId/@root='1.2.250.1.213.1.1.2.243']", namespaces=CDA_NS):
        component = section.getparent()
        component.getparent().remove(component)
    report = conformance.run_schematron(etree.tostring(root), conformance.CRBIO_2024)
    assert not report.ok


def test_local_battery_code_falls_back_to_a_conformant_chapter_code(corpus_dir: Path) -> None:
    context = OruContext(
        oid_root=SAMPLE_OID_ROOT, now=datetime(2024, 1, 5, tzinfo=UTC), laboratory=SAMPLE_LAB,
        loinc=sample_loinc_table(), sender=SAMPLE_SENDER, test_environment=True,
    )  # fmt: skip
    text = sample_oru().replace("24323-8^Bilan biochimique^LN", "IONO^Bilan biochimique^L")
    report = from_oru(text, context)
    assert report.batteries[0].code.code == "18719-5"
    assert_conformant(generate(report).cda)
