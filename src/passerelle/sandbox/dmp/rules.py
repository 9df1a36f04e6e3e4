"""The metadata rules of an ITI-41 submission, in the spirit of IPF's validators (docs/sandbox.md).

:func:`read_lot` turns the registry objects and the document bytes into a :class:`Lot`, or raises
:class:`~passerelle.sandbox.dmp.common.RegistryFailure` with the IHE code of the first broken rule.
Error contexts name the rule and the object id, never a patient value.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from passerelle.sandbox.dmp import ebrim, valuesets
from passerelle.sandbox.dmp.common import failure
from passerelle.sandbox.dmp.ebrim import Association, Metadata, RegistryObject

METADATA = ebrim.METADATA_ERROR
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
PATIENT_ID = re.compile(r"^([^^&]+)\^\^\^&(1\.2\.250\.1\.213\.1\.4\.[0-9]+)&ISO\^NH$")
DTM = re.compile(r"^[0-9]{4}([0-9]{2}){0,5}$")
IDNAT_STRUCT_OID = "1.2.250.1.71.4.2.2"
SIGNATURE_EVENT = "1.2.840.10065.1.12.1.14"


@dataclass
class Lot:
    """A checked submission: the set, the clinical documents, the signature, the replacements."""

    submission_set: RegistryObject
    patient_id: str
    ins: str
    ins_oid: str
    documents: list[tuple[RegistryObject, bytes]]
    signature: tuple[RegistryObject, bytes]
    #: ExtrinsicObject id -> the entryUUID it replaces
    replacements: dict[str, str]

    @property
    def institutions(self) -> set[str]:
        return institutions(self.submission_set)

    def unique_id(self, obj: RegistryObject) -> str:
        scheme = ebrim.SS_UNIQUE if obj is self.submission_set else ebrim.DE_UNIQUE
        return obj.external.get(scheme, "")


def institutions(obj: RegistryObject) -> set[str]:
    """IdNat_Struct of each authorInstitution XON (component 10 when 6 names the IdNat_Struct OID)."""
    found = set()
    for author in obj.authors:
        for xon in author.get("authorInstitution") or []:
            parts = xon.split("^")
            if len(parts) >= 10 and IDNAT_STRUCT_OID in parts[5] and parts[9]:
                found.add(parts[9])
    return found


def author_person(obj: RegistryObject) -> str | None:
    for author in obj.authors:
        for xcn in author.get("authorPerson") or []:
            if xcn.split("^")[0]:
                return xcn.split("^")[0]
    return None


def read_lot(metadata: Metadata, documents: dict[str, bytes]) -> Lot:
    """Apply every rule of docs/sandbox.md "ITI-41 metadata" and build the :class:`Lot`."""
    ss = _one_submission_set(metadata)
    _check_ids(metadata, ss)
    patient_id = _check_patient(metadata, ss)
    _check_pairing(metadata, documents)
    for entry in metadata.entries:
        _check_entry(entry)
    signature_entry = _signature_entry(metadata)
    _check_associations(metadata, ss, signature_entry)
    for entry in metadata.entries:
        _check_hash(entry, documents[entry.id])
    match = PATIENT_ID.match(patient_id)
    assert match is not None
    clinical = [(e, documents[e.id]) for e in metadata.entries if e is not signature_entry]
    return Lot(
        submission_set=ss,
        patient_id=patient_id,
        ins=match.group(1),
        ins_oid=match.group(2),
        documents=clinical,
        signature=(signature_entry, documents[signature_entry.id]),
        replacements=_replacements(metadata, signature_entry),
    )


def read_update(metadata: Metadata) -> tuple[RegistryObject, str]:
    """ITI-57 metadata update: the SubmissionSet and id rules of ITI-41, one patient, and each new
    DocumentEntry version valid (codes in the value sets, never INVISIBLE_PATIENT + MASQUE_PS).
    Returns the SubmissionSet and the patientId."""
    ss = _one_submission_set(metadata)
    _check_ids(metadata, ss)
    patient_id = _check_patient(metadata, ss)
    for entry in metadata.entries:
        _check_entry(entry)
        if {"INVISIBLE_PATIENT", "MASQUE_PS"} <= {c.code for c in entry.codes_of(ebrim.DE_CONFIDENTIALITY)}:
            raise failure(METADATA, "a clinical document cannot be both INVISIBLE_PATIENT and MASQUE_PS", entry.id)
    return ss, patient_id


def _one_submission_set(metadata: Metadata) -> RegistryObject:
    sets = [p for p in metadata.packages if p.node == ebrim.SUBMISSION_SET_NODE]
    if len(sets) != 1 or len(metadata.packages) != 1:
        raise failure(METADATA, "exactly one RegistryPackage classified as SubmissionSet is required")
    if metadata.others:
        raise failure(METADATA, f"unexpected registry object {metadata.others[0]}")
    ss = sets[0]
    if not institutions(ss):
        raise failure(METADATA, "the SubmissionSet author needs an authorInstitution with an IdNat_Struct", ss.id)
    _check_dtm(ss, "submissionTime", required=True)
    for code in ss.codes_of(ebrim.SS_CONTENT_TYPE) or [ebrim.Code(ebrim.SS_CONTENT_TYPE, "", "")]:
        if not valuesets.known_code(code):
            raise failure(METADATA, "contentTypeCode is not in the value set", ss.id)
    if not ss.external.get(ebrim.SS_SOURCE):
        raise failure(METADATA, "the SubmissionSet has no sourceId", ss.id)
    return ss


def _check_ids(metadata: Metadata, ss: RegistryObject) -> None:
    ids = [o.id for o in [*metadata.packages, *metadata.entries]] + [a.id for a in metadata.associations]
    if len(ids) != len(set(ids)) or not all(ids):
        raise failure(METADATA, "object ids must be present and unique")
    unique_ids = [ss.external.get(ebrim.SS_UNIQUE, "")] + [
        e.external.get(ebrim.DE_UNIQUE, "") for e in metadata.entries
    ]
    for unique_id in unique_ids:
        if not OID.match(unique_id) or len(unique_id) > 64:
            raise failure(METADATA, "each uniqueId must be an OID of at most 64 characters")
    if len(unique_ids) != len(set(unique_ids)):
        raise failure("XDSRegistryDuplicateUniqueIdInMessage", "a uniqueId is used twice in the submission")


def _check_patient(metadata: Metadata, ss: RegistryObject) -> str:
    patient_id = ss.external.get(ebrim.SS_PATIENT, "")
    if not PATIENT_ID.match(patient_id):
        raise failure(METADATA, "patientId must be an INS: <INS>^^^&<INS OID 1.2.250.1.213.1.4.x>&ISO^NH", ss.id)
    for entry in metadata.entries:
        if entry.external.get(ebrim.DE_PATIENT) != patient_id:
            raise failure(
                "XDSPatientIdDoesNotMatch", "the DocumentEntry patientId differs from the SubmissionSet's", entry.id
            )
    return patient_id


def _check_pairing(metadata: Metadata, documents: dict[str, bytes]) -> None:
    entry_ids = {e.id for e in metadata.entries}
    for entry_id in sorted(entry_ids - set(documents)):
        raise failure("XDSMissingDocument", "a DocumentEntry has no Document", entry_id)
    for document_id in sorted(set(documents) - entry_ids):
        raise failure("XDSMissingDocumentMetadata", "a Document has no DocumentEntry", document_id)


def _check_entry(entry: RegistryObject) -> None:
    if entry.attributes.get("objectType") != ebrim.DOCUMENT_ENTRY_TYPE or not entry.attributes.get("mimeType"):
        raise failure(METADATA, "a DocumentEntry needs the stable objectType and a mimeType", entry.id)
    for name in ("sourcePatientId", "languageCode"):
        if not entry.slot(name):
            raise failure(METADATA, f"the {name} slot is missing", entry.id)
    _check_dtm(entry, "creationTime", required=True)
    start = _check_dtm(entry, "serviceStartTime", required=False)
    stop = _check_dtm(entry, "serviceStopTime", required=False)
    if start and stop and start.ljust(14, "0") > stop.ljust(14, "0"):
        raise failure(METADATA, "serviceStartTime is after serviceStopTime", entry.id)
    _check_codes(entry)
    if not entry.authors:
        raise failure(METADATA, "a DocumentEntry needs an author", entry.id)


def _check_codes(entry: RegistryObject) -> None:
    for scheme in valuesets.REQUIRED_ONCE:
        if len(entry.codes_of(scheme)) != 1:
            raise failure(METADATA, f"classification {scheme} must appear exactly once", entry.id)
    if not entry.codes_of(ebrim.DE_CONFIDENTIALITY):
        raise failure(METADATA, "a confidentialityCode is required", entry.id)
    for code in entry.codes:
        if not valuesets.known_code(code):
            raise failure(METADATA, f"a code of {code.scheme} is not in the value set", entry.id)


def _check_dtm(obj: RegistryObject, name: str, *, required: bool) -> str | None:
    value = obj.slot(name)
    if value is None:
        if required:
            raise failure(METADATA, f"the {name} slot is missing", obj.id)
        return None
    if not DTM.match(value) or not _valid_date(value):
        raise failure(METADATA, f"{name} is not a DTM (YYYY[MM[DD[hh[mm[ss]]]]])", obj.id)
    return value


def _valid_date(value: str) -> bool:
    padded = value + "0101000000"[len(value) - 4 :] if len(value) < 14 else value
    try:
        datetime.strptime(padded, "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return True


def _is_signature(entry: RegistryObject) -> bool:
    return any(c.code == valuesets.SIGNATURE_CLASS for c in entry.codes_of(ebrim.DE_CLASS))


def _signature_entry(metadata: Metadata) -> RegistryObject:
    signatures = [e for e in metadata.entries if _is_signature(e)]
    if len(signatures) != 1:
        raise failure(METADATA, "the submission needs exactly one signature DocumentEntry")
    entry = signatures[0]
    expected: list[tuple[str, Callable[[RegistryObject], bool]]] = [
        ("mimeType text/xml", lambda e: e.attributes.get("mimeType") == "text/xml"),
        ("typeCode E1762", lambda e: [c.code for c in e.codes_of(ebrim.DE_TYPE)] == ["E1762"]),
        ("formatCode xmldsig", lambda e: e.codes_of(ebrim.DE_FORMAT)[0].code in valuesets.SIGNATURE_FORMATS),
        ("eventCode Source", lambda e: SIGNATURE_EVENT in {c.code for c in e.codes_of(ebrim.DE_EVENT)}),
        ("languageCode art", lambda e: e.slot("languageCode") == "art"),
        (
            "confidentiality N + MASQUE_PS + INVISIBLE_PATIENT",
            lambda e: {"N", "MASQUE_PS", "INVISIBLE_PATIENT"} <= {c.code for c in e.codes_of(ebrim.DE_CONFIDENTIALITY)},
        ),
    ]
    for what, test in expected:
        if not test(entry):
            raise failure(METADATA, f"the signature DocumentEntry must have {what}", entry.id)
    for other in metadata.entries:
        codes = {c.code for c in other.codes_of(ebrim.DE_CONFIDENTIALITY)}
        if other is not entry and {"INVISIBLE_PATIENT", "MASQUE_PS"} <= codes:
            raise failure(METADATA, "a clinical document cannot be both INVISIBLE_PATIENT and MASQUE_PS", other.id)
    return entry


def _check_associations(metadata: Metadata, ss: RegistryObject, signature: RegistryObject) -> None:
    members: dict[str, Association] = {}
    for association in metadata.associations:
        if association.type == HAS_MEMBER and association.source == ss.id:
            if association.slots.get("SubmissionSetStatus") != ["Original"]:
                raise failure(METADATA, "HasMember needs SubmissionSetStatus=Original", association.id)
            members[association.target] = association
        elif association.type not in (SIGNS, RPLC):
            raise failure(METADATA, "unexpected association type", association.id)
    for entry in metadata.entries:
        if entry.id not in members:
            raise failure(METADATA, "a DocumentEntry is not a member of the SubmissionSet", entry.id)
    signs = [a for a in metadata.associations if a.type == SIGNS]
    if len(signs) != 1 or signs[0].source != signature.id or signs[0].target != ss.id:
        raise failure(METADATA, "exactly one signs association from the signature entry to the SubmissionSet")


def _replacements(metadata: Metadata, signature: RegistryObject) -> dict[str, str]:
    result: dict[str, str] = {}
    entry_ids = {e.id for e in metadata.entries if e is not signature}
    for association in metadata.associations:
        if association.type != RPLC:
            continue
        if association.source not in entry_ids or association.source in result:
            raise failure(METADATA, "an RPLC association must start from one clinical DocumentEntry", association.id)
        if not association.target.startswith("urn:uuid:"):
            raise failure(METADATA, "an RPLC association must target an entryUUID", association.id)
        result[association.source] = association.target
    return result


def _check_hash(entry: RegistryObject, data: bytes) -> None:
    """``hash``/``size``, when sent, are the SHA-1 (hex, any case) and byte length of the part."""
    digest = entry.slot("hash")
    if digest is not None and digest.lower() != hashlib.sha1(data, usedforsecurity=False).hexdigest():
        raise failure("XDSRepositoryMetadataError", "hash is not the SHA-1 of the document part", entry.id)
    size = entry.slot("size")
    if size is not None and size != str(len(data)):
        raise failure("XDSRepositoryMetadataError", "size is not the byte length of the document part", entry.id)
