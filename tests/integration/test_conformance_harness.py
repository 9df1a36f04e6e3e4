"""The conformance harness is honest: the ANS examples pass it, broken documents do not."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from lxml import etree

from tests.support import conformance
from tests.support.xml_ns import CDA_NS

pytestmark = pytest.mark.corpus

ANS_CDA = Path("cda/fr-ci-sis-ans")
CRBIO_EXAMPLES = [
    "BIO-CR-BIO_2024.01_CR-2nde-intention-PDF.xml",
    "BIO-CR-BIO_2024.01_CRP_non_LOINC.xml",
    "BIO-CR-BIO_2024.01_DEP-CCU-tout-structure.xml",
    "BIO-CR-BIO_2024.01_Electrophorese.xml",
    "BIO-CR-BIO_2024.01_Glycemie_mole.xml",
    "BIO-CR-BIO_2024.01_Microbiologie_V1.xml",
    "BIO-CR-BIO_2024.01_TSH_1.xml",
]


def _read(corpus_dir: Path, name: str) -> bytes:
    return (corpus_dir / ANS_CDA / name).read_bytes()


def _edit(xml: bytes, xpath: str, action: str, value: str = "") -> bytes:
    root = etree.fromstring(xml)
    nodes = root.xpath(xpath, namespaces=CDA_NS)
    assert nodes, f"nothing at {xpath}"
    for node in nodes:
        if action == "remove":
            node.getparent().remove(node)
        else:
            node.set(action, value)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


@pytest.mark.parametrize("name", CRBIO_EXAMPLES)
def test_ans_crbio_examples_pass_xsd_and_every_schematron(corpus_dir: Path, name: str) -> None:
    xml = _read(corpus_dir, name)
    assert conformance.validate_xsd(xml) == []
    reports = conformance.run_schematrons(xml, conformance.CRBIO_2024)
    assert conformance.failed_assertions(reports) == []
    # A schematron whose rules never fire would pass anything: make sure each one looked at the document.
    assert all(r.fired_rules > 0 for r in reports), [(r.volet, r.fired_rules) for r in reports]


def test_ans_imaging_report_passes_its_volet(corpus_dir: Path) -> None:
    xml = _read(corpus_dir, "IMG_CR_IMG_2024.01.xml")
    assert conformance.validate_xsd(xml) == []
    reports = conformance.run_schematrons(xml, conformance.IMG_CR_IMG_2024)
    assert conformance.failed_assertions(reports) == []


def test_missing_title_fails_header_and_volet(corpus_dir: Path) -> None:
    xml = _edit(_read(corpus_dir, "BIO-CR-BIO_2024.01_TSH_1.xml"), "/cda:ClinicalDocument/cda:title", "remove")
    header = conformance.run_schematron(xml, "structurationMinimale")
    volet = conformance.run_schematron(xml, conformance.CRBIO_2024)
    assert not header.ok and not volet.ok
    assert any("title" in a.text for a in volet.failed)
    assert all(a.location for a in volet.failed)


def test_changed_document_code_fails_volet(corpus_dir: Path) -> None:
    xml = _edit(_read(corpus_dir, "BIO-CR-BIO_2024.01_TSH_1.xml"), "/cda:ClinicalDocument/cda:code", "code", "11488-4")
    report = conformance.run_schematron(xml, conformance.CRBIO_2024)
    assert any("11502-2" in a.text for a in report.failed), report.summary()


def test_missing_pdf_copy_section_fails_volet(corpus_dir: Path) -> None:
    xml = _edit(
        _read(corpus_dir, "BIO-CR-BIO_2024.01_TSH_1.xml"),
        "//cda:structuredBody/cda:component[cda:section/cda:templateId/@root='1.2.250.1.213.1.1.2.243']",
        "remove",
    )
    report = conformance.run_schematron(xml, conformance.CRBIO_2024)
    assert any("1.2.250.1.213.1.1.2.243" in a.text for a in report.failed), report.summary()


def test_missing_ins_trait_fails_structuration_minimale(corpus_dir: Path) -> None:
    xml = _edit(_read(corpus_dir, "BIO-CR-BIO_2024.01_TSH_1.xml"), "//cda:patient/cda:birthTime", "remove")
    assert not conformance.run_schematron(xml, "structurationMinimale").ok


def test_xsd_reports_unknown_element(corpus_dir: Path) -> None:
    root = etree.fromstring(_read(corpus_dir, "BIO-CR-BIO_2024.01_TSH_1.xml"))
    title = root.find("cda:title", CDA_NS)
    assert title is not None
    title.addnext(etree.Element("{urn:hl7-org:v3}notACdaElement"))
    errors = conformance.validate_xsd(etree.tostring(root))
    assert errors and "notACdaElement" in errors[0]
    assert conformance.validate_xsd(b"<not-closed>") != []


def test_unknown_volet_is_an_error_not_a_pass(corpus_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        conformance.run_schematron(b"<x/>", "CI-SIS_NO-SUCH-VOLET_2099.01")


def test_kit_fixes_are_applied_to_the_cache_copy_only(corpus_dir: Path) -> None:
    fixes = conformance.kit_fixes()
    assert any("E_directiveAnticipee_int.sch" in f for f in fixes)
    assert any("voc-1.2.250.1.213.1.1.5.471" in f for f in fixes)
    kit = corpus_dir / "schematrons/ans-ci-sis/schematrons/include/entrees"
    assert not (kit / "E_directiveAnticipee_int.sch").exists() or (kit / "E_directiveanticipee_int.sch").samefile(
        kit / "E_directiveAnticipee_int.sch"
    )


def test_fhir_bundle_validation(corpus_dir: Path) -> None:
    bundle = json.loads((corpus_dir / "fhir-mhd/fr-ans-pdsm/Bundle-Bundle-CRBio-Replace-ANS.json").read_text())
    assert conformance.validate_fhir_bundle(bundle) == []
    broken = copy.deepcopy(bundle)
    broken["timestamp"] = "yesterday"
    doc_ref = next(e for e in broken["entry"] if e["resource"]["resourceType"] == "DocumentReference")
    doc_ref["resource"]["notAnElement"] = 42
    errors = conformance.validate_fhir_bundle(broken)
    assert any(e.startswith("Bundle.timestamp") for e in errors), errors
    assert any("notAnElement" in e and e.startswith("Bundle.entry") for e in errors), errors


def test_dciodvfy(corpus_dir: Path) -> None:
    assert conformance.dciodvfy_errors(corpus_dir / "dicom/kos/fr-drimbox/ko.dcm") == []
    assert conformance.dciodvfy_errors(corpus_dir / "dicom/headers/pydicom/no_meta.dcm") != []
