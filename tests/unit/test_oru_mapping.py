"""ORU/MDM with an embedded CDA → Document (docs/interop-reference.md: "XDS metadata" and the CI-SIS volet;
the ANS examples of the volet)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from passerelle.errors import IdentityError, MappingError, ParseError, UnsupportedMessageError, ValidationError
from passerelle.mappings.document import (
    CONFIDENTIALITY_CISIS,
    CONFIDENTIALITY_HL7,
    Action,
    Provenance,
)
from passerelle.mappings.hl7v2.documents import decode_base64, map_hl7_document, map_hl7_documents
from tests.support.cda_samples import minimal_cda
from tests.support.volet import FLAG_ORDER

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
V21 = "hl7v2/fr-ans-hl7v2-exemples/Vague_2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1"
SEGUR_INIT = f"{V21}/ORU/Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"
SEGUR_RPLC = f"{V21}/ORU/Remplacement_ORU/message_ORU_CR_Bio_RPLC_N3_SEGUR.hl7"
SEGUR_DEL = f"{V21}/ORU/Suppression_ORU/message_ORU_CR_Bio_DEL_N3_SEGUR.hl7"
MDM_INIT = f"{V21}/MDM/Transmission_initiale_MDM/message_MDM_CR_Radio_INIT_N1_Base64.er7"
MDM_RPLC = f"{V21}/MDM/Remplacement_MDM/message_MDM_CR_Radio_RPLC_N1.er7"
MDM_DEL = f"{V21}/MDM/Suppression_MDM/message_MDM_CR_Radio_DEL_N1.er7"
PROV = Provenance(channel="mllp", journal_id=7)


def _map(raw: bytes, *, test_environment: bool = True):  # type: ignore[no-untyped-def]
    return map_hl7_document(raw, sender_charset=None, test_environment=test_environment, now=NOW, provenance=PROV)


def test_ans_segur_cr_bio_initial(corpus_dir: Path) -> None:
    doc = _map((corpus_dir / SEGUR_INIT).read_bytes())
    assert doc.type_code.code == "11502-2"
    assert doc.class_code.code == "10"
    assert doc.format_code.code == "urn:ihe:lab:xd-lab:2008"
    assert (doc.patient.ins, doc.patient.ins_oid) == ("279035121518989", "1.2.250.1.213.1.4.10")
    assert doc.patient.identity_status == "qualified"
    assert doc.patient.xds_patient_id == "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
    # all visibility flags are N in this message: only the CDA code remains
    assert [(c.code, c.system) for c in doc.confidentiality] == [("N", CONFIDENTIALITY_HL7)]
    assert doc.flags.dest_dmp and doc.flags.dest_mssante_ps and doc.flags.dest_mssante_pat
    assert doc.flags.ack_reception and doc.flags.ack_lecture_mss
    assert not (doc.flags.masque_ps or doc.flags.invisible_patient or doc.flags.invisible_rep_legaux)
    assert doc.action is Action.PUBLISH and doc.replaces == ""
    assert doc.unique_id == "1.2.250.1.213.1.1.9"
    assert doc.submission_author is not None
    assert doc.submission_author.person_id == "801234567866"
    assert doc.submission_author.organisation_id == "1120459876"
    assert doc.provenance.sender == "SIL-Y^labo" and doc.provenance.message_id == "015"
    assert doc.provenance.channel == "mllp" and doc.provenance.journal_id == 7
    assert doc.content.startswith(b"<?xml") and b"ClinicalDocument" in doc.content
    assert doc.facility_type is not None and doc.facility_type.code == "SA25"


def test_segur_test_ins_is_refused_in_production(corpus_dir: Path) -> None:
    with pytest.raises(IdentityError) as err:
        _map((corpus_dir / SEGUR_INIT).read_bytes(), test_environment=False)
    assert err.value.message.startswith("identity not qualified:")
    assert "279035121518989" not in err.value.message


def test_segur_replacement_and_deletion(corpus_dir: Path) -> None:
    doc = _map((corpus_dir / SEGUR_RPLC).read_bytes())
    assert doc.action is Action.REPLACE
    assert doc.replaces == "1.2.250.1.213.1.1.12"  # CDA relatedDocument RPLC
    assert doc.version == 2
    # The ANS deletion example carries a CDA whose recordTarget INS differs from PID-3.
    with pytest.raises(IdentityError, match="differs from the CDA recordTarget INS"):
        _map((corpus_dir / SEGUR_DEL).read_bytes())


def test_mdm_flags_become_confidentiality_codes(corpus_dir: Path) -> None:
    doc = _map((corpus_dir / MDM_INIT).read_bytes())
    assert doc.format_code.code == "urn:ihe:iti:xds-sd:pdf:2008"
    assert doc.type_code.code == "18748-4"
    codes = [(c.code, c.system) for c in doc.confidentiality]
    assert codes == [
        ("N", CONFIDENTIALITY_HL7),
        ("INVISIBLE_PATIENT", CONFIDENTIALITY_CISIS),
        ("INVISIBLE_REPRESENTANTS_LEGAUX", CONFIDENTIALITY_CISIS),
    ]
    assert doc.flags.invisible_patient and doc.flags.invisible_rep_legaux and doc.flags.connexion_secrete
    assert doc.action is Action.PUBLISH


def test_mdm_replacement_uses_the_parent_and_deletion_targets_the_document(corpus_dir: Path) -> None:
    rplc = _map((corpus_dir / MDM_RPLC).read_bytes())
    assert rplc.action is Action.REPLACE
    assert rplc.replaces == "1.2.250.1.71.4.2.2.120456789.71024000081"
    # CONNEXION_SECRETE=Y forces INVISIBLE_REPRESENTANTS_LEGAUX (rule 20)
    assert "INVISIBLE_REPRESENTANTS_LEGAUX" in rplc.visibility_codes
    deleted = _map((corpus_dir / MDM_DEL).read_bytes())
    assert deleted.action is Action.DELETE and deleted.replaces == deleted.unique_id


# --- synthetic messages ------------------------------------------------------------------------------

CDA = minimal_cda()


def _message(
    *,
    orc1: str = "NW",
    obx11: str = "F",
    pid3: str = "279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS",
    pid32: str = "VALI",
    flags: dict[str, str] | None = None,
    payload: bytes = CDA,
    pad: bool = True,
    msh9: str = "ORU^R01^ORU_R01",
) -> bytes:
    b64 = base64.b64encode(payload).decode()
    if not pad:
        b64 = b64.rstrip("=")
    pid = ["PID", "", "", pid3, "", "TEST^ALEX^^^^^L", "", "19790328", "F"] + [""] * 23 + [pid32]
    segs = [
        f"MSH|^~\\&|SIL|LAB|PFI|X|20260101120000||{msh9}|MSG-1|P|2.5|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2",
        "|".join(pid),
        f"ORC|{orc1}|1",
        "OBR|1|1||11502-2^CR d'examens biologiques^LN",
        f"OBX|1|ED|11502-2^CR d'examens biologiques^LN||^TEXT^XML^Base64^{b64}||||||{obx11}|",
        "PRT||UC||SB^^participation|801234567866^DIAZ^Thierry^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
        "|||labo^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^1120459876",
    ]
    values = {code: "N" for code in FLAG_ORDER} | {"DESTDMP": "Y"} | (flags or {})
    for n, code in enumerate(FLAG_ORDER, start=2):
        segs.append(f"OBX|{n}|CE|{code}^label^MetaDMPMSS||{values[code]}^^expandedYes-NoIndicator||||||F|")
    return "\r".join(segs).encode()


def test_unpadded_base64_is_tolerated() -> None:
    doc = _map(_message(pad=False, payload=CDA + b" "))
    assert doc.content == CDA + b" "
    assert decode_base64("QUJD", location="x") == b"ABC"
    assert decode_base64("QUI", location="x") == b"AB"
    with pytest.raises(ParseError):
        decode_base64("Q*==", location="x")


def test_all_flags_map_to_their_codes_with_the_xds_spelling() -> None:
    flags = {"MASQUE_PS": "Y", "INVISIBLE_PATIENT": "Y", "INVISIBLE_REP_LEGAUX": "Y", "DESTDMP": "N"}
    doc = _map(_message(flags=flags))
    assert [c.code for c in doc.confidentiality] == [
        "N",
        "MASQUE_PS",
        "INVISIBLE_PATIENT",
        "INVISIBLE_REPRESENTANTS_LEGAUX",
    ]
    assert doc.flags.dest_dmp is False


@pytest.mark.parametrize(
    ("orc1", "obx11", "action"),
    [
        ("NW", "F", Action.PUBLISH),
        ("RO", "C", Action.REPLACE),
        ("CA", "D", Action.DELETE),
        ("SC", "F", Action.PUBLISH),  # ORC-1 SC (volet V1.2, V2.0): OBX-11 says the action
        ("SC", "C", Action.REPLACE),
        ("SC", "D", Action.DELETE),
    ],
)
def test_action_from_orc1_and_obx11(orc1: str, obx11: str, action: Action) -> None:
    assert _map(_message(orc1=orc1, obx11=obx11)).action is action


def test_inconsistent_or_unknown_action_is_refused() -> None:
    # the same volet rules as the ACK path (ORC-1 / OBX-11 coherence)
    with pytest.raises(ValidationError) as err:
        _map(_message(orc1="NW", obx11="D"))
    assert err.value.location == "OBX^1^11"
    with pytest.raises(ValidationError):
        _map(_message(orc1="XX"))
    with pytest.raises(ValidationError) as err:
        _map(_message(orc1="SC", obx11="X"))
    assert err.value.location == "OBX^1^11"


def test_unsupported_message_type() -> None:
    with pytest.raises(UnsupportedMessageError):
        _map(_message(msh9="ADT^A01^ADT_A01"))


def test_identity_rules_are_applied() -> None:
    with pytest.raises(IdentityError, match="PID-32 is not VALI"):
        _map(_message(pid32="PROV"))
    billing = "279035121518989^^^ASIP-SANTE-NIR&1.2.250.1.213.1.4.8&ISO^NH"
    with pytest.raises(IdentityError, match="no INS"):
        _map(_message(pid3=billing))


def test_payload_that_is_not_cda_is_refused_with_the_obx_location() -> None:
    with pytest.raises(ParseError) as err:
        _map(_message(payload=b"Document medical au format CDA"))
    assert err.value.location == "OBX^1^5^5"
    assert err.value.message.startswith("embedded document (OBX 1):")


def test_two_renderings_need_map_hl7_documents() -> None:
    one = _message().split(b"\r")
    second = one[4].replace(b"OBX|1|", b"OBX|2|")
    two = b"\r".join([*one[:5], second, *one[5:]])
    docs = map_hl7_documents(two, sender_charset=None, test_environment=True, now=NOW, provenance=PROV)
    assert len(docs) == 2
    with pytest.raises(MappingError):
        _map(two)
