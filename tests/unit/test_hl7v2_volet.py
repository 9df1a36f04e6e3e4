"""Classification and CI-SIS volet rules, on the ANS corpus and on synthetic messages."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from passerelle.errors import PasserelleError, UnsupportedMessageError, ValidationError
from passerelle.mappings.document import Action, Flags, IdentityStatus
from passerelle.mappings.hl7v2 import (
    MessageKind,
    classify,
    decode_message,
    extract_ids,
    patient_from_pid,
    read_header,
)
from passerelle.mappings.hl7v2.embedded import decode_base64, decode_cda, parse_xml
from passerelle.mappings.hl7v2.errors import DataTypeError
from passerelle.mappings.hl7v2.volet import dmp_type_codes
from passerelle.mappings.samples.messages import (
    build_adt_consent,
    build_lab_results,
    build_mdm,
    build_oru,
    root_only_oid,
    synthetic_patient,
)

NOW = datetime(2026, 11, 22, 3, 30, tzinfo=UTC)
ANY_PROCESSING_ID = {"P", "D", "T"}

# (file, outcome with the embedded XML checked, outcome with only the base64 checked).
# Failures are the examples breaking a rule of the volet (docs/conformance.md lists why); NOT_XML are the
# examples where the ANS replaced the document by a sentence "for readability" (their readme says so).
V21 = "Vague_2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1"
LPS11 = "Vague_2/Trans_LPS_CDA_MSSante/TRANSMISSION_LPS_DOC_CDA_COURRIEL_FROM_MSSANTE_V1.1"
VOL = "Volets/TRANS_DOC_CDA_HL7V2"
LPS10 = "Volets/Trans_LPS_CDA_MSSante/V1.0"
UNSUPPORTED_TYPE = "UnsupportedMessageError@MSH^1^9"
LPS = "UnsupportedMessageError@MSH^1^21"
NOT_XML = "DataTypeError@OBX^1^5^1^5"
CORPUS = [
    ("SGL/admission.er7", "adt_consent", "adt_consent"),
    ("SGL/sortie.er7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    ("Vague_2/Consentement_DMP_PAMFR/ConsentementConsultation_NonOppositionAlimentation.er7", "adt_consent", "adt_consent"),
    ("Vague_2/Consentement_DMP_PAMFR/NonConsentementConsultation_NonOppositionAlimentation.er7", "adt_consent", "adt_consent"),
    ("Vague_2/Consentement_DMP_PAMFR/NonConsentementConsultation_OppositionAlimentation.er7", "adt_consent", "adt_consent"),
    ("Vague_2/Consentement_DMP_PAMFR/NonRecueillieConsentementConsultation_NonOppositionAlimentation.er7", "adt_consent", "adt_consent"),
    ("Vague_2/Consentement_DMP_PAMFR/NonRecueillieConsentementConsultation_NonRecueillieOppositionAlimentation.er7", "adt_consent", "adt_consent"),
    (f"{V21}/MDM/Remplacement_MDM/ack.er7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{V21}/MDM/Remplacement_MDM/message_MDM_CR_Radio_RPLC_N1.er7", "mdm_document", "mdm_document"),
    (f"{V21}/MDM/Suppression_MDM/ack.er7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{V21}/MDM/Suppression_MDM/message_MDM_CR_Radio_DEL_N1.er7", "mdm_document", "mdm_document"),
    (f"{V21}/MDM/Transmission_initiale_MDM/message_MDM_CR_Radio_INIT_N1.er7", NOT_XML, "mdm_document"),
    (f"{V21}/MDM/Transmission_initiale_MDM/message_MDM_CR_Radio_INIT_N1_Base64.er7", "mdm_document", "mdm_document"),
    (f"{V21}/ORU/Remplacement_ORU/message_ORU_CR_Bio_RPLC_N3_SEGUR.hl7", "oru_document", "oru_document"),
    (f"{V21}/ORU/Suppression_ORU/message_ORU_CR_Bio_DEL_N3_SEGUR.hl7", "oru_document", "oru_document"),
    (f"{V21}/ORU/Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7", "oru_document", "oru_document"),
    (f"{LPS11}/Remplacement_MDM/ack.er7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{LPS11}/Suppression_MDM/ack.er7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{LPS11}/Transmission_initiale_MDM/ack.er7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{LPS11}/Transmission_initiale_MDM/message_MDM__LPS_MSS_CR_Radio_INIT_N1.er7", LPS, LPS),
    (f"{LPS11}/Transmission_initiale_MDM/message_MDM__LPS_MSS_CR_Radio_INIT_N1_Base64.er7", LPS, LPS),
    (f"{VOL}/V1.2/MDM/ack.hl7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{VOL}/V1.2/MDM/message.hl7", NOT_XML, "mdm_document"),
    (f"{VOL}/V1.2/ORU/ack.hl7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{VOL}/V1.2/ORU/message.hl7", NOT_XML, "oru_document"),
    (f"{VOL}/V2.0/MDM/Remplacement_MDM/ack.er7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{VOL}/V2.0/MDM/Remplacement_MDM/message_MDM_CR_Radio_RPLC_N1.er7", NOT_XML, "mdm_document"),
    (f"{VOL}/V2.0/MDM/Suppression_MDM/ack.er7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{VOL}/V2.0/MDM/Suppression_MDM/message_MDM_CR_Radio_DEL_N1.er7", NOT_XML, "mdm_document"),
    (f"{VOL}/V2.0/MDM/Transmission_initiale_MDM/message_MDM_CR_Radio_INIT_N1.er7", NOT_XML, "mdm_document"),
    (f"{VOL}/V2.0/ORU/Remplacement_ORU/ack.er7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{VOL}/V2.0/ORU/Remplacement_ORU/message_ORU_CR_Bio_RPLC_N1_N3.er7", NOT_XML, "oru_document"),
    (f"{VOL}/V2.0/ORU/Suppression_ORU/message_ORU_CR_Bio_DEL_N1_N3.er7", NOT_XML, "oru_document"),
    (f"{VOL}/V2.0/ORU/Transmission_initiale_ORU/Message_metier_lecture_MSS.hl7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{VOL}/V2.0/ORU/Transmission_initiale_ORU/Message_metier_reception_DMP.hl7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{VOL}/V2.0/ORU/Transmission_initiale_ORU/Message_metier_reception_MSS.hl7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{VOL}/V2.0/ORU/Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N1_N3.hl7", NOT_XML, "oru_document"),
    (f"{VOL}/V2.1/ORU/Remplacement_ORU/ack.er7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{VOL}/V2.1/ORU/Remplacement_ORU/message_ORU_CR_Bio_RPLC_N1_Base64_N3_Base64.er7", "oru_document", "oru_document"),
    (f"{VOL}/V2.1/ORU/Remplacement_ORU/message_ORU_CR_Bio_RPLC_N1_N3.er7", NOT_XML, "oru_document"),
    (f"{VOL}/V2.1/ORU/Suppression_ORU/message_ORU_CR_Bio_DEL_N1_N3.er7", NOT_XML, "oru_document"),
    (f"{VOL}/V2.1/ORU/Transmission_initiale_ORU/Message_metier_lecture_MSS.hl7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{VOL}/V2.1/ORU/Transmission_initiale_ORU/Message_metier_reception_DMP.hl7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{VOL}/V2.1/ORU/Transmission_initiale_ORU/Message_metier_reception_MSS.hl7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{VOL}/V2.1/ORU/Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N1_N3.hl7", NOT_XML, "oru_document"),
    (f"{LPS10}/MDM/ack.hl7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{LPS10}/MDM/message.hl7", LPS, LPS),
    (f"{LPS10}/MDM/messageDocB64.hl7", LPS, LPS),
    (f"{LPS10}/Remplacement_MDM/message_MDM__LPS_MSS_CR_Radio_RPLC_N1.er7", LPS, LPS),
    (f"{LPS10}/Suppression_MDM/message_MDM__LPS_MSS_CR_Radio_DEL_N1.er7", LPS, LPS),
    (f"{LPS10}/Transmission_initiale_MDM/ack.er7", UNSUPPORTED_TYPE, UNSUPPORTED_TYPE),
    (f"{LPS10}/Transmission_initiale_MDM/message_MDM__LPS_MSS_CR_Radio_INIT_N1.er7", LPS, LPS),
]  # fmt: skip


def outcome(raw: bytes, deep: bool) -> str:
    try:
        msg = decode_message(raw)
        result = classify(
            msg,
            read_header(msg),
            test_environment=True,
            accepted_processing_ids=ANY_PROCESSING_ID,
            check_documents=deep,
        )
    except PasserelleError as exc:
        return f"{type(exc).__name__}@{exc.location}"
    return result.kind.value


def ans(corpus_dir: Path, name: str) -> bytes:
    return (corpus_dir / "hl7v2/fr-ans-hl7v2-exemples" / name).read_bytes()


def test_corpus_table_covers_every_ans_message(corpus_dir: Path) -> None:
    root = corpus_dir / "hl7v2/fr-ans-hl7v2-exemples"
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in {".hl7", ".er7"}}
    assert files == {name for name, _, _ in CORPUS}


@pytest.mark.parametrize(
    ("name", "deep", "shallow"), CORPUS, ids=[c[0].rsplit("/", 2)[-2] + "/" + c[0].rsplit("/", 1)[-1] for c in CORPUS]
)
def test_every_ans_message_is_classified(corpus_dir: Path, name: str, deep: str, shallow: str) -> None:
    raw = ans(corpus_dir, name)
    assert outcome(raw, deep=True) == deep
    assert outcome(raw, deep=False) == shallow


def test_ans_v21_oru_replacement_two_renderings(corpus_dir: Path) -> None:
    raw = ans(corpus_dir, f"{VOL}/V2.1/ORU/Remplacement_ORU/message_ORU_CR_Bio_RPLC_N1_Base64_N3_Base64.er7")
    msg = decode_message(raw)
    result = classify(msg, read_header(msg), test_environment=True, check_documents=True)
    assert result.action is Action.REPLACE
    assert len(result.documents) == 2
    assert result.documents[0].type_code.code == "11502-2"
    assert result.patient.ins == "279035121518989"
    assert result.patient.identity_status is IdentityStatus.QUALIFIED
    assert result.flags is not None and result.flags.dest_dmp
    for doc in result.documents:
        assert decode_cda(doc.base64, location=doc.location).lstrip().startswith(b"<")


def test_ans_unpadded_base64_is_tolerated(corpus_dir: Path) -> None:
    raw = ans(corpus_dir, f"{V21}/ORU/Remplacement_ORU/message_ORU_CR_Bio_RPLC_N3_SEGUR.hl7")
    msg = decode_message(raw)
    [doc] = classify(msg, read_header(msg), check_documents=True, test_environment=True).documents
    assert len(doc.base64) % 4 != 0
    parse_xml(decode_base64(doc.base64, location="x"), location="x")


def test_ans_small_tilde_example_is_read(corpus_dir: Path) -> None:
    raw = ans(corpus_dir, f"{VOL}/V2.0/ORU/Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N1_N3.hl7")
    msg = decode_message(raw)
    assert "msh2_small_tilde" in msg.warnings
    assert msg.value(msg.first("PID"), 11, 7, rep=2) == "BDL"


def test_production_mode_ignores_test_ins(corpus_dir: Path) -> None:
    raw = ans(corpus_dir, f"{V21}/ORU/Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7")
    msg = decode_message(raw)
    assert extract_ids(msg, msg.first("PID"), test_environment=False).ins == ""
    assert extract_ids(msg, msg.first("PID"), test_environment=True).ins == "279035121518989"


@pytest.mark.parametrize(
    ("name", "status", "feeding", "consultation", "blocks"),
    [
        ("ConsentementConsultation_NonOppositionAlimentation.er7", "ACTIF", "INO", "IC", False),
        ("NonConsentementConsultation_NonOppositionAlimentation.er7", "ACTIF", "INO", "INC", False),
        ("NonConsentementConsultation_OppositionAlimentation.er7", "ACTIF", "IO", "INC", True),
        ("NonRecueillieConsentementConsultation_NonOppositionAlimentation.er7", "ACTIF", "INO", "NA", False),
        ("NonRecueillieConsentementConsultation_NonRecueillieOppositionAlimentation.er7", "ACTIF", "NA", "NA", False),
    ],
)
def test_ans_consent_feeds(
    corpus_dir: Path, name: str, status: str, feeding: str, consultation: str, blocks: bool
) -> None:
    raw = ans(corpus_dir, f"Vague_2/Consentement_DMP_PAMFR/{name}")
    msg = decode_message(raw)
    feed = classify(msg, read_header(msg), test_environment=True).consent
    assert feed is not None
    assert (feed.dmp_status, feed.feeding, feed.consultation) == (status, feeding, consultation)
    assert feed.feeding_opposition is (feeding == "IO")
    assert feed.blocks_feeding is blocks
    assert feed.dates.collected.startswith("2024")


# --- synthetic messages: one rule at a time ----------------------------------------------------


def oru(**kwargs: object) -> bytes:
    rng = random.Random(5)
    raw, _ = build_oru(
        now=NOW,
        control_id="C1",
        patient=synthetic_patient(rng),
        document_id=root_only_oid(rng),
        set_id=root_only_oid(rng),
        **kwargs,  # type: ignore[arg-type]
    )
    return raw


def check(raw: bytes, **kwargs: object) -> object:
    msg = decode_message(raw)
    return classify(msg, read_header(msg), test_environment=True, **kwargs)  # type: ignore[arg-type]


def rejects(raw: bytes, error: type[Exception], location: str, code: str = "") -> None:
    with pytest.raises(error) as exc:
        check(raw)
    assert getattr(exc.value, "location", None) == location
    if code:
        assert exc.value.hl7_code == code  # type: ignore[attr-defined]


def test_orc1_obx11_coherence() -> None:
    rejects(oru(order_control="RO").replace(b"||||||C|", b"||||||F|", 1), ValidationError, "OBX^1^11", "103")
    rejects(oru().replace(b"ORC|NW|", b"ORC|XX|"), ValidationError, "ORC^1^1", "103")


@pytest.mark.parametrize(
    ("order_control", "action"), [("NW", Action.PUBLISH), ("RO", Action.REPLACE), ("CA", Action.DELETE)]
)
def test_orc1_sc_takes_the_action_from_obx11(order_control: str, action: Action) -> None:
    """V1.2 and V2.0 of the volet send ORC-1 SC (status change): the document OBX-11 says what to do."""
    raw = oru(order_control=order_control, replaces="2.25.9" if action is Action.REPLACE else "")
    status_change = raw.replace(f"ORC|{order_control}|".encode(), b"ORC|SC|")
    assert check(status_change).action is action  # type: ignore[attr-defined]
    bad_status = status_change.replace(b"||||||F|", b"||||||X|", 1).replace(b"||||||C|", b"||||||X|", 1)
    rejects(bad_status.replace(b"||||||D|", b"||||||X|", 1), ValidationError, "OBX^1^11", "103")


def test_v1_profile_rules() -> None:
    """V1.2: flags without the MetaDMPMSS system and with the old spellings, the document type in
    OBX-3 (OBR-4 is the exam), no sender PRT, ORC-1 SC."""
    lines = oru(with_sender_prt=False).decode().split("\r")
    lines[0] = lines[0].replace("2.1^CISIS_CDA_HL7_V2", "1.2^CISIS_CDA_HL7_V1")
    out = []
    for line in lines:
        if line.startswith("ORC|"):
            line = line.replace("ORC|NW|", "ORC|SC|")
        if line.startswith("OBR|"):
            line = line.replace("11502-2^CR d'examens biologiques^LN", "34555-3^Clairance^LN")
        line = line.replace("^MetaDMPMSS", "").replace("INVISIBLE_REP_LEGAUX^", "INVISIBLE_REPRESENTANTS_LEGAUX^")
        out.append(line.replace("MODIF_CONF_CODE^", "MODIF_CONFIDENTIALITYCODE^"))
    out.append("OBX|20|CE|COMP_LOT^Identifiant de document composant le lot||1.2.250.1.213.1.1.8^CDAN1||||||F|")
    result = check("\r".join(out).encode())
    assert result.action is Action.PUBLISH  # type: ignore[attr-defined]
    assert [d.type_code.code for d in result.documents] == ["11502-2"]  # type: ignore[attr-defined]
    assert result.flags == Flags(ack_reception=True)  # type: ignore[attr-defined]
    v2 = "\r".join(out).replace("1.2^CISIS_CDA_HL7_V1", "2.1^CISIS_CDA_HL7_V2").encode()
    rejects(v2, ValidationError, "OBX^1^3", "103")  # the V2 rule: OBX-3 = OBR-4


def test_obx3_must_equal_obr4() -> None:
    raw = oru().replace(b"OBX|1|ED|11502-2^", b"OBX|1|ED|18748-4^", 1)
    rejects(raw, ValidationError, "OBX^1^3", "103")


def test_ed_payload_rules() -> None:
    rejects(oru().replace(b"^TEXT^XML^Base64^", b"^TEXT^PDF^Base64^"), ValidationError, "OBX^1^5^1^3")
    rejects(oru().replace(b"^TEXT^XML^Base64^", b"^TEXT^XML^A^"), ValidationError, "OBX^1^5^1^4")
    rejects(oru().replace(b"^TEXT^XML^Base64^PD94", b"^TEXT^XML^Base64^P!94"), DataTypeError, "OBX^1^5^1^5", "102")
    not_xml = b"PGh0bWw+"  # "<html>" unterminated
    raw = oru()
    start = raw.index(b"^Base64^") + 8
    end = raw.index(b"|", start)
    rejects(raw[:start] + not_xml + raw[end:], DataTypeError, "OBX^1^5^1^5")
    # shallow check only looks at the alphabet
    assert check(raw[:start] + not_xml + raw[end:], check_documents=False)


def test_xml_with_doctype_or_entities_is_refused() -> None:
    import base64

    evil = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>'
    raw = oru(cda=evil)
    with pytest.raises(DataTypeError):
        check(raw)
    with pytest.raises(DataTypeError):
        parse_xml(evil, location="x")
    assert base64.b64decode(base64.b64encode(evil)) == evil


def test_flags_rules() -> None:
    raw = oru()
    rejects(raw.replace(b"DESTDMP^Destinataire DMP^MetaDMPMSS||Y", b"DESTDMP^Destinataire DMP^MetaDMPMSS||X"),
            ValidationError, "OBX^7^5", "103")  # fmt: skip
    missing = b"\r".join(line for line in raw.split(b"\r") if not line.startswith(b"OBX|3|"))
    rejects(missing, ValidationError, "OBX", "101")
    lines = raw.split(b"\r")
    i2 = next(i for i, line in enumerate(lines) if line.startswith(b"OBX|2|"))
    lines[i2], lines[i2 + 1] = lines[i2 + 1], lines[i2]
    rejects(b"\r".join(lines), ValidationError, "OBX", "100")
    rejects(raw.replace(b"MASQUE_PS^", b"MASQUE_XX^"), ValidationError, "OBX^2^3", "103")


def test_ack_lecture_alias() -> None:
    raw = oru(flags=Flags(ack_lecture_mss=True)).replace(b"ACK_LECTURE_MSS^", b"ACK_LECTURE^")
    result = check(raw)
    assert result.flags == Flags(ack_lecture_mss=True)  # type: ignore[attr-defined]


def test_sender_prt_required_only_for_the_dmp() -> None:
    rejects(oru(with_sender_prt=False), ValidationError, "PRT", "101")
    assert check(oru(with_sender_prt=False, flags=Flags(dest_dmp=False, dest_mssante_ps=True)))
    no_org = oru().replace(b"^FINEG^^^1750000000", b"")
    no_org = no_org.replace("|Laboratoire synthétique^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO".encode(), b"|")
    rejects(no_org, ValidationError, "PRT^1^8")


def test_type_code_must_be_in_the_dmp_list() -> None:
    assert "11502-2" in dmp_type_codes()
    raw = oru().replace(b"11502-2^CR d'examens biologiques^LN", b"99999-9^Unknown^LN")
    rejects(raw, ValidationError, "OBR^1^4", "103")


def test_pid3_missing_is_a_required_field_error() -> None:
    """docs/bad-input.md, B-HL7-15: a document message whose PID-3 is empty gets AE 101 at PID^1^3."""
    lines = oru().split(b"\r")
    i = next(n for n, line in enumerate(lines) if line.startswith(b"PID|"))
    fields = lines[i].split(b"|")
    fields[3] = b""
    lines[i] = b"|".join(fields)
    rejects(b"\r".join(lines), ValidationError, "PID^1^3", "101")


def test_structure_errors() -> None:
    raw = oru()
    drop = lambda seg: b"\r".join(line for line in raw.split(b"\r") if not line.startswith(seg))  # noqa: E731
    rejects(drop(b"PID|"), ValidationError, "PID", "100")
    rejects(drop(b"ORC|"), ValidationError, "ORC", "100")
    rejects(drop(b"OBR|"), ValidationError, "OBR", "100")


@pytest.mark.parametrize(
    ("old", "new", "location", "code"),
    [
        (b"ORU^R01^ORU_R01", b"ORU^R30^ORU_R30", "MSH^1^9^1^2", "201"),
        (b"|P|2.5|", b"|P|2.4|", "MSH^1^12", "203"),
        (b"ORU^R01^ORU_R01", b"SIU^S12^SIU_S12", "MSH^1^9", "200"),
    ],
)
def test_unsupported(old: bytes, new: bytes, location: str, code: str) -> None:
    from passerelle.connector.intake.replies import hl7_refusal

    with pytest.raises(UnsupportedMessageError) as exc:
        check(oru().replace(old, new, 1))
    assert exc.value.location == location
    assert hl7_refusal(exc.value).err3 == code


def test_mdm_rules() -> None:
    rng = random.Random(2)
    patient = synthetic_patient(rng)
    raw, _ = build_mdm(now=NOW, control_id="M", patient=patient, document_id="2.25.1", set_id="2.25.2", trigger="T10")
    rejects(raw, ValidationError, "TXA^1^13", "101")
    ok, _ = build_mdm(now=NOW, control_id="M", patient=patient, document_id="2.25.3", set_id="2.25.2",
                      trigger="T10", replaces="2.25.1")  # fmt: skip
    assert check(ok).action is Action.REPLACE  # type: ignore[attr-defined]
    rejects(ok.replace(b"ORC|RO|", b"ORC|NW|"), ValidationError, "ORC^1^1")
    rejects(ok.replace(b"|2.6|", b"|2.5|", 1), UnsupportedMessageError, "MSH^1^12")


def test_lab_results_and_adt() -> None:
    patient = synthetic_patient(random.Random(3))
    lab = check(build_lab_results(now=NOW, control_id="L", patient=patient))
    assert lab.kind is MessageKind.LAB_RESULTS  # type: ignore[attr-defined]
    adt = check(build_adt_consent(now=NOW, control_id="A", patient=patient, feeding="IO"))
    assert adt.kind is MessageKind.ADT_CONSENT  # type: ignore[attr-defined]
    assert adt.consent.feeding_opposition and adt.consent.ins == patient.ins  # type: ignore[attr-defined]
    bad = build_adt_consent(now=NOW, control_id="A", patient=patient, feeding="MAYBE")
    rejects(bad, ValidationError, "ZFA^1^9", "103")


# --- INS extraction ----------------------------------------------------------------------------

PID_BASE = "MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5\rPID|||{pid3}||X^Y" + "|" * 27 + "{pid32}\r"
TEST_INS = "279035121518989"


def ids(pid3: str, pid32: str = "VALI", test: bool = True) -> object:
    msg = decode_message(PID_BASE.format(pid3=pid3, pid32=pid32).encode())
    return extract_ids(msg, msg.first("PID"), test_environment=test)


@pytest.mark.parametrize(
    ("pid3", "pid32", "test", "expected_ins"),
    [
        (f"{TEST_INS}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS", "VALI", True, TEST_INS),
        (f"{TEST_INS}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS", "VALI", False, ""),
        (f"{TEST_INS}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS", "VALI", False, TEST_INS),
        (f"{TEST_INS}^^^ASIP-SANTE-INS-NIA&1.2.250.1.213.1.4.9&ISO^INS", "VALI", False, TEST_INS),
        (f"{TEST_INS}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.11&ISO^INS", "VALI", True, TEST_INS),
        (f"{TEST_INS}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS", "PROV", False, ""),
        (f"{TEST_INS}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS", "", False, ""),
        ("279035121518988^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS", "VALI", False, ""),  # bad key
        (f"{TEST_INS}^^^ASIP-SANTE-NIR&1.2.250.1.213.1.4.8&ISO^NH", "VALI", False, ""),  # billing NIR
        (f"{TEST_INS}^^^ASIP-SANTE-INS-C&1.2.250.1.213.1.4.2&ISO^INS-C", "VALI", False, ""),
        (f"123^^^H&1.2.3&ISO^PI~{TEST_INS}^^^X&1.2.250.1.213.1.4.8&ISO^INS^^20101207", "VALI~HOMA", False, TEST_INS),
    ],
)
def test_ins_extraction(pid3: str, pid32: str, test: bool, expected_ins: str) -> None:
    assert ids(pid3, pid32, test).ins == expected_ins  # type: ignore[attr-defined]


def test_unqualified_ins_is_flagged_and_lane_falls_back_to_ipp() -> None:
    result = ids(f"123^^^H&1.2.3&ISO^PI~{TEST_INS}^^^X&1.2.250.1.213.1.4.8&ISO^INS", "PROV", False)
    assert result.ins_present_unqualified  # type: ignore[attr-defined]
    assert result.identity_status is IdentityStatus.PROVISIONAL  # type: ignore[attr-defined]
    assert result.lane("A^B") == "ipp:A^B:1.2.3:123"  # type: ignore[attr-defined]
    qualified = ids(f"123^^^H&1.2.3&ISO^PI~{TEST_INS}^^^X&1.2.250.1.213.1.4.8&ISO^INS", "VALI", False)
    assert qualified.lane("A^B") == f"ins:{TEST_INS}"  # type: ignore[attr-defined]
    assert ids("", "").lane("A^B") == ""  # type: ignore[attr-defined]


def test_patient_from_pid() -> None:
    patient = synthetic_patient(random.Random(4))
    msg = decode_message(build_lab_results(now=NOW, control_id="L", patient=patient))
    model = patient_from_pid(msg, test_environment=True)
    assert (model.ins, model.family, model.given, model.birth_date, model.sex) == (
        patient.ins, patient.family, patient.given, patient.birth_date, patient.sex,
    )  # fmt: skip
    assert model.identity_status is IdentityStatus.QUALIFIED
    assert model.local_id == patient.ipp


def test_lab_result_with_attached_pdf_stays_a_lab_result() -> None:
    patient = synthetic_patient(random.Random(6))
    raw = build_lab_results(now=NOW, control_id="L", patient=patient)
    raw += b"OBX|3|ED|PDF^Compte rendu^L||^AP^PDF^Base64^JVBERi0=||||||F\r"
    assert check(raw).kind is MessageKind.LAB_RESULTS  # type: ignore[attr-defined]


def test_msh2_with_the_v27_truncation_character_is_classified() -> None:
    """MSH-2 may hold a fifth character (truncation, HL7 v2.7+): the message is read as usual."""
    raw = oru().replace(b"MSH|^~\\&|", b"MSH|^~\\&#|", 1)
    assert raw.startswith(b"MSH|^~\\&#|")
    assert check(raw).kind is MessageKind.ORU_DOCUMENT  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("obx2", "expected"),
    [("ED", True), ("ed", True), ("\\X45\\D", True), ("NM", False), ("E", False), ("", False), ("EDX", False)],
)
def test_embedded_document_obx_read_through_escapes(obx2: str, expected: bool) -> None:
    """OBX-2 is read as decoded text: an escaped "ED" is an embedded document, a lab type is not."""
    from passerelle.mappings.hl7v2.volet import is_cda_obx

    raw = (
        "MSH|^~\\&|LAB|F|GW|F|20261122033000||ORU^R01^ORU_R01|1|P|2.5|||||FRA|UNICODE UTF-8\r"
        f"OBX|1|{obx2}|11502-2^CR^LN||^TEXT^XML^Base64^PD94bWwvPg==||||||F\r"
    ).encode()
    msg = decode_message(raw, fallback_charset=None)
    assert is_cda_obx(msg, msg.first("OBX")) is expected
