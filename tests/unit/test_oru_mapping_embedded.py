"""The 10 embedded CDAs of the ANS HL7v2 examples: header metadata (docs/interop-reference.md, "XDS metadata"),
unpadded Base64 included."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from passerelle.errors import ParseError
from passerelle.mappings.cda.reader import map_cda
from passerelle.mappings.cda.safe_xml import parse_cda
from passerelle.mappings.hl7v2.decode import decode_message
from passerelle.mappings.hl7v2.documents import embedded_documents

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PDF = "urn:ihe:iti:xds-sd:pdf:2008"
LAB = "urn:ihe:lab:xd-lab:2008"
TEST = ("279035121518989", "1.2.250.1.213.1.4.10")
PROD = ("277076322082910", "1.2.250.1.213.1.4.8")
V21 = "fr-ans-hl7v2-exemples/Vague_2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1"
RADIO = "1.2.250.1.71.4.2.2.120456789.7102400008"

# (file under hl7v2/, OBX index): (uniqueId, type, format, (INS, OID), facility, practice, action, replaces)
EXPECTED = {
    (f"{V21}/MDM/Remplacement_MDM/message_MDM_CR_Radio_RPLC_N1.er7", 1):
        (RADIO + "2", "18748-4", PDF, TEST, "SA07", "ETABLISSEMENT", "replace", RADIO + "1"),
    (f"{V21}/MDM/Suppression_MDM/message_MDM_CR_Radio_DEL_N1.er7", 1):
        (RADIO + "2", "18748-4", PDF, TEST, "SA07", "ETABLISSEMENT", "replace", RADIO + "1"),
    (f"{V21}/MDM/Transmission_initiale_MDM/message_MDM_CR_Radio_INIT_N1_Base64.er7", 1):
        (RADIO + "1", "18748-4", PDF, TEST, "SA07", "ETABLISSEMENT", "publish", ""),
    (f"{V21}/ORU/Remplacement_ORU/message_ORU_CR_Bio_RPLC_N3_SEGUR.hl7", 1):
        ("1.2.250.1.213.1.1.13", "11502-2", LAB, TEST, "SA25", "AMBULATOIRE", "replace", "1.2.250.1.213.1.1.12"),
    (f"{V21}/ORU/Suppression_ORU/message_ORU_CR_Bio_DEL_N3_SEGUR.hl7", 1):
        ("1.2.250.1.213.1.1.12", "11502-2", PDF, PROD, "SA25", "AMBULATOIRE", "replace", "1.2.250.1.213.1.1.10"),
    (f"{V21}/ORU/Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7", 1):
        ("1.2.250.1.213.1.1.9", "11502-2", LAB, TEST, "SA25", "AMBULATOIRE", "publish", ""),
    ("fr-ans-hl7v2-exemples/Vague_2/Trans_LPS_CDA_MSSante/TRANSMISSION_LPS_DOC_CDA_COURRIEL_FROM_MSSANTE_V1.1/"
     "Transmission_initiale_MDM/message_MDM__LPS_MSS_CR_Radio_INIT_N1_Base64.er7", 1):
        (RADIO + "1", "18748-4", PDF, TEST, "SA07", "ETABLISSEMENT", "publish", ""),
    ("fr-ans-hl7v2-exemples/Volets/TRANS_DOC_CDA_HL7V2/V2.1/ORU/Remplacement_ORU/"
     "message_ORU_CR_Bio_RPLC_N1_Base64_N3_Base64.er7", 1):
        ("1.2.250.1.213.1.1.12", "11502-2", PDF, PROD, "SA25", "AMBULATOIRE", "replace", "1.2.250.1.213.1.1.10"),
    ("fr-ans-hl7v2-exemples/Volets/TRANS_DOC_CDA_HL7V2/V2.1/ORU/Remplacement_ORU/"
     "message_ORU_CR_Bio_RPLC_N1_Base64_N3_Base64.er7", 2):
        ("1.2.250.1.213.1.1.11", "11502-2", LAB, PROD, "SA25", "AMBULATOIRE", "publish", ""),
    ("fr-ans-hl7v2-exemples/Volets/Trans_LPS_CDA_MSSante/V1.0/MDM/messageDocB64.hl7", 1):
        ("1.2.250.1.999.1.2022.2050151324.1", "11502-2", PDF, TEST, "SA25", "AMBULATOIRE", "publish", ""),
}  # fmt: skip


@pytest.mark.parametrize(("name", "obx"), sorted(EXPECTED))
def test_embedded_cda_header(corpus_dir: Path, name: str, obx: int) -> None:
    msg = decode_message((corpus_dir / "hl7v2" / name).read_bytes())
    embedded = {e.obx_index: e for e in embedded_documents(msg)}
    doc = map_cda(embedded[obx].content, now=NOW)
    uid, type_code, fmt, (ins, oid), facility, practice, action, replaces = EXPECTED[(name, obx)]
    assert doc.unique_id == uid
    assert doc.type_code.code == type_code and doc.class_code.code == "10"
    assert doc.format_code.code == fmt
    assert (doc.patient.ins, doc.patient.ins_oid) == (ins, oid)
    assert doc.facility_type is not None and doc.facility_type.code == facility
    assert doc.practice_setting is not None and doc.practice_setting.code == practice
    assert (doc.action.value, doc.replaces) == (action, replaces)
    assert doc.mime_type == "text/xml" and [c.code for c in doc.confidentiality] == ["N"]
    assert doc.content.lstrip().startswith(b"<")


def test_the_ten_embedded_documents_are_all_covered(corpus_dir: Path) -> None:
    found = set()
    for path in sorted((corpus_dir / "hl7v2").rglob("*")):
        if not path.is_file() or b"|ED|" not in path.read_bytes():
            continue
        msg = decode_message(path.read_bytes())
        for emb in embedded_documents(msg):
            try:
                parse_cda(emb.content)
            except ParseError:  # placeholders ("Document medical au format CDA") and truncated payloads
                continue
            found.add((str(path.relative_to(corpus_dir / "hl7v2")), emb.obx_index))
    assert found == set(EXPECTED)
