"""CR-BIO generation without the corpus: model rules, ids, CDA shape, PDF, Document metadata, code tables."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from lxml import etree
from pydantic import ValidationError
from pypdf import PdfReader

from passerelle.errors import MappingError
from passerelle.mappings.codes import (
    lab_chapter,
    loinc_table_file_name,
    parse_loinc_csv,
    specimen_type_display,
    ucum_unit,
    unit_display,
)
from passerelle.mappings.document import MAX_OID_LENGTH, Action, Code, Provenance, is_oid
from passerelle.mappings.lab import (
    CLASS_CODE,
    FORMAT_CODE,
    TYPE_CODE,
    LabResult,
    OruContext,
    ValueKind,
    build_crbio_cda,
    from_oru,
    generate,
    render_pdf,
    set_id_for,
    to_document,
    unique_id_for,
)
from passerelle.mappings.samples.lab import (
    PRESCRIBED,
    SAMPLE_LAB,
    SAMPLE_OID_ROOT,
    SAMPLE_SENDER,
    sample_lab_report,
    sample_loinc_table,
    sample_oru,
)
from tests.support.xml_ns import CDA_NS

PROV = Provenance(channel="mllp", sender=SAMPLE_SENDER, message_id="MSG0001", journal_id=7)


# --- ids ----------------------------------------------------------------------------------------------


def test_ids_are_valid_oids_and_stable() -> None:
    root = "1.2.250.1.213.1.1.9.99999999.12345"
    uid = unique_id_for(root, "S", "ORDER-1", 1)
    assert is_oid(uid) and len(uid) <= MAX_OID_LENGTH
    assert uid == unique_id_for(root, "S", "ORDER-1", 1)
    assert len({uid, unique_id_for(root, "S", "ORDER-1", 2), unique_id_for(root, "T", "ORDER-1", 1)}) == 3
    assert is_oid(set_id_for(root, "S", "ORDER-1")) and set_id_for(root, "S", "ORDER-1") != uid
    with pytest.raises(ValueError, match="64"):
        unique_id_for("1." + "2" * 60, "S", "O", 1)
    assert not is_oid("1.02.3") and not is_oid("1.2.") and is_oid("1.0.3")


# --- model rules --------------------------------------------------------------------------------------


def test_model_rules() -> None:
    report = sample_lab_report()
    with pytest.raises(ValidationError, match="timezone-aware"):
        type(report).model_validate({**report.model_dump(), "created": datetime(2024, 1, 4, 12, 0)})
    with pytest.raises(ValidationError, match="replacement"):
        type(report).model_validate({**report.model_dump(), "action": Action.REPLACE})
    with pytest.raises(ValidationError, match="unknown specimen"):
        battery = report.batteries[0].model_copy(update={"specimen_id": "NOPE"})
        type(report).model_validate({**report.model_dump(), "batteries": [battery.model_dump()]})
    with pytest.raises(ValidationError, match="UCUM unit"):
        LabResult(code=TYPE_CODE, kind=ValueKind.QUANTITY, number=Decimal(1))
    with pytest.raises(ValidationError, match="comparator"):
        LabResult(code=TYPE_CODE, kind=ValueKind.INTERVAL, number=Decimal(1), unit="g/L", comparator="~")
    with pytest.raises(ValidationError, match="sex"):
        report.patient.model_validate({**report.patient.model_dump(), "sex": "X"})
    with pytest.raises(ValidationError, match="INS assigning authority"):
        report.patient.model_validate({**report.patient.model_dump(), "ins_oid": "1.2.250.1.213.1.4.2"})
    with pytest.raises(ValidationError, match="NIR key"):
        report.patient.model_validate({**report.patient.model_dump(), "ins": report.patient.ins[:13] + "00"})


# --- CDA ----------------------------------------------------------------------------------------------


def test_cda_header_follows_crbio_2024() -> None:
    report = sample_lab_report()
    doc = etree.fromstring(generate(report).cda)
    roots = doc.xpath("cda:templateId/@root", namespaces=CDA_NS)
    assert roots == [
        "2.16.840.1.113883.2.8.2.1",
        "1.2.250.1.213.1.1.1.1",
        "1.3.6.1.4.1.19376.1.3.3",
        "1.2.250.1.213.1.1.1.55",
    ]
    assert doc.find("cda:code", CDA_NS).get("code") == "11502-2"  # type: ignore[union-attr]
    assert doc.findtext("cda:title", namespaces=CDA_NS) == "Compte rendu d'examens biologiques"
    assert doc.find("cda:id", CDA_NS).get("root") == report.unique_id  # type: ignore[union-attr]
    assert doc.find("cda:id", CDA_NS).get("extension") is None  # type: ignore[union-attr]  # root-only for the DMP
    assert doc.find("cda:setId", CDA_NS).get("root") == report.set_id  # type: ignore[union-attr]
    ins = doc.find("cda:recordTarget/cda:patientRole/cda:id", CDA_NS)
    assert (ins.get("root"), ins.get("extension")) == (report.patient.ins_oid, report.patient.ins)  # type: ignore[union-attr]
    assert doc.xpath("string(//cda:patient/cda:birthplace//cda:county)", namespaces=CDA_NS) == "75113"
    assert doc.xpath("//cda:serviceEvent/lab:statusCode/@code", namespaces=CDA_NS) == ["completed"]
    assert doc.xpath("//cda:healthCareFacility/cda:code/@code", namespaces=CDA_NS) == ["SA25"]
    assert doc.xpath("//cda:inFulfillmentOf/cda:order/cda:id/@extension", namespaces=CDA_NS) == ["CMD-2024-0001"]
    assert doc.xpath("cda:participant[@typeCode='REF']/cda:time/cda:high/@value", namespaces=CDA_NS) == [
        "20240103170000+0100"
    ]
    chapters = doc.xpath(
        "//cda:section[cda:templateId/@root='1.3.6.1.4.1.19376.1.3.3.2.1']/cda:code/@code", namespaces=CDA_NS
    )
    assert chapters == ["18719-5", "18723-7"]
    assert len(doc.xpath("//cda:section[cda:templateId/@root='1.2.250.1.213.1.1.2.243']", namespaces=CDA_NS)) == 1


def test_value_kinds_in_cda() -> None:
    report = sample_lab_report()
    loinc = "2.16.840.1.113883.6.1"
    extra = (
        LabResult(code=Code(code="30522-7", system=loinc, display="CRP us"), kind=ValueKind.INTERVAL,
                  number=Decimal("0.5"), unit="mg/L", comparator="<"),
        LabResult(code=Code(code="8251-1", system=loinc, display="Commentaire"), kind=ValueKind.TEXT, text="RAS"),
    )  # fmt: skip
    battery = report.batteries[0].model_copy(update={"results": report.batteries[0].results + extra})
    report = report.model_copy(update={"batteries": (battery, report.batteries[1])})
    doc = etree.fromstring(build_crbio_cda(report, b"%PDF-1.4"))
    xsi = "{http://www.w3.org/2001/XMLSchema-instance}type"
    crp = doc.xpath("//cda:observation[cda:code/@code='30522-7']/cda:value", namespaces=CDA_NS)[0]
    assert crp.get(xsi) == "IVL_PQ"
    high = crp.find("cda:high", CDA_NS)
    assert (high.get("value"), high.get("unit"), high.get("inclusive")) == ("0.5", "mg/L", "false")  # type: ignore[union-attr]
    text = doc.xpath("//cda:observation[cda:code/@code='8251-1']/cda:value", namespaces=CDA_NS)[0]
    assert (text.get(xsi), text.text) == ("ST", "RAS")


def test_deletion_generates_nothing_but_maps_to_a_delete_document() -> None:
    v1 = sample_lab_report()
    deletion = v1.model_copy(update={"action": Action.DELETE, "replaces": v1.unique_id})
    generated = generate(deletion)
    assert generated.cda == b"" and generated.pdf == b""
    with pytest.raises(ValueError, match="deletion"):
        build_crbio_cda(deletion, b"")
    document = to_document(deletion, b"", PROV)
    assert (document.action, document.replaces, document.content) == (Action.DELETE, v1.unique_id, b"")


# --- PDF ----------------------------------------------------------------------------------------------


def test_pdf_is_deterministic_and_readable() -> None:
    report = sample_lab_report(corrected=True)
    pdf = render_pdf(report)
    assert pdf == render_pdf(report) and pdf.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(pdf))
    assert reader.metadata is not None and reader.metadata.title == "Compte rendu d'examens biologiques"
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "Potassium [Moles/Volume] Sérum/Plasma (corrigé)" in text
    assert "Plaquettes [Nombre/Volume] Sang" in text and "142 G/L" in text and "Bas" in text


# --- Document -----------------------------------------------------------------------------------------


def test_document_metadata() -> None:
    report = sample_lab_report(corrected=True)
    generated = generate(report)
    document = to_document(report, generated.cda, PROV)
    assert (document.type_code, document.class_code, document.format_code) == (TYPE_CODE, CLASS_CODE, FORMAT_CODE)
    assert document.format_code.code == "urn:ihe:lab:xd-lab:2008" and document.class_code.code == "10"
    assert document.mime_type == "text/xml" and document.content == generated.cda
    assert (document.unique_id, document.set_id, document.version) == (report.unique_id, report.set_id, 2)
    assert (document.action, document.replaces) == (Action.REPLACE, report.replaces)
    assert document.facility_type is not None and document.facility_type.code == "SA25"
    assert document.practice_setting is not None and document.practice_setting.code == "AMBULATOIRE"
    assert [c.code for c in document.confidentiality] == ["N"]
    assert document.author.person_id == report.validator.id
    assert document.author.organisation_id == "1" + SAMPLE_LAB.finess
    assert [(r.value, r.type) for r in document.reference_ids] == [("CMD-2024-0001", "urn:ihe:iti:xds:2013:order")]
    assert document.patient.ins == report.patient.ins and document.patient.family == "ESSAI"
    assert document.provenance == PROV
    assert document.service_start is not None and document.service_start < document.creation_time
    with pytest.raises(ValueError, match="CDA bytes"):
        to_document(report, b"", PROV)


def test_from_oru_reads_prescription_time_and_tolerates_nameless_prescriber() -> None:
    context = OruContext(
        oid_root=SAMPLE_OID_ROOT, now=datetime(2024, 1, 5, tzinfo=UTC), laboratory=SAMPLE_LAB,
        loinc=sample_loinc_table(), sender=SAMPLE_SENDER, test_environment=True,
    )  # fmt: skip
    report = from_oru(sample_oru(), context)
    assert report.prescribed == PRESCRIBED
    assert report.prescriber is not None and report.prescriber.id == "899900000025"
    nameless = sample_oru().replace("899900000025^PRESCRIPTEUR^Paul^^DR", "12345678901")
    assert from_oru(nameless, context).prescriber is None
    rpps = sample_oru().replace("899900000025^PRESCRIPTEUR^Paul^^DR", "12345678901^DOC^Ann" + "^" * 10 + "RPPS")
    prescriber = from_oru(rpps, context).prescriber
    assert prescriber is not None and prescriber.id == "812345678901"


# --- code tables --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "ucum"),
    [("g/l", "g/L"), ("G/L", "10*9/L"), ("g/L", "g/L"), ("mUI/l", "m[IU]/L"), ("µmol/l", "umol/L"), ("zz", None)],
)
def test_ucum_aliases(local: str, ucum: str | None) -> None:
    assert ucum_unit(local) == ucum


def test_chapters_and_specimen_types() -> None:
    assert lab_chapter(diagnostic_service="hm") is not None and lab_chapter(diagnostic_service="HM").code == "18723-7"  # type: ignore[union-attr]
    assert lab_chapter(loinc="18719-5").display == "Biochimie"  # type: ignore[union-attr]
    assert lab_chapter(diagnostic_service="XX") is None
    assert specimen_type_display("SER") == "Sérum" and specimen_type_display("??") is None


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("local_code,loinc\nA,1-1\n", "missing column"),
        ("local_code,loinc,display\nA,ABC,x\n", "line 2: 'ABC' is not a LOINC code"),
        ("local_code,loinc,display\nA,2345-7,\n", "line 2: display is empty"),
        ("local_code,loinc,display\nA,2345-7,G\nA,2345-7,G\n", "line 3: local code 'A' listed twice"),
        ("local_code,loinc,display,unit,chapter\nA,2345-7,G,,bio\n", "chapter 'bio'"),
    ],
)
def test_loinc_table_errors(csv_text: str, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        parse_loinc_csv(csv_text, "LAB")


def test_loinc_table_reads_optional_columns_and_skips_comments() -> None:
    table = parse_loinc_csv("local_code,loinc,display,unit,chapter\n#X,1-1,x,,\nGLU,2345-7,Glucose,g/L,18719-5\n", "L")
    entry = table.get("GLU")
    assert entry is not None and (entry.unit, entry.chapter) == ("g/L", "18719-5")
    assert table.get("#X") is None and len(table.entries) == 1


def test_shipped_example_table_matches_the_demo_panel(repo_root) -> None:  # type: ignore[no-untyped-def]
    assert loinc_table_file_name(SAMPLE_SENDER) == "SIL-DEMO_LABO-DEMO.csv"
    assert loinc_table_file_name("A B/../c") == "A_B_.._c.csv"
    text = (repo_root / "config/loinc/example-SIL-DEMO_LABO-DEMO.csv").read_text(encoding="utf-8")
    assert parse_loinc_csv(text, SAMPLE_SENDER) == sample_loinc_table()


@pytest.mark.parametrize(("ucum", "shown"), [("10*9/L", "G/L"), ("umol/L", "µmol/L"), ("g/L", "g/L"), ("1", "")])
def test_units_are_printed_the_french_way(ucum: str, shown: str) -> None:
    assert unit_display(ucum) == shown
