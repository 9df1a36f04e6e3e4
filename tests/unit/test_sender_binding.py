"""Sender binding, pure parts (ADR 0024): principals and their patterns, the MLLP settings and the
certificate-to-senders table, and the HL7v2 intake refusing a sender its connection may not use (with
the in-memory journal, whose contract suite the real journals pass)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from passerelle.connector.intake.binding import Principal, audit_text
from passerelle.connector.intake.hl7 import Hl7Intake, Hl7IntakeSettings
from passerelle.connector.listeners.mllp.settings import MllpTlsSettings
from passerelle.connector.listeners.mllp.tls import ClientIdentity, SenderBindings
from passerelle.mappings.samples.messages import generate_samples
from passerelle.queue.memory import MemoryJournal
from passerelle.queue.model import Query, State

NOW = datetime(2026, 11, 22, 3, 30, tzinfo=UTC)
FP = "ab" * 32


def test_patterns_match_whole_components() -> None:
    p = Principal.of("cert:x", ["LIS^LABO", "RIS^*"])
    assert p.allows("LIS^LABO") and p.allows("RIS^ANY")
    assert not p.allows("LIS^LABO2") and not p.allows("LIS") and not p.allows("LIS^LABO^X")
    assert not p.allows("lis^LABO")  # case-sensitive, as the dedup key
    assert p.first_mismatch("LIS^LABO") is None
    assert p.first_mismatch("OTHER^LABO") == 0  # MSH-3
    assert p.first_mismatch("LIS^OTHER") == 1  # MSH-4
    assert Principal.of("cert:none", []).first_mismatch("LIS^LABO") == 0


def test_the_one_sender_of_a_principal() -> None:
    assert Principal.of("token:lab", ["LABO"]).sender == "LABO"
    assert Principal.of("token:lab", ["A", "B"]).sender == ""
    assert Principal.of("token:lab", ["LIS^*"]).sender == ""


def test_audit_text_keeps_printable_ascii() -> None:
    assert audit_text("LIS\x00^LABO\u00e9") == "LIS?^LABO?"


def tls(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "enabled": True,
        "cert_file": "s.pem",
        "key_file": "s.key",
        "require_client_cert": True,
        "client_ca_file": "ca.pem",
        "allowed_client_subjects": ["lis.example"],
    }
    return {**base, **kw}


def test_bindings_need_mutual_tls() -> None:
    with pytest.raises(ValidationError, match="bindings needs mutual TLS"):
        MllpTlsSettings.model_validate({"bindings": {"lis.example": ["LIS^LABO"]}})
    with pytest.raises(ValidationError, match="bindings needs mutual TLS"):
        MllpTlsSettings.model_validate(tls(require_client_cert=False, bindings={"lis.example": ["LIS^LABO"]}))


@pytest.mark.parametrize("bad", ["LIS", "LIS^LABO^X", "^LABO", "LIS^", " LIS^LABO"])
def test_binding_senders_are_msh3_msh4_pairs(bad: str) -> None:
    with pytest.raises(ValidationError, match=r"MSH-3\.1\^MSH-4\.1"):
        MllpTlsSettings.model_validate(tls(bindings={"lis.example": [bad]}))


def test_certificates_are_named_by_cn_dn_or_fingerprint() -> None:
    settings = MllpTlsSettings.model_validate(
        tls(
            bindings={
                "lis.example": ["LIS^LABO"],
                "CN=lis.example, O=Labo, C=FR": ["LIS^SITE2"],
                ":".join(FP[i : i + 2] for i in range(0, 64, 2)).upper(): ["PINNED^*"],
                "other.example": ["OTHER^X"],
            }
        )
    )
    bindings = SenderBindings.from_settings(settings)
    assert bindings is not None
    # DN in RFC 4514 order: most specific first
    lis = bindings.principal(ClientIdentity("lis.example", "CN=lis.example,O=Labo,C=FR", "00" * 32))
    assert lis.name == "cert:lis.example"
    assert lis.senders == {"LIS^LABO", "LIS^SITE2"}
    elsewhere = bindings.principal(ClientIdentity("lis.example", "CN=lis.example,O=Other,C=FR", "00" * 32))
    assert elsewhere.senders == {"LIS^LABO"}  # the CN entry only: that DN is not the listed one
    pinned = bindings.principal(ClientIdentity("", "O=Nameless", FP))
    assert pinned.senders == {"PINNED^*"} and pinned.name == f"cert:sha256:{FP[:16]}"
    assert bindings.principal(ClientIdentity("stranger", "CN=stranger", "11" * 32)).senders == frozenset()
    assert SenderBindings.from_settings(MllpTlsSettings.model_validate(tls())) is None


@dataclass
class Audit:
    records: list[dict[str, object]] = field(default_factory=list)

    async def record(self, **kw: object) -> None:
        self.records.append(kw)


async def test_intake_refuses_a_sender_its_connection_may_not_use() -> None:
    journal, audit = MemoryJournal(), Audit()
    intake = Hl7Intake(journal.append, Hl7IntakeSettings(test_environment=True), clock=lambda: NOW, audit=audit)
    [sample] = generate_samples(1, seed=3, now=NOW)  # SIL-SYNTH^LABO-SYNTH
    intruder = Principal.of("cert:intruder", ["SIL-SYNTH^OTHER"])
    genuine = Principal.of("cert:sil", ["SIL-SYNTH^LABO-SYNTH"])

    ack = await intake.handle(sample.raw, "10.0.0.9:4000", intruder)
    assert ack is not None
    assert b"MSA|AR|" + sample.control_id.encode() in ack
    assert b"ERR||MSH^1^4|207^" in ack and b"sending facility (MSH-4) not allowed" in ack
    assert audit.records == [
        {
            "action": "refusal",
            "outcome": "refuse",
            "reason": "sender_not_allowed",
            "row_id": 1,
            "actor": "cert:intruder",
            "detail": f"mllp message {sample.control_id} names sender SIL-SYNTH^LABO-SYNTH",
        }
    ]

    # Same bytes from the genuine sender: accepted (the refused row holds no key), then a duplicate.
    assert b"MSA|AA|" in (await intake.handle(sample.raw, "10.0.0.8:4000", genuine) or b"")
    assert b"MSA|AA|" in (await intake.handle_batch([(sample.raw, "10.0.0.8:4000")], genuine))[0] or b""
    rows = await journal.find(Query(limit=10))
    assert [(r.state, r.dedup_key) for r in sorted(rows, key=lambda r: r.id)] == [
        (State.REJECTED, ""),
        (State.ACCEPTED, f"SIL-SYNTH^LABO-SYNTH^{sample.control_id}"),
    ]
    assert len(audit.records) == 1


async def test_no_principal_binds_nothing() -> None:
    journal = MemoryJournal()
    intake = Hl7Intake(journal.append, Hl7IntakeSettings(test_environment=True), clock=lambda: NOW)
    [sample] = generate_samples(1, seed=4, now=NOW)
    assert b"MSA|AA|" in (await intake.handle(sample.raw, "10.0.0.8:4000") or b"")


def test_dedup_key_format_is_unchanged() -> None:
    """Journals written by earlier versions hold keys ``MSH-3.1^MSH-4.1^MSH-10``: a message stored
    before this version must still be recognised as a duplicate, so the key must not change."""
    from passerelle.mappings.hl7v2.decode import decode_message
    from passerelle.mappings.hl7v2.header import read_header

    [sample] = generate_samples(1, seed=5, now=NOW)
    header = read_header(decode_message(sample.raw))
    assert header.dedup_key == f"SIL-SYNTH^LABO-SYNTH^{sample.control_id}"


def test_dicom_bindings_settings() -> None:
    from passerelle.connector.listeners.dicom_scp import DicomSettings

    ok = DicomSettings.model_validate(
        {"bindings": {" CT01 ": {"networks": ["10.1.2.0/24"], "issuers_of_patient_id": ["CHU-A", "*"]}}}
    )
    binding = ok.bindings["CT01"].to_binding()
    assert binding.issuers == {"CHU-A", "*"} and str(binding.networks[0]) == "10.1.2.0/24"
    for bad in (
        {"CT01": {"issuers_of_patient_id": []}},  # say which issuers, or '*'
        {"CT01": {"networks": ["10.1.2.0/24"]}},
        {"CT01": {"issuers_of_patient_id": ["A^B"]}},
        {"X" * 17: {"issuers_of_patient_id": ["*"]}},
        {"CT01": {"issuers_of_patient_id": ["*"], "unknown": 1}},
    ):
        with pytest.raises(ValidationError):
            DicomSettings.model_validate({"bindings": bad})


async def test_cda_intake_journals_the_principals_sender() -> None:
    from passerelle.connector.intake.cda import CdaIntake, CdaIntakeSettings

    journal = MemoryJournal()
    conf = CdaIntakeSettings(test_environment=True)
    intake = CdaIntake(journal.append, conf, channel="http", sender=conf.sender, clock=lambda: NOW)
    first, second, third = generate_samples(3, seed=6, now=NOW)
    assert (await intake.receive(first.cda, principal=Principal.of("token:lab", ["LABO-A"]))).positive
    assert (await intake.receive(second.cda, principal=Principal.of("token:two", ["A", "B"]))).positive
    assert (await intake.receive(third.cda)).positive
    rows = sorted(await journal.find(Query(limit=10)), key=lambda r: r.id)
    assert [r.sender for r in rows] == ["LABO-A", "http", "http"]
