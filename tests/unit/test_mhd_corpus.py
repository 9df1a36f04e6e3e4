"""The bundle builder on documents mapped from the ANS HL7v2 examples (real CDA, real codes):
every bundle is valid FHIR R4 and carries the metadata rule 21 requires."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from passerelle.mappings.document import Action, Code, Provenance
from passerelle.mappings.hl7v2.documents import map_hl7_documents
from passerelle.mappings.mhd.bundle import SubmissionInfo, build_provide_bundle, sha1_base64

V21 = "hl7v2/fr-ans-hl7v2-exemples/Vague_2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1"
MESSAGES = [
    f"{V21}/ORU/Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7",
    f"{V21}/ORU/Remplacement_ORU/message_ORU_CR_Bio_RPLC_N3_SEGUR.hl7",
    f"{V21}/MDM/Transmission_initiale_MDM/message_MDM_CR_Radio_INIT_N1_Base64.er7",
    f"{V21}/MDM/Remplacement_MDM/message_MDM_CR_Radio_RPLC_N1.er7",
]
SUBMISSION = SubmissionInfo(
    source_id="1.2.250.1.999.9",
    submission_time=datetime(2026, 11, 22, 12, 0, tzinfo=UTC),
    content_type=Code(code="04", system="1.2.250.1.213.2.2"),
)


@pytest.mark.parametrize("path", MESSAGES, ids=[p.rsplit("/", 1)[-1] for p in MESSAGES])
def test_ans_documents_make_valid_bundles(corpus_dir: Path, path: str) -> None:
    docs = map_hl7_documents(
        (corpus_dir / path).read_bytes(),
        sender_charset=None,
        test_environment=True,
        now=datetime(2026, 11, 22, 12, 0, tzinfo=UTC),
        provenance=Provenance(channel="mllp"),
    )
    for doc in docs:
        bundle = build_provide_bundle([doc], SUBMISSION)
        Bundle.model_validate(bundle)
        ref = bundle["entry"][1]["resource"]
        attachment = ref["content"][0]["attachment"]
        assert base64.b64decode(bundle["entry"][2]["resource"]["data"]) == doc.content
        assert attachment["hash"] == sha1_base64(doc.content) and attachment["size"] == len(doc.content)
        for key in ("masterIdentifier", "securityLabel", "description", "type", "category"):
            assert key in ref, key
        assert ref["context"]["period"]["start"]
        assert "facilityType" in ref["context"] and "practiceSetting" in ref["context"]
        assert ref["subject"]["identifier"]["system"] == "urn:oid:1.2.250.1.213.1.4.10"
        assert ("relatesTo" in ref) == (doc.action == Action.REPLACE)
