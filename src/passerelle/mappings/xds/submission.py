"""Document(s) → ITI-41 ``ProvideAndRegisterDocumentSetRequest`` for the DMP (TD2.1 / TD2.2).

One submission set (``SubmissionSet01``) per call, holding the documents of one patient, then the
signature entry (``Signature01``) whose content is the XAdES signature of the set, the ``HasMember``
associations (``SubmissionSetStatus=Original``), the ``signs`` association signature → set, and an
``RPLC`` association per replacement (target = the registry entryUUID of the version replaced).

Each ``xdsb:Document`` holds an ``xop:Include`` pointing at its MIME part; the parts are returned beside
the body so that the transport packages each document's exact bytes (those the ``hash`` and ``size``
slots describe) in its own part. Identifiers are symbolic (``Document01``…), Content-IDs are derived from
them, so the same inputs give the same request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from lxml import etree

from passerelle.mappings.document import Action, Author, Code, Document, Patient
from passerelle.mappings.xds import ns
from passerelle.mappings.xds.rim import (
    association,
    author_classification,
    author_xcn,
    classification,
    derive_oid,
    dtm,
    element,
    external_identifier,
    institution_xon,
    localized,
    patient_cx,
    q,
    slot,
    source_patient_cx,
    source_patient_info,
    specialty_cwe,
)

SUBMISSION_SET_ID = "SubmissionSet01"
SIGNATURE_ID = "Signature01"


@dataclass(frozen=True)
class Structure:
    """The submitting structure (authentification indirecte: the structure signs and is authenticated)."""

    id: str  # IdNat_Struct (e.g. 1 + FINESS), the OU of its certificates
    name: str
    facility_type: Code  # default healthcareFacilityTypeCode (its activity sector, JDV_J61)
    practice_setting: Code  # default practiceSettingCode (JDV_J04)


@dataclass(frozen=True)
class Submission:
    """What the submission set says beyond its documents. ``author`` defaults to the first document's
    submission author (HL7v2 PRT ``SB``), then to its author."""

    unique_id: str
    source_id: str
    time: datetime
    content_type: Code
    structure: Structure
    author: Author | None = None


@dataclass(frozen=True)
class Part:
    """One MIME part: ``document_id`` is the ExtrinsicObject id, ``content_id`` the part's Content-ID."""

    document_id: str
    content_id: str
    mime_type: str
    content: bytes


@dataclass(frozen=True)
class ProvideRequest:
    body: etree._Element  # xdsb:ProvideAndRegisterDocumentSetRequest
    parts: tuple[Part, ...]
    entry_ids: Mapping[str, str] = field(default_factory=dict)  # document uniqueId → ExtrinsicObject id


def submission_unique_id(docs: Sequence[Document]) -> str:
    """Stable per content: a re-send of the same documents carries the same submission set uniqueId."""
    seed = "|".join(f"{d.action.value}:{d.unique_id}:{d.sha1}" for d in docs)
    return derive_oid(f"submissionset:{seed}")


def signature_unique_id(submission_unique_id: str, signed_at: datetime) -> str:
    """The signature document's uniqueId, one per signing: the signature's bytes change with its signing
    time, and a registry refuses a known uniqueId with other bytes (XDSNonIdenticalHash)."""
    return derive_oid(f"signature:{submission_unique_id}:{signed_at.isoformat()}")


def content_id(document_id: str, submission_unique_id: str) -> str:
    """Content-ID (without angle brackets) of a document's MIME part: ``<id>.<ss uid>@passerelle``."""
    return f"{document_id}.{submission_unique_id}@passerelle"


def check_documents(docs: Sequence[Document]) -> None:
    """Raise ValueError unless ``docs`` are publications/replacements of one patient with an INS."""
    if not docs:
        raise ValueError("an ITI-41 request needs at least one document")
    first = docs[0].patient
    for doc in docs:
        if doc.action is Action.DELETE:
            raise ValueError("a deletion is an ITI-57 update, not an ITI-41 submission")
        if not doc.patient.ins or not doc.patient.ins_oid:
            raise ValueError("a document for the DMP needs the patient's INS")
        if (doc.patient.ins, doc.patient.ins_oid) != (first.ins, first.ins_oid):
            raise ValueError("all documents of one submission set must belong to the same patient")


def build_provide_request(
    docs: Sequence[Document],
    submission: Submission,
    *,
    signature: bytes,
    replaced_entries: Mapping[str, str] | None = None,
) -> ProvideRequest:
    """The ITI-41 body and its parts. ``signature`` is the XAdES document (its own part and entry);
    ``replaced_entries`` maps a replaced document's uniqueId to its registry entryUUID (``urn:uuid:…``).
    Raises ValueError on inputs no request can be built from (see :func:`check_documents`) or when a
    replacement's entryUUID is missing."""
    check_documents(docs)
    replaced_entries = replaced_entries or {}
    root = element("ProvideAndRegisterDocumentSetRequest", ns.XDSB)
    request = etree.SubElement(root, f"{{{ns.LCM}}}SubmitObjectsRequest")
    objects = etree.SubElement(request, q("RegistryObjectList"))
    first = docs[0]
    builder = RegistryObjects(
        objects, submission, first.patient, submission.author or first.submission_author or first.author
    )
    builder.submission_set()
    parts: list[Part] = []
    entry_ids: dict[str, str] = {}
    for index, doc in enumerate(docs, start=1):
        entry_id = f"Document{index:02d}"
        builder.document_entry(doc, entry_id)
        entry_ids[doc.unique_id] = entry_id
        parts.append(Part(entry_id, content_id(entry_id, submission.unique_id), doc.mime_type, doc.content))
    sig_uid = signature_unique_id(submission.unique_id, submission.time)
    builder.signature_entry(sig_uid, signature, docs)
    parts.append(Part(SIGNATURE_ID, content_id(SIGNATURE_ID, submission.unique_id), "text/xml", signature))
    for entry_id in [*entry_ids.values(), SIGNATURE_ID]:
        builder.has_member(entry_id)
    builder.association(ns.SIGNS, SIGNATURE_ID, SUBMISSION_SET_ID, [("SubmissionSetStatus", ["Original"])])
    for doc in docs:
        if doc.action is Action.REPLACE:
            target = replaced_entries.get(doc.replaces)
            if not target:
                raise ValueError("a replacement needs the entryUUID of the version it replaces")
            builder.association(ns.RPLC, entry_ids[doc.unique_id], target, [])
    for part in parts:
        document = etree.SubElement(root, f"{{{ns.XDSB}}}Document", id=part.document_id)
        include = etree.SubElement(document, f"{{{ns.XOP}}}Include", nsmap={"xop": ns.XOP})
        include.set("href", f"cid:{part.content_id}")
    return ProvideRequest(root, tuple(parts), entry_ids)


class RegistryObjects:
    """Appends registry objects to one ``RegistryObjectList``, numbering classification/identifier ids."""

    def __init__(self, objects: etree._Element, submission: Submission, patient: Patient, author: Author) -> None:
        self.objects = objects
        self.submission = submission
        self.patient = patient
        self.author = author
        self.counter = 0
        self.assoc_counter = 0

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter:02d}"

    def submission_set(self) -> None:
        s = self.submission
        package = etree.SubElement(self.objects, q("RegistryPackage"), id=SUBMISSION_SET_ID)
        package.set("objectType", "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage")
        slot(package, "submissionTime", [dtm(s.time)])
        localized(package, "Name", "Lot de soumission")
        author_classification(
            package, ns.SS_AUTHOR, SUBMISSION_SET_ID, self._id("cl"), self._author_slots(self.author, submitter=True)
        )
        classification(package, ns.SS_CONTENT_TYPE, SUBMISSION_SET_ID, self._id("cl"), s.content_type)
        etree.SubElement(
            package,
            q("Classification"),
            classifiedObject=SUBMISSION_SET_ID,
            classificationNode=ns.SS_NODE,
            id=self._id("cl"),
        )
        for scheme, value, name in (
            (ns.SS_PATIENT_ID, patient_cx(self.patient), "XDSSubmissionSet.patientId"),
            (ns.SS_SOURCE_ID, s.source_id, "XDSSubmissionSet.sourceId"),
            (ns.SS_UNIQUE_ID, s.unique_id, "XDSSubmissionSet.uniqueId"),
        ):
            external_identifier(package, scheme, SUBMISSION_SET_ID, self._id("ei"), value, name)

    def _author_slots(self, author: Author, *, submitter: bool = False) -> list[tuple[str, list[str]]]:
        """Author slots; the submission set's institution is always the submitting structure (the one the
        certificates and the VIHF name), a document's is its own organisation when it has one."""
        structure = self.submission.structure
        own = not submitter and bool(author.organisation_id)
        org_id = author.organisation_id if own else structure.id
        org_name = (author.organisation_name or structure.name) if own else structure.name
        return [
            ("authorPerson", [author_xcn(author, structure.id)]),
            ("authorInstitution", [institution_xon(org_name, org_id)]),
            ("authorSpecialty", [specialty_cwe(author)]),
        ]

    def _entry(self, entry_id: str, mime_type: str, times: list[tuple[str, str]]) -> etree._Element:
        entry = etree.SubElement(
            self.objects, q("ExtrinsicObject"), id=entry_id, mimeType=mime_type, objectType=ns.DOC_ENTRY_OBJECT_TYPE
        )
        for name, value in times:
            slot(entry, name, [value])
        return entry

    def document_entry(self, doc: Document, entry_id: str) -> None:
        structure = self.submission.structure
        times = [
            ("creationTime", dtm(doc.creation_time)),
            ("serviceStartTime", dtm(doc.service_start or doc.creation_time)),
        ]
        if doc.service_stop is not None:
            times.append(("serviceStopTime", dtm(doc.service_stop)))
        entry = self._entry(entry_id, doc.mime_type, times)
        slot(entry, "languageCode", [doc.language])
        if doc.legal_authenticator is not None and doc.legal_authenticator.person_id:
            slot(entry, "legalAuthenticator", [author_xcn(doc.legal_authenticator, structure.id)])
        slot(entry, "sourcePatientId", [source_patient_cx(doc.patient)])
        info = source_patient_info(doc.patient)
        if info:
            slot(entry, "sourcePatientInfo", info)
        slot(entry, "hash", [hashlib.sha1(doc.content, usedforsecurity=False).hexdigest()])
        slot(entry, "size", [str(len(doc.content))])
        if doc.reference_ids:
            slot(
                entry,
                "urn:ihe:iti:xds:2013:referenceIdList",
                [_reference_cx(r.value, r.assigner, r.type) for r in doc.reference_ids],
            )
        localized(entry, "Name", doc.title)
        author_classification(entry, ns.DE_AUTHOR, entry_id, self._id("cl"), self._author_slots(doc.author))
        classification(entry, ns.DE_CLASS, entry_id, self._id("cl"), doc.class_code)
        for code in doc.confidentiality or (Code(code="N", system="2.16.840.1.113883.5.25", display="Normal"),):
            classification(entry, ns.DE_CONFIDENTIALITY, entry_id, self._id("cl"), code)
        classification(entry, ns.DE_FORMAT, entry_id, self._id("cl"), doc.format_code)
        classification(entry, ns.DE_FACILITY, entry_id, self._id("cl"), doc.facility_type or structure.facility_type)
        classification(
            entry, ns.DE_PRACTICE, entry_id, self._id("cl"), doc.practice_setting or structure.practice_setting
        )
        classification(entry, ns.DE_TYPE, entry_id, self._id("cl"), doc.type_code)
        self._identifiers(entry, entry_id, doc.unique_id)

    def _identifiers(self, entry: etree._Element, entry_id: str, unique_id: str) -> None:
        external_identifier(
            entry, ns.DE_PATIENT_ID, entry_id, self._id("ei"), patient_cx(self.patient), "XDSDocumentEntry.patientId"
        )
        external_identifier(entry, ns.DE_UNIQUE_ID, entry_id, self._id("ei"), unique_id, "XDSDocumentEntry.uniqueId")

    def signature_entry(self, unique_id: str, content: bytes, docs: Sequence[Document]) -> None:
        """The signature DocumentEntry: fixed codes, the submission time, the set's author, the documents'
        facility and practice codes, visible to nobody (N + MASQUE_PS + INVISIBLE_PATIENT)."""
        structure = self.submission.structure
        when = dtm(self.submission.time)
        times = [("creationTime", when), ("serviceStartTime", when), ("serviceStopTime", when)]
        entry = self._entry(SIGNATURE_ID, "text/xml", times)
        slot(entry, "languageCode", [ns.SIGNATURE_LANGUAGE])
        slot(entry, "legalAuthenticator", [author_xcn(self.author, structure.id)])
        slot(entry, "sourcePatientId", [patient_cx(self.patient)])
        slot(entry, "hash", [hashlib.sha1(content, usedforsecurity=False).hexdigest()])
        slot(entry, "size", [str(len(content))])
        localized(entry, "Name", "Source")
        author_classification(entry, ns.DE_AUTHOR, SIGNATURE_ID, self._id("cl"), self._author_slots(self.author))
        classification(entry, ns.DE_CLASS, SIGNATURE_ID, self._id("cl"), ns.SIGNATURE_CLASS)
        for code in (
            ("N", "2.16.840.1.113883.5.25", "Normal"),
            ("MASQUE_PS", "1.2.250.1.213.1.1.4.13", "Masqué aux professionnels de santé"),
            ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13", "Non visible par le patient"),
        ):
            classification(entry, ns.DE_CONFIDENTIALITY, SIGNATURE_ID, self._id("cl"), code)
        classification(entry, ns.DE_EVENT, SIGNATURE_ID, self._id("cl"), ns.SIGNATURE_EVENT)
        classification(entry, ns.DE_FORMAT, SIGNATURE_ID, self._id("cl"), ns.SIGNATURE_FORMAT)
        classification(
            entry, ns.DE_FACILITY, SIGNATURE_ID, self._id("cl"), docs[0].facility_type or structure.facility_type
        )
        classification(
            entry, ns.DE_PRACTICE, SIGNATURE_ID, self._id("cl"), docs[0].practice_setting or structure.practice_setting
        )
        classification(entry, ns.DE_TYPE, SIGNATURE_ID, self._id("cl"), ns.SIGNATURE_TYPE)
        self._identifiers(entry, SIGNATURE_ID, unique_id)

    def has_member(self, target: str) -> None:
        self.association(ns.HAS_MEMBER, SUBMISSION_SET_ID, target, [("SubmissionSetStatus", ["Original"])])

    def association(self, kind: str, source: str, target: str, slots: list[tuple[str, list[str]]]) -> None:
        self.assoc_counter += 1
        association(self.objects, f"as{self.assoc_counter:02d}", kind, source, target, slots)


def _reference_cx(value: str, assigner: str, kind: str) -> str:
    """referenceIdList CXi: ``<value>^^^&<assigner OID>&ISO^<type URN>`` (assigner may be empty)."""
    authority = f"&{assigner}&ISO" if assigner else ""
    return f"{value}^^^{authority}^{kind}"
