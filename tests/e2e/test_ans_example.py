"""The ANS CI-SIS example ORU (CR-BIO N3, LF separators) goes over real MLLP to the gateway process
and ends up in the sandbox with the metadata the DMP expects."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import documents_for
from tests.support.waiting import poll_sync

SEGUR = (
    "hl7v2/fr-ans-hl7v2-exemples/Vague_2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1/ORU/"
    "Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"
)
INS = "279035121518989"


def wait_for_documents(sandbox, ins: str, n: int, timeout: float = 30.0) -> list[dict]:
    return poll_sync(lambda: documents_for(sandbox, ins), lambda docs: len(docs) >= n, timeout)


def passerelle_send(port: int, *files: Path) -> list[list[str]]:
    out = subprocess.run(
        [sys.executable, "-m", "passerelle", "send", "--host", "127.0.0.1", "--port", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return [line.split("\t") for line in out.stdout.splitlines()]


def codes(resource: dict, key: str) -> set[str]:
    value = resource[key]
    items = value if isinstance(value, list) else [value]
    return {c["code"] for item in items for c in item.get("coding", [])}


@pytest.mark.corpus
def test_ans_segur_oru_is_delivered_with_dmp_metadata(corpus_dir, sandbox, gateway_factory, tmp_path) -> None:
    raw = (corpus_dir / SEGUR).read_bytes()
    assert b"\r" not in raw.split(b"OBX|1|ED")[0]  # the example separates segments with LF
    # A second copy of the same document flagged INVISIBLE_PATIENT (new MSH-10 and document id are not
    # needed: it is a different message of the same document; the space keeps one document).
    gw = gateway_factory(sandbox.fhir)
    lines = passerelle_send(gw.mllp_port, corpus_dir / SEGUR)
    assert lines == [["AA", "015", str(corpus_dir / SEGUR)]]
    [doc] = wait_for_documents(sandbox, INS, 1)
    assert codes(doc, "type") == {"11502-2"}
    assert doc["content"][0]["format"]["code"] == "urn:ihe:lab:xd-lab:2008"
    subject = doc["subject"]["identifier"]
    assert subject == {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": INS}
    # Flags MASQUE_PS / INVISIBLE_PATIENT / INVISIBLE_REP_LEGAUX are all N in this example: only the
    # CDA confidentiality code is carried.
    assert codes(doc, "securityLabel") == {"N"}

    # Resending the same bytes replays the ACK and creates nothing new.
    assert passerelle_send(gw.mllp_port, corpus_dir / SEGUR) == [["AA", "015", str(corpus_dir / SEGUR)]]
    time.sleep(1.0)
    assert len(documents_for(sandbox, INS)) == 1


@pytest.mark.corpus
def test_visibility_flags_become_security_labels(corpus_dir, sandbox, gateway_factory, tmp_path) -> None:
    raw = (corpus_dir / SEGUR).read_bytes()
    flagged = raw.replace(b"|015|P|", b"|016|P|").replace(
        b"INVISIBLE_PATIENT^Document Non Visible par le patient^MetaDMPMSS||N^",
        b"INVISIBLE_PATIENT^Document Non Visible par le patient^MetaDMPMSS||Y^",
    )
    assert flagged != raw
    path = tmp_path / "flagged.hl7"
    path.write_bytes(flagged)
    gw = gateway_factory(sandbox.fhir)
    assert passerelle_send(gw.mllp_port, path) == [["AA", "016", str(path)]]
    [doc] = wait_for_documents(sandbox, INS, 1)
    assert codes(doc, "securityLabel") == {"N", "INVISIBLE_PATIENT"}
    # What the patient sees: nothing; what a professional sees: the document.
    assert documents_for(sandbox, INS, actor="patient") == []
