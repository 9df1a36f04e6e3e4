"""Synthetic HL7v2 messages for tests, demos and benchmarks (never real patients).

``generate_samples`` writes CI-SIS volet ORU^R01 messages that embed a CDA R2 lab report with the
structuration-minimale header (docs/interop-reference.md, "CI-SIS volet" and "CDA header"); patients
are synthetic, with a test INS under 1.2.250.1.213.1.4.10 and a valid NIR key. Everything is deterministic for a seed and ``now``.
The builders (:func:`build_oru`, :func:`build_mdm`, :func:`build_lab_results`, :func:`build_adt_consent`)
are parameterised so tests elsewhere take their messages from here.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lxml import etree

from passerelle.mappings.cda import writer as w
from passerelle.mappings.document import INS_NIR_TEST_OID, Action, Flags, Lineage
from passerelle.mappings.hl7v2.ack import escape as hl7_escape
from passerelle.mappings.hl7v2.decode import CHARSETS, DEFAULT_DELIMITERS
from passerelle.mappings.identity.ins import with_key
from passerelle.mappings.lab.cda import TITLE as LAB_TITLE
from passerelle.mappings.lab.cda import TYPE_CODE as LAB_TYPE_CODE
from passerelle.mappings.lab.model import BIOLOGIST, FACILITY_LAB
from passerelle.mappings.samples.lab import CHEMISTRY

_FAMILY = (
    "MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "PETIT", "DURAND", "LEROY",
    "MOREAU", "SIMON", "LAURENT", "LEFEBVRE", "MICHEL", "GARCIA", "DAVID", "BERTRAND", "ROUX",
    "VINCENT", "FOURNIER", "MOREL", "GIRARD", "ANDRÉ", "LEFÈVRE", "MERCIER", "FRANÇOIS",
)  # fmt: skip
_GIVEN_F = ("Hélène", "Françoise", "Zoé", "Chloë", "Léa", "Manon", "Inès", "Camille", "Anaïs", "Noémie")
_GIVEN_M = ("Jérôme", "François", "Noël", "Loïc", "Hugo", "Théo", "Raphaël", "Gaël", "André", "Joël")
#: (COG code of the birth place, city) - real communes, synthetic people.
_PLACES = (("75056", "PARIS"), ("69123", "LYON"), ("13055", "MARSEILLE"), ("31555", "TOULOUSE"),
           ("33063", "BORDEAUX"), ("59350", "LILLE"), ("44109", "NANTES"), ("67482", "STRASBOURG"))  # fmt: skip

ORU_ACTIONS = {"NW": "F", "RO": "C", "CA": "D"}
MDM_TRIGGERS = {"T02": ("NW", "F"), "T10": ("RO", "C"), "T04": ("CA", "D")}
LAB_TYPE = ("11502-2", "CR d'examens biologiques", "LN")

SENDER_RPPS = "810101010101"  # synthetic IdNat_PS (8 + 11 digits)
SENDER_FINESS = "1750000000"  # synthetic IdNat_Struct (1 + FINESS)
IPP_OID = "1.2.250.1.999.1.1"  # synthetic facility arc used for IPPs and visit numbers


@dataclass(frozen=True, slots=True)
class SyntheticPatient:
    family: str
    given: str  # first birth given name
    given_all: str  # full list of birth given names
    sex: str  # M / F
    birth_date: str  # YYYYMMDD
    birth_place: str  # COG code (5 characters)
    birth_city: str
    ins: str  # matricule INS with key (test NIR)
    ipp: str
    ins_oid: str = INS_NIR_TEST_OID


#: The ANS public test identity used in the CI-SIS examples (test INS OID .10): synthetic, not a person.
ANS_TEST_PATIENT = SyntheticPatient(
    family="PAT-TROIS",
    given="DOMINIQUE",
    given_all="DOMINIQUE MARIE-LOUISE",
    sex="F",
    birth_date="19790328",
    birth_place="51215",
    birth_city="DOMPREMY",
    ins="279035121518989",
    ipp="1234567890121",
)


@dataclass(frozen=True, slots=True)
class Sample:
    name: str  # file name
    raw: bytes
    control_id: str
    document_id: str  # CDA ClinicalDocument/id/@root (root-only OID)
    set_id: str
    patient: SyntheticPatient
    cda: bytes = b""
    replaces: str = ""  # previous version's id (order control RO)


@dataclass(frozen=True, slots=True)
class Sender:
    """The synthetic sending system: MSH-3/4 and the receiver it addresses (MSH-5/6), the biologist and
    laboratory it sends for (PRT, CDA author and custodian), and how it writes its messages."""

    application: str = "SIL-SYNTH"
    facility: str = "LABO-SYNTH"
    receiver_application: str = "PASSERELLE"
    receiver_facility: str = "GHT-SYNTH"
    rpps: str = SENDER_RPPS
    family: str = "BIOLOGISTE"
    given: str = "Claire"
    finess: str = SENDER_FINESS
    organisation: str = "Laboratoire synthétique"
    charset: str = "UNICODE UTF-8"  # MSH-18, and the encoding of the bytes
    separator: str = "\r"  # segment terminator


def synthetic_patient(rng: random.Random, index: int = 0) -> SyntheticPatient:
    """A synthetic patient with a test NIR (valid key) and the 5 INS traits."""
    sex = rng.choice("MF")
    given_pool = _GIVEN_M if sex == "M" else _GIVEN_F
    first = rng.choice(given_pool)
    second = rng.choice(given_pool)
    year = rng.randint(1930, 2015)
    month = rng.randint(1, 12)
    day = rng.randint(1, 28)
    place, city = rng.choice(_PLACES)
    order = rng.randint(1, 999)
    first13 = f"{1 if sex == 'M' else 2}{year % 100:02d}{month:02d}{place}{order:03d}"
    return SyntheticPatient(
        family=rng.choice(_FAMILY),
        given=first,
        given_all=f"{first} {second}" if second != first else first,
        sex=sex,
        birth_date=f"{year:04d}{month:02d}{day:02d}",
        birth_place=place,
        birth_city=city,
        ins=with_key(first13),
        ipp=f"{rng.randint(10**8, 10**9 - 1)}",
    )


def root_only_oid(rng: random.Random) -> str:
    """A root-only OID under 2.25 (UUID arc), as the DMP wants for document ids."""
    return f"2.25.{uuid.UUID(int=rng.getrandbits(128), version=4).int}"


def _ts(now: datetime) -> str:
    return now.strftime("%Y%m%d%H%M%S")


def _flags_obx(flags: Flags, start: int, value_type: str) -> list[str]:
    yn = "expandedYes-NoIndicator"
    rows = [
        ("MASQUE_PS", "Masqué aux professionnels de Santé", flags.masque_ps),
        ("INVISIBLE_PATIENT", "Document Non Visible par le patient", flags.invisible_patient),
        ("INVISIBLE_REP_LEGAUX", "Non visible par les représentants Légaux du patient", flags.invisible_rep_legaux),
        ("CONNEXION_SECRETE", "Connexion Secrete", flags.connexion_secrete),
        ("MODIF_CONF_CODE", "Modification Confidentiality Code", flags.modif_conf_code),
        ("DESTDMP", "Destinataire DMP", flags.dest_dmp),
        ("DESTMSSANTEPS", "Destinataire (Professionnel de Santé, organisation ou BAL applicative)",
         flags.dest_mssante_ps),
        ("DESTMSSANTEPAT", "Destinataire Patient", flags.dest_mssante_pat),
        ("ACK_RECEPTION", "Accusé de réception", flags.ack_reception),
    ]  # fmt: skip
    if flags.ack_lecture_mss:
        rows.append(("ACK_LECTURE_MSS", "Accusé de lecture", True))
    d = DEFAULT_DELIMITERS
    return [
        f"OBX|{start + i}|{value_type}|{code}^{hl7_escape(label, d)}^MetaDMPMSS||{'Y' if on else 'N'}^^{yn}||||||F|"
        for i, (code, label, on) in enumerate(rows)
    ]


def _pid(p: SyntheticPatient, sender: Sender) -> str:
    fields = [""] * 33
    fields[0] = "PID"
    fields[3] = f"{p.ins}^^^ASIP-SANTE-INS-NIR&{p.ins_oid}&ISO^INS~{p.ipp}^^^{sender.facility}&{IPP_OID}&ISO^PI"
    fields[5] = f"{p.family}^{p.given}^{p.given_all.replace(' ', ',')}^^^^L"
    fields[7] = p.birth_date
    fields[8] = p.sex
    fields[11] = f"^^{p.birth_city}^^^FRA^BDL^^{p.birth_place}"  # PAM FR: birth place, XAD-9 = COG code
    fields[32] = "VALI"
    return "|".join(fields)


def _prt_sender(sender: Sender) -> str:
    return (
        f"PRT||UC||SB^Send by^participation|{sender.rpps}^{sender.family}^{sender.given}"
        f"^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS|||"
        f"{hl7_escape(sender.organisation, DEFAULT_DELIMITERS)}^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO"
        f"^FINEG^^^{sender.finess}"
    )


#: MSH-21 of the volet "Transmission de document(s) CDA en HL7v2" V2.1.
VOLET_PROFILE = "2.1^CISIS_CDA_HL7_V2"


def _msh(sender: Sender, ts: str, message_type: str, control_id: str, version: str, profile: str = "") -> str:
    return (
        f"MSH|^~\\&|{sender.application}|{sender.facility}|{sender.receiver_application}|"
        f"{sender.receiver_facility}|{ts}||{message_type}|{control_id}|P|{version}|||||FRA|{sender.charset}"
        + (f"|||{profile}" if profile else "")
    )


def _pv1(patient: SyntheticPatient, sender: Sender, patient_class: str = "O") -> str:
    return f"PV1|1|{patient_class}|||||||||||||||||V{patient.ipp}^^^{sender.facility}&{IPP_OID}&ISO^VN"


def _order_numbers(control_id: str, sender: Sender) -> str:
    """ORC-2/OBR-2 (placer) and ORC-3/OBR-3 (filler) of the synthetic order."""
    return f"P{control_id}^{sender.application}|F{control_id}^{sender.facility}"


def _document_obx(cda: bytes, status: str, text: str) -> str:
    code, label, system = LAB_TYPE
    b64 = base64.b64encode(cda).decode("ascii")
    return f"OBX|1|ED|{code}^{label}^{system}||^{text}^XML^Base64^{b64}||||||{status}|"


def _encode(segments: Sequence[str], sender: Sender) -> bytes:
    codec = CHARSETS[sender.charset]
    return (sender.separator.join(segments) + sender.separator).encode(codec)


def build_oru(
    *,
    now: datetime,
    control_id: str,
    patient: SyntheticPatient,
    document_id: str,
    set_id: str,
    version: int = 1,
    order_control: str = "NW",
    flags: Flags | None = None,
    sender: Sender | None = None,
    replaces: str = "",
    with_sender_prt: bool = True,
    cda: bytes | None = None,
) -> tuple[bytes, bytes]:
    """One volet ORU^R01 (v2.5) message and its embedded CDA. ``order_control`` NW / RO / CA."""
    sender = sender or Sender()
    flags = flags if flags is not None else Flags(ack_reception=True)
    status = ORU_ACTIONS[order_control]
    if cda is None:
        cda = build_sample_cda(
            now=now, patient=patient, document_id=document_id, set_id=set_id, version=version,
            sender=sender, replaces=replaces,
        )  # fmt: skip
    code, label, system = LAB_TYPE
    ts = _ts(now)
    order = _order_numbers(control_id, sender)
    segments = [
        _msh(sender, ts, "ORU^R01^ORU_R01", control_id, "2.5", VOLET_PROFILE),
        _pid(patient, sender),
        _pv1(patient, sender),
        f"ORC|{order_control}|{order}||||||{ts}",
        f"OBR|1|{order}|{code}^{label}^{system}|||{ts}||||||||||||||||||F",
        _document_obx(cda, status, "TEXT"),
    ]
    if with_sender_prt:
        segments.append(_prt_sender(sender))
    segments += _flags_obx(flags, 2, "CE")
    return _encode(segments, sender), cda


def build_mdm(
    *,
    now: datetime,
    control_id: str,
    patient: SyntheticPatient,
    document_id: str,
    set_id: str,
    trigger: str = "T02",
    flags: Flags | None = None,
    sender: Sender | None = None,
    replaces: str = "",
) -> tuple[bytes, bytes]:
    """One volet MDM^T02/T10/T04 (v2.6) message and its embedded CDA."""
    sender = sender or Sender()
    flags = flags if flags is not None else Flags(ack_reception=True)
    order_control, status = MDM_TRIGGERS[trigger]
    cda = build_sample_cda(
        now=now, patient=patient, document_id=document_id, set_id=set_id, sender=sender, replaces=replaces
    )
    code, label, system = LAB_TYPE
    ts = _ts(now)
    order = _order_numbers(control_id, sender)
    segments = [
        _msh(sender, ts, f"MDM^{trigger}^MDM_T02", control_id, "2.6", VOLET_PROFILE),
        f"EVN||{ts}",
        _pid(patient, sender),
        _pv1(patient, sender),
        f"ORC|{order_control}|{order}",
        f"OBR|1|{order}|{code}^{label}^{system}",
        f"TXA|1|{code}^{label}^{system}|TEXT|{ts}||||||||{document_id}|{replaces}||||AU",
        _document_obx(cda, status, "text"),
        _prt_sender(sender),
        *_flags_obx(flags, 2, "CWE"),
    ]
    return _encode(segments, sender), cda


def build_lab_results(
    *,
    now: datetime,
    control_id: str,
    patient: SyntheticPatient,
    sender: Sender | None = None,
) -> bytes:
    """An IHE LAB-3 ORU^R01 (v2.5.1) with discrete results (no embedded document)."""
    sender = sender or Sender()
    ts = _ts(now)
    order = _order_numbers(control_id, sender)
    segments = [
        _msh(sender, ts, "ORU^R01^ORU_R01", control_id, "2.5.1"),
        _pid(patient, sender),
        _pv1(patient, sender),
        f"ORC|SC|{order}||CM",
        f"OBR|1|{order}|24326-1^Électrolytes^LN|||{ts}||||||||||||||||||F",
        "OBX|1|NM|2951-2^Sodium [Moles/volume] Serum/Plasma^LN||140|mmol/L^mmol/L^UCUM|135-145|N|||F",
        "OBX|2|NM|2823-3^Potassium [Moles/volume] Serum/Plasma^LN||4.1|mmol/L^mmol/L^UCUM|3.5-5.0|N|||F",
    ]
    return _encode(segments, sender)


def build_adt_consent(
    *,
    now: datetime,
    control_id: str,
    patient: SyntheticPatient,
    dmp_status: str = "ACTIF",
    feeding: str = "INO",
    consultation: str = "IC",
    sender: Sender | None = None,
) -> bytes:
    """A PAM France ADT^A01 (v2.5) carrying ZFA (DMP status and consents)."""
    sender = sender or Sender(application="GAM-SYNTH", facility="CH-SYNTH")
    ts = _ts(now)
    segments = [
        _msh(sender, ts, "ADT^A01^ADT_A01", control_id, "2.5^FRA^2.11", "2.11^IHE_FRANCE-2.11-PAM"),
        f"EVN||{ts}",
        _pid(patient, sender),
        _pv1(patient, sender, "I"),
        f"ZFA|{dmp_status}|{ts}|||||||{feeding}|{ts if feeding else ''}|{consultation}|{ts if consultation else ''}",
    ]
    return _encode(segments, sender)


def build_sample_cda(
    *,
    now: datetime,
    patient: SyntheticPatient,
    document_id: str,
    set_id: str,
    version: int = 1,
    sender: Sender | None = None,
    replaces: str = "",
) -> bytes:
    """A CDA R2 lab report (structured body with one narrative section) with the structuration
    minimale header: recordTarget with the INS and its 5 traits, author, custodian,
    legalAuthenticator, documentationOf/serviceEvent/performer, componentOf/encompassingEncounter
    (healthCareFacility SA25), setId, versionNumber, confidentialityCode N."""
    s = sender or Sender()
    organisation = w.Organisation(id=s.finess, name=s.organisation)
    biologist = w.Professional(
        id=s.rpps,
        family=s.family,
        given=s.given,
        role=BIOLOGIST,
        address=w.Address(city="PARIS"),
        telecom=("tel:0100000000",),
        organisation=organisation,
    )
    lineage = Lineage(document_id, set_id, version, Action.REPLACE if replaces else Action.PUBLISH, replaces)
    doc = w.new_document()
    w.header(doc, w.Header((), lineage, LAB_TYPE_CODE, LAB_TITLE, now))
    w.parties(doc, _record_target(patient), biologist, organisation, now)
    event = w.service_event(doc)
    w.code(event, "code", CHEMISTRY)
    w.span(event, now, now)
    w.performer(event, biologist)
    w.related_document(doc, lineage)
    w.encompassing_encounter(doc, now, FACILITY_LAB)
    section = w.el(w.el(w.el(w.el(doc, "component"), "structuredBody"), "component"), "section")
    w.code(section, "code", CHEMISTRY)
    w.el(section, "title", CHEMISTRY.display)
    _results_table(w.el(section, "text"))
    return w.serialise(doc, pretty=True)


def _record_target(patient: SyntheticPatient) -> w.RecordTarget:
    return w.RecordTarget(
        ids=((patient.ins_oid, patient.ins), (IPP_OID, patient.ipp)),
        birth_family=patient.family,
        birth_given_names=patient.given_all,
        first_birth_given=patient.given,
        sex=patient.sex,
        birth_date=patient.birth_date,
        birthplace=w.Birthplace(county=patient.birth_place, city=patient.birth_city),
    )


def _results_table(text: etree._Element) -> None:
    table = w.el(text, "table")
    head = w.el(w.el(table, "thead"), "tr")
    for title in ("Examen", "Résultat", "Unité", "Valeurs de référence"):
        w.el(head, "th", title)
    body = w.el(table, "tbody")
    for cells in (("Sodium", "140", "mmol/L", "135-145"), ("Potassium", "4,1", "mmol/L", "3,5-5,0")):
        row = w.el(body, "tr")
        for cell in cells:
            w.el(row, "td", cell)


@dataclass(frozen=True, slots=True)
class SampleOptions:
    order_control: str = "NW"
    flags: Flags = field(default_factory=lambda: Flags(ack_reception=True))
    sender: Sender = field(default_factory=Sender)
    patient: SyntheticPatient | None = None  # same patient for every sample (one lane); None = random ones


def generate_samples(count: int, seed: int, now: datetime, options: SampleOptions | None = None) -> list[Sample]:
    """``count`` volet ORU^R01 messages, deterministic for (``count``, ``seed``, ``now``, ``options``)."""
    opts = options or SampleOptions()
    rng = random.Random(seed)
    samples: list[Sample] = []
    for i in range(count):
        drawn = synthetic_patient(rng, i)  # always drawn, so ids do not depend on the option
        patient = opts.patient or drawn
        document_id = root_only_oid(rng)
        set_id = root_only_oid(rng)
        control_id = f"S{seed % 10_000:04d}{i:06d}"
        # a replacement points at a (synthetic) previous version of the same set
        replaces = root_only_oid(rng) if opts.order_control == "RO" else ""
        raw, cda = build_oru(
            now=now,
            control_id=control_id,
            patient=patient,
            document_id=document_id,
            set_id=set_id,
            version=2 if replaces else 1,
            replaces=replaces,
            order_control=opts.order_control,
            flags=opts.flags,
            sender=opts.sender,
        )
        samples.append(
            Sample(f"{i:05d}_{control_id}.hl7", raw, control_id, document_id, set_id, patient, cda, replaces)
        )
    return samples


def write_samples(
    out_dir: Path, count: int, seed: int, now: datetime, options: SampleOptions | None = None
) -> list[Path]:
    """Write one message per file (``NNNNN_<MSH-10>.hl7``) into ``out_dir`` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample in generate_samples(count, seed, now, options):
        path = out_dir / sample.name
        path.write_bytes(sample.raw)
        paths.append(path)
    return paths
