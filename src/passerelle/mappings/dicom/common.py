"""DICOM decoding, patient identity and value helpers shared by the KOS and SR mappings.

Pure functions over bytes and pydicom datasets: no I/O, no clock, no settings. Errors raised here are
from the Passerelle tree and their texts never carry patient data (only tags, SOP classes, sizes).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from passerelle.errors import IdentityError, MappingError, ParseError
from passerelle.mappings.document import (
    INS_NIA_OID,
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    PRODUCTION_INS_OIDS,
    REF_ACCESSION,
    REF_ORDER,
    REF_STUDY,
    TEST_INS_OIDS,
    Author,
    Code,
    IdentityStatus,
    Lineage,
    Patient,
    ReferenceId,
)
from passerelle.mappings.identity.ins import allowed_ins_oids, is_valid_nir

KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
BASIC_TEXT_SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"
ENHANCED_SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.22"
COMPREHENSIVE_SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
COMPREHENSIVE_3D_SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
EXTENSIBLE_SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.35"
SR_SOP_CLASSES = frozenset(
    {
        BASIC_TEXT_SR_SOP_CLASS,
        ENHANCED_SR_SOP_CLASS,
        COMPREHENSIVE_SR_SOP_CLASS,
        COMPREHENSIVE_3D_SR_SOP_CLASS,
        EXTENSIBLE_SR_SOP_CLASS,
    }
)
DOCUMENT_SOP_CLASSES = frozenset({KOS_SOP_CLASS}) | SR_SOP_CLASSES

#: Sequences nested deeper than this are refused (pydicom recurses; docs/interop-reference.md, "DICOM hardening").
MAX_SEQUENCE_DEPTH = 32

#: CX-4.1 namespaces of the INS assigning authorities (docs/interop-reference.md, "INS"). An issuer given only by
#: this name (the DRIM-M KOS writes ``ASIP-SANTE-INS-NIR`` without an OID) resolves to the production
#: OID, or to the test OID when the gateway runs against a test patient space.
_INS_NAMESPACES: dict[str, tuple[str, str]] = {
    "ASIP-SANTE-INS-NIR": (INS_NIR_OID, INS_NIR_TEST_OID),
    "ASIP-SANTE-INS-NIA": (INS_NIA_OID, INS_NIA_OID),
}
_ALL_INS_OIDS = PRODUCTION_INS_OIDS | TEST_INS_OIDS
_OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_DA_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TM_RE = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")
_TZ_RE = re.compile(r"^([+-])(\d{2})(\d{2})$")


def _paris() -> tzinfo:
    # resolved when a DicomSite is built, not at import: a host without tz data fails there, loudly
    return ZoneInfo("Europe/Paris")


@dataclass(frozen=True)
class DicomSite:
    """What the site configures once for every DICOM document (the lead builds it from settings).

    ``local_tz`` interprets DICOM dates and times that carry no Timezone Offset From UTC (0008,0201).
    ``organisation`` is the author institution (IdNat_Struct, name) of every document;
    ``report_title`` the title of generated imaging reports when the SR has none usable.
    """

    organisation: Author = field(default_factory=Author)
    facility_type: Code | None = None
    practice_setting: Code | None = None
    local_tz: tzinfo = field(default_factory=_paris)


@dataclass(frozen=True, slots=True)
class PreviousManifest(Lineage):
    """The last manifest or report published for the same study (looked up by the worker by its series key)."""


# --- decoding -------------------------------------------------------------------------------------


def decode_dicom(raw: bytes) -> Dataset:
    """Read a DICOM Part 10 file (128-byte preamble, ``DICM``, file meta) and parse every element.

    Raises :class:`ParseError` for anything that is not a complete, readable Part 10 file: no
    ``DICM`` prefix, no file meta or no Transfer Syntax UID, truncated elements, nesting deeper than
    :data:`MAX_SEQUENCE_DEPTH`, undecodable values.
    """
    if len(raw) < 132 or raw[128:132] != b"DICM":
        raise ParseError("not a DICOM Part 10 file (no DICM prefix after the 128-byte preamble)")
    try:
        ds = pydicom.dcmread(io.BytesIO(raw), force=False)
        meta = ds.file_meta
        if "TransferSyntaxUID" not in meta or not str(meta.TransferSyntaxUID):
            raise ParseError("DICOM file meta has no Transfer Syntax UID (0002,0010)")
        _walk(ds, 0)
    except ParseError:
        raise
    except RecursionError as exc:
        raise ParseError("DICOM sequences nested too deeply") from exc
    except InvalidDicomError as exc:
        raise ParseError("not a DICOM Part 10 file (invalid file meta)") from exc
    except Exception as exc:  # pydicom fails on bad bytes with many types (struct.error, ...)
        raise ParseError(f"unreadable DICOM file ({type(exc).__name__})") from exc
    return ds


def _walk(ds: Dataset, depth: int) -> None:
    """Check declared lengths, force the conversion of every element (pydicom is lazy), bound nesting."""
    if depth > MAX_SEQUENCE_DEPTH:
        raise ParseError(f"DICOM sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels")
    for tag in list(ds.keys()):
        item: Any = ds.get_item(tag)  # a RawDataElement until first accessed
        # pydicom reads what is left when a declared length runs past the end: refuse that file
        if (
            isinstance(item, RawDataElement)
            and item.value is not None
            and item.length != 0xFFFFFFFF
            and len(item.value) != item.length
        ):
            raise ParseError(f"element {tag} declares {item.length} bytes but the file ends first")
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _walk(item, depth + 1)


def zero_preamble(raw: bytes) -> bytes:
    """Part 10 bytes with a zeroed preamble (CVE-2019-11687: no polyglot executable is ever stored)."""
    if len(raw) >= 132 and raw[128:132] == b"DICM" and raw[:128] != bytes(128):
        return bytes(128) + raw[128:]
    return raw


def encode_part10(dataset: Dataset, transfer_syntax_uid: str, *, implementation_uid: str = "") -> bytes:
    """Write a dataset received without file meta (e.g. over DIMSE) as a Part 10 file, preamble zeroed."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(dataset.get("SOPClassUID", "")))
    meta.MediaStorageSOPInstanceUID = UID(str(dataset.get("SOPInstanceUID", "")))
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    if implementation_uid:
        meta.ImplementationClassUID = UID(implementation_uid)
    copy = Dataset(dataset)
    copy.file_meta = meta
    copy.preamble = bytes(128)
    buf = io.BytesIO()
    try:
        pydicom.dcmwrite(buf, copy, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise ParseError(f"DICOM dataset cannot be written as a Part 10 file ({type(exc).__name__})") from exc
    return buf.getvalue()


def canonical_hash(ds: Dataset) -> str:
    """SHA-256 of the dataset re-encoded as Explicit VR Little Endian, without preamble or file meta.

    Used only to compare two receptions of one SOP instance: the same object sent over DIMSE in
    another transfer syntax, or dropped in the folder with another creator's file meta, hashes the
    same. The bytes forwarded are never these re-encoded ones.
    """
    copy = Dataset(ds)
    copy.file_meta = FileMetaDataset()
    buf = io.BytesIO()
    try:
        pydicom.dcmwrite(buf, copy, implicit_vr=False, little_endian=True)
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise ParseError(f"DICOM dataset cannot be re-encoded ({type(exc).__name__})") from exc
    return hashlib.sha256(buf.getvalue()).hexdigest()


# --- values ---------------------------------------------------------------------------------------


def text(ds: Dataset, keyword: str) -> str:
    """Single string value of an attribute, stripped; '' when absent or empty."""
    value: Any = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else ""
    return str(value).strip()


def required_uid(ds: Dataset, keyword: str) -> str:
    value = text(ds, keyword)
    if not value:
        raise MappingError(f"missing {keyword}", location=keyword)
    if len(value) > 64 or not _OID_RE.match(value):
        raise ParseError(f"{keyword} is not a valid UID", location=keyword)
    return value


def dicom_datetime(date: str, time: str, tz: tzinfo, *, location: str = "") -> datetime | None:
    """Combine DA and TM values into an aware datetime (``tz`` from 0008,0201 or the site default)."""
    date = date.strip()
    if not date:
        return None
    d = _DA_RE.match(date)
    if not d:
        raise ParseError(f"{location or 'date'} is not a DICOM DA value", location=location)
    hour = minute = second = micro = 0
    time = time.strip()
    if time:
        t = _TM_RE.match(time)
        if not t:
            raise ParseError(f"{location or 'time'} is not a DICOM TM value", location=location)
        hour = int(t.group(1))
        minute = int(t.group(2) or 0)
        second = min(int(t.group(3) or 0), 59)  # TM allows a leap second (60)
        micro = int((t.group(4) or "0").ljust(6, "0"))
    try:
        return datetime(int(d.group(1)), int(d.group(2)), int(d.group(3)), hour, minute, second, micro, tz)
    except ValueError as exc:
        raise ParseError(f"{location or 'date'} is not a valid date/time", location=location) from exc


def dataset_timezone(ds: Dataset, default: tzinfo) -> tzinfo:
    """The Timezone Offset From UTC (0008,0201) when present and valid, else the site's zone."""
    offset = text(ds, "TimezoneOffsetFromUTC")
    m = _TZ_RE.match(offset)
    if not m:
        return default
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    if minutes > 14 * 60:
        return default
    return timezone(timedelta(minutes=-minutes if m.group(1) == "-" else minutes))


def content_time(ds: Dataset, tz: tzinfo, now: datetime) -> datetime:
    """When the object was created: Content Date/Time, else Instance Creation Date/Time, else ``now``."""
    return (
        dicom_datetime(text(ds, "ContentDate"), text(ds, "ContentTime"), tz, location="0008,0023")
        or dicom_datetime(text(ds, "InstanceCreationDate"), text(ds, "InstanceCreationTime"), tz, location="0008,0012")
        or now
    )


def study_time(ds: Dataset, tz: tzinfo) -> datetime | None:
    return dicom_datetime(text(ds, "StudyDate"), text(ds, "StudyTime"), tz, location="0008,0020")


def as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def person_name(ds: Dataset, keyword: str) -> tuple[str, str]:
    """(family, given) of a PN attribute (alphabetic representation)."""
    value: Any = ds.get(keyword)
    if value is None:
        return "", ""
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
        if value is None:
            return "", ""
    family = str(getattr(value, "family_name", "") or "").strip()
    given = str(getattr(value, "given_name", "") or "").strip()
    return family, given


@dataclass(frozen=True)
class RequestIds:
    """The request an object answers: accession number and placer order, as reference ids whose assigner
    is the issuer OID (None when the object carries no such number)."""

    accession: ReferenceId | None = None
    order: ReferenceId | None = None

    def reference_ids(self, study_uid: str) -> tuple[ReferenceId, ...]:
        """The document's referenceIdList: the study, then the accession and the order when known."""
        known = (ref for ref in (self.accession, self.order) if ref is not None)
        return (ReferenceId(value=study_uid, type=REF_STUDY), *known)


def _issuer(seq: Any) -> str:
    return next((uid for item in seq or () if (uid := text(item, "UniversalEntityID"))), "")


def request_ids(ds: Dataset, study_uid: str = "") -> RequestIds:
    """Accession (0008,0050, else the request's) and placer order of the Referenced Request Sequence;
    ``study_uid`` keeps only the requests of that study."""
    accession = text(ds, "AccessionNumber")
    issuers = [_issuer(ds.get("IssuerOfAccessionNumberSequence"))]
    order = order_issuer = ""
    for req in ds.get("ReferencedRequestSequence") or ():
        if study_uid and text(req, "StudyInstanceUID") not in ("", study_uid):
            continue
        accession = accession or text(req, "AccessionNumber")
        issuers.append(_issuer(req.get("IssuerOfAccessionNumberSequence")))
        if not order:
            order = text(req, "PlacerOrderNumberImagingServiceRequest")
            order_issuer = _issuer(req.get("OrderPlacerIdentifierSequence"))
    issuer = next((i for i in issuers if i), "")
    return RequestIds(
        accession=ReferenceId(value=accession, type=REF_ACCESSION, assigner=issuer) if accession else None,
        order=ReferenceId(value=order, type=REF_ORDER, assigner=order_issuer) if order else None,
    )


# --- identity -------------------------------------------------------------------------------------


def _issuer_oid(issuer: str, qualifiers: Any) -> str:
    """The OID an identifier's issuer gives, from the qualifiers sequence or an OID / HD-form issuer."""
    for item in qualifiers or ():
        uid = text(item, "UniversalEntityID")
        if uid and _OID_RE.match(uid) and text(item, "UniversalEntityIDType") in ("", "ISO"):
            return uid
    if _OID_RE.match(issuer):
        return issuer
    parts = issuer.split("&")  # HL7 HD form written in the issuer: NAMESPACE&OID&ISO
    if len(parts) >= 2 and _OID_RE.match(parts[1].strip()):
        return parts[1].strip()
    return ""


def _ins_oid(issuer: str, qualifiers: Any, test_environment: bool) -> str:
    """INS assigning authority of an identifier, '' when the identifier is not an INS.

    Raises :class:`IdentityError` when it is an INS of an authority this environment does not accept
    (a test INS reaching a production gateway) or when name and OID disagree.
    """
    oid = _issuer_oid(issuer, qualifiers)
    namespace = issuer.split("&", 1)[0].strip().upper()
    by_name = _INS_NAMESPACES.get(namespace)
    if oid:
        if oid not in _ALL_INS_OIDS:
            return ""
        if by_name is not None and oid not in by_name:
            raise IdentityError("identity not qualified: INS issuer name and OID disagree", location="0010,0021")
    elif by_name is not None:
        oid = by_name[1] if test_environment else by_name[0]
    else:
        return ""
    if oid not in allowed_ins_oids(test_environment):
        raise IdentityError(
            "identity not qualified: INS assigning authority not accepted in this environment",
            location="0010,0024",
        )
    return oid


def _carried_ins(ds: Dataset, test_environment: bool) -> tuple[str, str, str]:
    """(INS, OID, location) of the first identifier with an INS issuer: PatientID, then the Other
    Patient IDs Sequence; empty when none."""
    candidates: list[tuple[str, str, Any, str]] = [
        (
            text(ds, "PatientID"),
            text(ds, "IssuerOfPatientID"),
            ds.get("IssuerOfPatientIDQualifiersSequence"),
            "0010,0020",
        )
    ]
    candidates += [
        (
            text(item, "PatientID"),
            text(item, "IssuerOfPatientID"),
            item.get("IssuerOfPatientIDQualifiersSequence"),
            "0010,1002",
        )
        for item in ds.get("OtherPatientIDsSequence") or ()
    ]
    for value, issuer, qualifiers, location in candidates:
        oid = _ins_oid(issuer, qualifiers, test_environment) if value else ""
        if oid:
            return value.upper(), oid, location
    return "", "", ""


def _mapped_ins(
    ds: Dataset, patient_id_map: Mapping[str, tuple[str, str]] | None, test_environment: bool
) -> tuple[str, str, str]:
    """(INS, OID, location) the site maps the local PatientID to (key with the issuer first); empty when none."""
    pid, issuer = text(ds, "PatientID"), text(ds, "IssuerOfPatientID")
    if not pid or not patient_id_map:
        return "", "", ""
    mapped = (patient_id_map.get(f"{pid}^^^{issuer}") if issuer else None) or patient_id_map.get(pid)
    if mapped is None:
        return "", "", ""
    ins, oid = mapped[0].strip().upper(), mapped[1].strip()
    if oid not in allowed_ins_oids(test_environment):
        raise IdentityError(
            "identity not qualified: mapped INS assigning authority not accepted in this environment",
            location="patient_id_map",
        )
    return ins, oid, "patient_id_map"


def resolve_patient(
    ds: Dataset,
    *,
    test_environment: bool,
    patient_id_map: Mapping[str, tuple[str, str]] | None,
) -> Patient:
    """The patient of a KOS/SR with a usable INS, or :class:`IdentityError`.

    Order: PatientID (0010,0020) with an INS issuer; then an Other Patient IDs Sequence item with an
    INS issuer; then the site's mapping of the local PatientID (key ``<PatientID>^^^<Issuer>`` when an
    issuer is present, else ``<PatientID>``) to ``(matricule INS, OID)``. Every INS must have a valid
    NIR key and an OID accepted in this environment. An INS carried by DICOM is considered qualified:
    PACS and RIS write the INS into PatientID only for qualified identities (DRIM-M), and a mapped
    local id comes from the site's identity feed, which holds only qualified identities.
    """
    ins, oid, location = _carried_ins(ds, test_environment)
    if not ins:
        ins, oid, location = _mapped_ins(ds, patient_id_map, test_environment)
    if not ins:
        raise IdentityError(
            "identity not qualified: PatientID is not an INS and no INS is mapped for it", location="0010,0020"
        )
    if not is_valid_nir(ins):
        raise IdentityError("identity not qualified: INS fails the NIR format or key check", location=location)
    pid = text(ds, "PatientID")
    family, given = person_name(ds, "PatientName")
    sex = text(ds, "PatientSex").upper()
    local_id = pid if pid.upper() != ins else ""
    qualifiers = ds.get("IssuerOfPatientIDQualifiersSequence")
    return Patient(
        ins=ins,
        ins_oid=oid,
        identity_status=IdentityStatus.QUALIFIED,
        local_id=local_id,
        local_id_oid=_issuer_oid(text(ds, "IssuerOfPatientID"), qualifiers) if local_id else "",
        family=family,
        given=given,
        birth_date=text(ds, "PatientBirthDate"),
        sex=sex if sex in ("M", "F") else "U",
    )


def patient_lane(patient: Patient) -> str:
    """Journal ordering key: ``ins:<matricule>``, the same key the HL7v2 intake uses, so a report
    received over MLLP and the manifest received over DICOM for one patient share one lane."""
    return f"ins:{patient.ins}"
