"""The synthetic sample generator: deterministic, volet-conformant, CDA valid against the ANS XSD."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from passerelle.mappings.document import Action, Flags
from passerelle.mappings.hl7v2 import MessageKind, classify, decode_message, read_header
from passerelle.mappings.identity.ins import is_valid_nir
from passerelle.mappings.samples.messages import (
    SampleOptions,
    Sender,
    build_mdm,
    build_oru,
    build_sample_cda,
    generate_samples,
    root_only_oid,
    synthetic_patient,
    write_samples,
)

NOW = datetime(2026, 11, 22, 3, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def cda_schema(corpus_dir: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(corpus_dir / "schemas/cda-r2-ans-extended/cda/CDA_extended.xsd")))


def test_deterministic_for_a_seed() -> None:
    assert [s.raw for s in generate_samples(3, 5, NOW)] == [s.raw for s in generate_samples(3, 5, NOW)]
    assert generate_samples(1, 5, NOW)[0].raw != generate_samples(1, 6, NOW)[0].raw


def test_samples_are_valid_volet_oru_with_qualified_test_ins() -> None:
    for sample in generate_samples(10, 1, NOW):
        msg = decode_message(sample.raw)
        header = read_header(msg)
        assert header.profiles == ("CISIS_CDA_HL7_V2",)
        result = classify(msg, header, test_environment=True)
        assert result.kind is MessageKind.ORU_DOCUMENT
        assert result.action is Action.PUBLISH
        assert result.patient.ins == sample.patient.ins
        assert result.patient.ins_oid == "1.2.250.1.213.1.4.10"
        assert is_valid_nir(sample.patient.ins)
        assert result.flags == Flags(ack_reception=True)
        assert sample.document_id.startswith("2.25.") and sample.document_id.count(".") == 2


def test_sample_cdas_validate_against_the_ans_extended_xsd(cda_schema: etree.XMLSchema) -> None:
    samples = generate_samples(5, 3, NOW)
    rng = random.Random(9)
    replacement = build_sample_cda(
        now=NOW,
        patient=synthetic_patient(rng),
        document_id=root_only_oid(rng),
        set_id=root_only_oid(rng),
        version=2,
        replaces=samples[0].document_id,
    )
    for cda in [s.cda for s in samples] + [replacement]:
        doc = etree.fromstring(cda)
        assert cda_schema.validate(doc), cda_schema.error_log


@pytest.mark.parametrize(("control", "action"), [("NW", Action.PUBLISH), ("RO", Action.REPLACE), ("CA", Action.DELETE)])
def test_oru_triggers(control: str, action: Action) -> None:
    sample = generate_samples(1, 2, NOW, SampleOptions(order_control=control))[0]
    msg = decode_message(sample.raw)
    assert classify(msg, read_header(msg), test_environment=True).action is action


@pytest.mark.parametrize("trigger", ["T02", "T10", "T04"])
def test_mdm_triggers(trigger: str) -> None:
    rng = random.Random(4)
    raw, _ = build_mdm(
        now=NOW,
        control_id="M1",
        patient=synthetic_patient(rng),
        document_id=root_only_oid(rng),
        set_id=root_only_oid(rng),
        trigger=trigger,
        replaces="2.25.1" if trigger == "T10" else "",
    )
    msg = decode_message(raw)
    assert classify(msg, read_header(msg), test_environment=True).kind is MessageKind.MDM_DOCUMENT


@pytest.mark.parametrize("charset", ["UNICODE UTF-8", "8859/15", "8859/1"])
def test_charsets_round_trip(charset: str) -> None:
    rng = random.Random(8)
    patient = synthetic_patient(rng)
    sender = Sender(charset=charset)
    raw, _ = build_oru(now=NOW, control_id="C", patient=patient, document_id="2.25.7", set_id="2.25.8", sender=sender)
    msg = decode_message(raw)
    pid = msg.first("PID")
    assert msg.value(pid, 5) == patient.family
    assert msg.value(pid, 5, 2) == patient.given


def test_flags_are_written_in_order_and_read_back() -> None:
    flags = Flags(masque_ps=True, invisible_patient=True, dest_mssante_ps=True, ack_lecture_mss=True)
    sample = generate_samples(1, 2, NOW, SampleOptions(flags=flags))[0]
    msg = decode_message(sample.raw)
    assert classify(msg, read_header(msg), test_environment=True).flags == flags


def test_write_samples_one_file_per_message(tmp_path: Path) -> None:
    paths = write_samples(tmp_path / "out", 3, 1, NOW)
    assert len(paths) == 3
    assert [p.read_bytes() for p in paths] == [s.raw for s in generate_samples(3, 1, NOW)]
    assert all(p.read_bytes().startswith(b"MSH|") for p in paths)


def test_replacement_samples_point_at_the_previous_version(cda_schema: etree.XMLSchema) -> None:
    [sample] = generate_samples(1, 2, NOW, SampleOptions(order_control="RO"))
    assert sample.replaces.startswith("2.25.")
    doc = etree.fromstring(sample.cda)
    ns = {"h": "urn:hl7-org:v3"}
    assert doc.find("h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id", ns).get("root") == sample.replaces
    assert doc.find("h:versionNumber", ns).get("value") == "2"
    assert cda_schema.validate(doc), cda_schema.error_log
    # NW samples are unchanged by the RO option's extra draw
    assert generate_samples(1, 2, NOW)[0].replaces == ""


def test_fixed_patient_option() -> None:
    from passerelle.mappings.samples.messages import ANS_TEST_PATIENT

    samples = generate_samples(3, 4, NOW, SampleOptions(patient=ANS_TEST_PATIENT))
    assert {s.patient.ins for s in samples} == {"279035121518989"}
    assert [s.document_id for s in samples] == [s.document_id for s in generate_samples(3, 4, NOW)]
    for sample in samples:
        msg = decode_message(sample.raw)
        assert classify(msg, read_header(msg), test_environment=True).patient.lane("x") == "ins:279035121518989"
