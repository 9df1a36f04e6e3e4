"""The document model: one XDS DocumentEntry / MHD DocumentReference plus its content.

Every source (embedded CDA in HL7v2, generated CR-BIO, CDA file, DICOM KOS/SR) maps into a
:class:`Document`; every patient-space adapter maps out of it. Nothing else is passed between
mapping and delivery. The model is pure data: no I/O, no clock, no settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field

# Code systems and OIDs used across the mappings (docs/interop-reference.md).
INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"
INS_NIR_TEST_OID = "1.2.250.1.213.1.4.10"
INS_NIR_DEMO_OID = "1.2.250.1.213.1.4.11"
PRODUCTION_INS_OIDS = frozenset({INS_NIR_OID, INS_NIA_OID})
TEST_INS_OIDS = frozenset({INS_NIR_TEST_OID, INS_NIR_DEMO_OID})

LOINC = "2.16.840.1.113883.6.1"
CONFIDENTIALITY_HL7 = "2.16.840.1.113883.5.25"
CONFIDENTIALITY_CISIS = "1.2.250.1.213.1.1.4.13"
CLASS_CODE_SYSTEM = "1.2.250.1.213.1.1.4.1"  # TRE_A03-ClasseDocument
FACILITY_TYPE_SYSTEM = "1.2.250.1.71.4.2.4"  # TRE_R02-SecteurActivite
PRACTICE_SETTING_SYSTEM = "1.2.250.1.213.1.1.4.9"  # TRE_A01 (J04)
FORMAT_IHE_SYSTEM = "1.3.6.1.4.1.19376.1.2.3"  # TRE_A11
FORMAT_DICOM_SYSTEM = "1.2.840.10008.2.6.1"  # TRE_A09
LOCAL_TYPE_SYSTEM = "1.2.250.1.213.1.1.4.12"  # TRE_A05 (IMG-KOS...)
PS_ID_OID = "1.2.250.1.71.4.2.1"  # IdNat_PS
STRUCTURE_ID_OID = "1.2.250.1.71.4.2.2"  # IdNat_Struct
PROFESSION_SYSTEM = "1.2.250.1.213.1.1.4.5"  # TRE_G15
# referenceIdList types (IHE ITI TF-3 4.2.3.2.28), with the issuer OID as assigner.
REF_ACCESSION = "urn:ihe:iti:xds:2013:accession"
REF_ORDER = "urn:ihe:iti:xds:2013:order"
REF_STUDY = "urn:ihe:iti:xds:2016:studyInstanceUID"

#: An OID (ITU-T X.660 dotted form, no leading zero in an arc); XDS caps identifiers at 64 characters.
OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
MAX_OID_LENGTH = 64


def is_oid(value: str) -> bool:
    """True for an OID of at most :data:`MAX_OID_LENGTH` characters (document ids, set ids, roots)."""
    return len(value) <= MAX_OID_LENGTH and bool(OID_RE.match(value))


# Visibility codes (XDS spelling; the HL7v2 flag INVISIBLE_REP_LEGAUX maps to the third one).
MASQUE_PS = "MASQUE_PS"
INVISIBLE_PATIENT = "INVISIBLE_PATIENT"
INVISIBLE_REPRESENTANTS_LEGAUX = "INVISIBLE_REPRESENTANTS_LEGAUX"
VISIBILITY_CODES = frozenset({MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX})


class Action(StrEnum):
    PUBLISH = "publish"
    REPLACE = "replace"
    DELETE = "delete"


class Code(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    system: str
    display: str = ""


class IdentityStatus(StrEnum):
    """RNIV trust level as far as the sender told us (PID-32 in HL7v2)."""

    QUALIFIED = "qualified"  # INS from INSi + identity validated (PID-32 = VALI)
    PROVISIONAL = "provisional"
    UNKNOWN = "unknown"


class Patient(BaseModel):
    model_config = ConfigDict(frozen=True)

    ins: str = ""  # matricule INS (15 characters, key included); empty when none is usable
    ins_oid: str = ""
    identity_status: IdentityStatus = IdentityStatus.UNKNOWN
    local_id: str = ""  # IPP
    local_id_oid: str = ""
    family: str = ""
    given: str = ""
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""  # M / F / U
    minor: bool = False

    @property
    def xds_patient_id(self) -> str:
        """XDS patientId CX: ``<matricule>^^^&<OID>&ISO^NH`` (docs/interop-reference.md, "INS")."""
        return f"{self.ins}^^^&{self.ins_oid}&ISO^NH"


class Author(BaseModel):
    model_config = ConfigDict(frozen=True)

    person_id: str = ""  # IdNat_PS (8 + RPPS...) under PS_ID_OID
    family: str = ""
    given: str = ""
    role: Code | None = None  # profession / specialty (TRE_G15...)
    organisation_id: str = ""  # IdNat_Struct (1 + FINESS...) under STRUCTURE_ID_OID
    organisation_name: str = ""
    device: str = ""  # for non-human authors (automate, software)


class ReferenceId(BaseModel):
    model_config = ConfigDict(frozen=True)

    value: str
    type: str  # REF_ACCESSION | REF_ORDER | REF_STUDY
    assigner: str = ""


class KindFields(TypedDict):
    type_code: Code
    class_code: Code
    format_code: Code
    mime_type: str


@dataclass(frozen=True, slots=True)
class DocumentKind:
    """What a document is for the patient space: its XDS typeCode, classCode, formatCode and mimeType."""

    type_code: Code
    class_code: Code
    format_code: Code
    mime_type: str = "text/xml"

    def fields(self) -> KindFields:
        """The kind as keyword arguments of a :class:`Document` (``Document(**kind.fields(), ...)``)."""
        return cast(KindFields, _keywords(self))


class LineageFields(TypedDict):
    unique_id: str
    set_id: str
    version: int
    action: Action
    replaces: str


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where one version stands in its document set: its id, the set's id, its number and what it does to
    the version before it. Written into the CDA header (id, setId, versionNumber, relatedDocument RPLC)
    and into the XDS metadata (the first five fields of a :class:`Document`)."""

    unique_id: str
    set_id: str
    version: int = 1
    action: Action = Action.PUBLISH
    replaces: str = ""  # the version this one replaces, or the document a deletion removes

    def successor(self, unique_id: str) -> Lineage:
        """``unique_id`` as the next version of this set, replacing this one: same set id, version + 1."""
        return Lineage(unique_id, self.set_id or self.unique_id, self.version + 1, Action.REPLACE, self.unique_id)

    def deletion(self) -> Lineage:
        """The deletion of this version: its own identity, naming itself as the document removed."""
        return Lineage(self.unique_id, self.set_id, self.version, Action.DELETE, self.unique_id)

    def fields(self) -> LineageFields:
        """The lineage as keyword arguments of a :class:`Document` (``Document(**lineage.fields(), ...)``)."""
        return cast(LineageFields, _keywords(self))


def _keywords(value: DocumentKind | Lineage) -> dict[str, Any]:
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}


class Provenance(BaseModel):
    model_config = ConfigDict(frozen=True)

    channel: str = ""  # mllp | http | folder | dicom
    sender: str = ""  # e.g. MSH-3^MSH-4, AE title, HTTP client
    message_id: str = ""  # MSH-10, SOP Instance UID, file name...
    journal_id: int = 0


class Flags(BaseModel):
    """The MetaDMPMSS flags of the CI-SIS volet (HL7v2), or their defaults for other sources."""

    model_config = ConfigDict(frozen=True)

    masque_ps: bool = False
    invisible_patient: bool = False
    invisible_rep_legaux: bool = False
    connexion_secrete: bool = False
    modif_conf_code: bool = False
    dest_dmp: bool = True
    dest_mssante_ps: bool = False
    dest_mssante_pat: bool = False
    ack_reception: bool = False
    ack_lecture_mss: bool = False


class Document(BaseModel):
    """Metadata of one document for the patient space, and its content bytes."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    unique_id: str  # root-only OID for the DMP (CDA ClinicalDocument/id, SOP Instance UID for a KOS)
    set_id: str = ""
    version: int = 1
    action: Action = Action.PUBLISH
    replaces: str = ""  # unique id of the document this one replaces or deletes
    patient: Patient
    type_code: Code
    class_code: Code
    format_code: Code
    mime_type: str
    title: str
    creation_time: datetime
    service_start: datetime | None = None
    service_stop: datetime | None = None
    author: Author = Field(default_factory=Author)
    legal_authenticator: Author | None = None
    submission_author: Author | None = None  # SubmissionSet author (HL7v2 PRT with PRT-4 = SB)
    facility_type: Code | None = None
    practice_setting: Code | None = None
    confidentiality: tuple[Code, ...] = ()
    language: str = "fr-FR"
    reference_ids: tuple[ReferenceId, ...] = ()
    flags: Flags = Field(default_factory=Flags)
    provenance: Provenance = Field(default_factory=Provenance)
    content: bytes = b""

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.content, usedforsecurity=False).hexdigest()

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def visibility_codes(self) -> frozenset[str]:
        return frozenset(c.code for c in self.confidentiality if c.code in VISIBILITY_CODES)

    def metadata(self) -> dict[str, object]:
        """JSON-able metadata without the content (for previews, the browser and the audit trail)."""
        data = self.model_dump(mode="json", exclude={"content"})
        data["hash_sha1"] = self.sha1
        data["size"] = self.size
        return data


def confidentiality_code(code: str) -> Code:
    """Build a confidentiality code with its code system (HL7 N/R/V or CI-SIS visibility codes)."""
    if code in VISIBILITY_CODES:
        return Code(code=code, system=CONFIDENTIALITY_CISIS, display=_VISIBILITY_DISPLAY[code])
    return Code(code=code, system=CONFIDENTIALITY_HL7, display=_HL7_CONF_DISPLAY.get(code, code))


_VISIBILITY_DISPLAY = {
    MASQUE_PS: "Masqué aux professionnels de santé",
    INVISIBLE_PATIENT: "Non visible par le patient",
    INVISIBLE_REPRESENTANTS_LEGAUX: "Non visible par les représentants légaux du patient",
}
_HL7_CONF_DISPLAY = {"N": "Normal", "R": "Restreint", "V": "Très restreint"}
