"""CDA R2 header → :class:`Document` (docs/interop-reference.md, "CDA header" and "XDS metadata").

The mapping reads only the header: it never decodes the body (a PDF in ``nonXMLBody`` stays as is
inside ``Document.content``, which is the CDA bytes exactly as received). Parsing is
:mod:`passerelle.mappings.cda.safe_xml`; the code tables are :mod:`passerelle.mappings.cda.codes`.
"""

from __future__ import annotations

import binascii
import threading
from datetime import date, datetime, tzinfo
from zoneinfo import ZoneInfo

from lxml import etree
from pydantic import ValidationError as PydanticValidationError

from passerelle.errors import MappingError, ValidationError
from passerelle.mappings.cda.codes import class_for_type, document_type, format_for
from passerelle.mappings.cda.safe_xml import DEFAULT_LIMITS, HL7_NS, CdaLimits, parse_cda
from passerelle.mappings.document import (
    PS_ID_OID,
    REF_ACCESSION,
    REF_ORDER,
    REF_STUDY,
    STRUCTURE_ID_OID,
    Action,
    Author,
    Code,
    Document,
    Lineage,
    Patient,
    Provenance,
    ReferenceId,
    confidentiality_code,
    is_oid,
)
from passerelle.mappings.hl7time import parse_hl7_time
from passerelle.mappings.identity.rules import ALL_INS_OIDS, qualify_cda_patient

PS3_20_NS = "urn:dicom-org:ps3-20"
NS = {"h": HL7_NS, "d": PS3_20_NS}
#: Structuration minimale: every French CDA declares the CI-SIS template.
CISIS_TEMPLATE = "1.2.250.1.213.1.1.1.1"
IMAGING_REPORT_TYPE = "18748-4"
#: Where a timestamp carries no offset we read it as French legal time (documented in cda-intake.md).
DEFAULT_TZ: tzinfo = ZoneInfo("Europe/Paris")
_PRACTICE_SETTING_PATHS = (
    "h:documentationOf/h:serviceEvent/h:performer/h:assignedEntity/h:representedOrganization"
    "/h:standardIndustryClassCode",
    "h:author/h:assignedAuthor/h:representedOrganization/h:standardIndustryClassCode",
    "h:legalAuthenticator/h:assignedEntity/h:representedOrganization/h:standardIndustryClassCode",
)
_FACILITY_PATH = "h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility/h:code"


# --- small readers ------------------------------------------------------------------------------


_COMPILED = threading.local()


def _xpath(path: str) -> etree.XPath:
    """``path`` compiled once per thread (compiling it was most of a lookup's cost; a compiled
    expression is not shared between threads)."""
    cache: dict[str, etree.XPath] | None = getattr(_COMPILED, "cache", None)
    if cache is None:
        cache = _COMPILED.cache = {}
    found = cache.get(path)
    if found is None:
        found = cache[path] = etree.XPath(path, namespaces=NS)
    return found


def _first(node: etree._Element | None, path: str) -> etree._Element | None:
    if node is None:
        return None
    found = _xpath(path)(node)
    if isinstance(found, list) and found and isinstance(found[0], etree._Element):
        return found[0]
    return None


def _all(node: etree._Element, path: str) -> list[etree._Element]:
    found = _xpath(path)(node)
    if not isinstance(found, list):
        return []
    return [el for el in found if isinstance(el, etree._Element)]


def _attr(node: etree._Element | None, name: str) -> str:
    if node is None:
        return ""
    value = node.get(name)
    return value.strip() if value else ""


def _text(node: etree._Element | None) -> str:
    if node is None:
        return ""
    return " ".join("".join(str(t) for t in node.itertext()).split())


def _code(node: etree._Element | None) -> Code | None:
    code = _attr(node, "code")
    if not code:
        return None
    return Code(code=code, system=_attr(node, "codeSystem"), display=_attr(node, "displayName"))


def _ii(el: etree._Element | None) -> str:
    r, ext = _attr(el, "root"), _attr(el, "extension")
    return f"{r}^{ext}" if ext else r


def _id_under(node: etree._Element | None, root: str) -> str:
    """The extension of the first ``id`` of ``node`` under ``root`` ("" when none)."""
    if node is None:
        return ""
    return next((ext for el in _all(node, "h:id") if _attr(el, "root") == root and (ext := _attr(el, "extension"))), "")


def parse_ts(value: str, *, default_tz: tzinfo = DEFAULT_TZ) -> datetime:
    """HL7 v3 TS (``YYYY[MM[DD[HH[MM[SS[.f]]]]]][+ZZZZ]``) → aware datetime."""
    return parse_hl7_time(value, default_tz)


def _ts(node: etree._Element | None, where: str, *, required: bool = False) -> datetime | None:
    value = _attr(node, "value")
    if not value:
        if required:
            raise ValidationError(f"CDA {where} is missing", reason="header", location=where)
        return None
    try:
        return parse_ts(value)
    except ValueError as exc:
        raise ValidationError(f"CDA {where} is not a valid timestamp", reason="header", location=where) from exc


def is_minor(birth_date: str, now: datetime) -> bool:
    """True when the patient is under 18 at ``now`` (birth date ``YYYYMMDD``; unknown → False)."""
    if len(birth_date) < 8 or not birth_date[:8].isdigit():
        return False
    try:
        born = date(int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:8]))
    except ValueError:
        return False
    today = now.date()
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return age < 18


# --- header parts ---------------------------------------------------------------------------------


def _patient_ids(role: etree._Element) -> tuple[str, str, str, str]:
    """(INS, its OID, local id, its OID): the first id under an INS root, the first other id."""
    ins = ins_oid = local_id = local_oid = ""
    for el in _all(role, "h:id"):
        root_oid, ext = _attr(el, "root"), _attr(el, "extension")
        if not ext:
            continue
        if root_oid in ALL_INS_OIDS:
            ins, ins_oid = (ins, ins_oid) if ins else (ext.upper(), root_oid)
        elif not local_id:
            local_id, local_oid = ext, root_oid
    return ins, ins_oid, local_id, local_oid


def _birth_name(name: etree._Element | None, part: str) -> str:
    """The birth (``BR``) family or given name, else the first one."""
    qualified = _first(name, f"h:{part}[@qualifier='BR']")
    return _text(qualified if qualified is not None else _first(name, f"h:{part}"))


def _patient(root: etree._Element, now: datetime) -> Patient:
    role = _first(root, "h:recordTarget/h:patientRole")
    if role is None:
        raise ValidationError("CDA recordTarget/patientRole is missing", reason="no_patient")
    ins, ins_oid, local_id, local_oid = _patient_ids(role)
    if not ins and not local_id:
        raise ValidationError("CDA recordTarget has no patient identifier", reason="no_patient")
    person = _first(role, "h:patient")
    name = _first(person, "h:name")
    birth = _attr(_first(person, "h:birthTime"), "value")[:8]
    return Patient(
        ins=ins,
        ins_oid=ins_oid,
        local_id=local_id,
        local_id_oid=local_oid,
        family=_birth_name(name, "family"),
        given=_birth_name(name, "given"),
        birth_date=birth,
        sex=_attr(_first(person, "h:administrativeGenderCode"), "code"),
        minor=is_minor(birth, now),
    )


def _person_id(entity: etree._Element) -> str:
    """IdNat_PS when given, else the first id (extension, else root)."""
    first_id = _first(entity, "h:id")
    return _id_under(entity, PS_ID_OID) or _attr(first_id, "extension") or _attr(first_id, "root")


def _device_name(entity: etree._Element) -> str:
    device = _first(entity, "h:assignedAuthoringDevice")
    return _text(_first(device, "h:softwareName")) or _text(_first(device, "h:manufacturerModelName"))


def _person(entity: etree._Element | None) -> Author | None:
    if entity is None:
        return None
    name = _first(entity, "h:assignedPerson/h:name")
    org = _first(entity, "h:representedOrganization")
    return Author(
        person_id=_person_id(entity),
        family=_text(_first(name, "h:family")),
        given=_text(_first(name, "h:given")),
        role=_code(_first(entity, "h:code")),
        organisation_id=_id_under(org, STRUCTURE_ID_OID),
        organisation_name=_text(_first(org, "h:name")),
        device=_device_name(entity),
    )


def _practice_setting(root: etree._Element) -> Code | None:
    return next((code for path in _PRACTICE_SETTING_PATHS if (code := _code(_first(root, path))) is not None), None)


def _reference_ids(root: etree._Element, type_code: str) -> tuple[ReferenceId, ...]:
    refs = _order_refs(root)
    if type_code == IMAGING_REPORT_TYPE:
        # In an imaging report each serviceEvent/id (root only) is a Study Instance UID.
        refs += [
            ReferenceId(value=uid, type=REF_STUDY)
            for el in _all(root, "h:documentationOf/h:serviceEvent/h:id")
            if (uid := _attr(el, "root")) and not _attr(el, "extension") and is_oid(uid)
        ]
    return tuple(dict.fromkeys(refs))  # ReferenceId is frozen: first occurrence of each kept, in order


def _order_refs(root: etree._Element) -> list[ReferenceId]:
    refs: list[ReferenceId] = []
    for el in _all(root, "h:inFulfillmentOf/h:order/h:id"):
        value = _attr(el, "extension") or _attr(el, "root")
        if value:
            assigner = _attr(el, "root") if _attr(el, "extension") else ""
            refs.append(ReferenceId(value=value, type=REF_ORDER, assigner=assigner))
    refs += [
        ReferenceId(value=value, type=REF_ACCESSION, assigner=_attr(el, "root"))
        for el in _all(root, "h:inFulfillmentOf/h:order/d:accessionNumber")
        if (value := _attr(el, "extension"))
    ]
    return refs


def _unique_id(root: etree._Element) -> str:
    el = _first(root, "h:id")
    doc_root, ext = _attr(el, "root"), _attr(el, "extension")
    if not doc_root:
        raise ValidationError("CDA ClinicalDocument/id is missing", reason="header", location="id")
    if ext:
        # The DMP does not take the OID^extension form for a document id (docs/interop-reference.md).
        raise MappingError(
            "CDA ClinicalDocument/id has an extension; the DMP requires a root-only OID", reason="unique_id"
        )
    if not is_oid(doc_root):
        raise MappingError("CDA ClinicalDocument/id root is not an OID of at most 64 characters", reason="unique_id")
    return doc_root


def _check_b64_body(text_el: etree._Element) -> None:
    """A ``nonXMLBody/text`` in B64 must be valid, non-empty Base64 (decoded once, size already capped)."""
    if _attr(text_el, "representation").upper() != "B64":
        return
    data = "".join((text_el.text or "").split())
    try:
        decoded = binascii.a2b_base64(data.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise ValidationError("nonXMLBody is not valid Base64", reason="body", location="nonXMLBody/text") from exc
    if not decoded:
        raise ValidationError("nonXMLBody is empty", reason="body", location="nonXMLBody/text")


def _type_code(root: etree._Element) -> Code:
    code_el = _first(root, "h:code")
    type_raw = _attr(code_el, "code")
    if not type_raw:
        raise ValidationError("CDA code is missing", reason="header", location="code")
    return document_type(type_raw, _attr(code_el, "codeSystem"))


def _format(root: etree._Element) -> Code:
    """formatCode, after checking the CI-SIS template and a Base64 body."""
    template_ids = [_attr(el, "root") for el in _all(root, "h:templateId")]
    if CISIS_TEMPLATE not in template_ids:
        raise ValidationError(
            f"CDA does not declare the CI-SIS templateId {CISIS_TEMPLATE}", reason="template", location="templateId"
        )
    non_xml = _first(root, "h:component/h:nonXMLBody/h:text")
    media_type = None
    if non_xml is not None:
        media_type = _attr(non_xml, "mediaType") or "text/plain"
        _check_b64_body(non_xml)
    return format_for(template_ids, media_type)


def _lineage(root: etree._Element, unique_id: str) -> Lineage:
    """id, setId, versionNumber; a relatedDocument RPLC makes a replacement of the version it names."""
    version_raw = _attr(_first(root, "h:versionNumber"), "value") or "1"
    try:
        version = int(version_raw)
    except ValueError as exc:
        raise ValidationError("CDA versionNumber is not an integer", reason="header") from exc
    set_id = _ii(_first(root, "h:setId"))
    rplc = _first(root, "h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id")
    if rplc is None:
        return Lineage(unique_id, set_id, version)
    return Lineage(unique_id, set_id, version, Action.REPLACE, _ii(rplc))


def _confidentiality(root: etree._Element) -> Code:
    conf_code = _attr(_first(root, "h:confidentialityCode"), "code") or "N"
    if conf_code not in ("N", "R", "V"):
        raise ValidationError("CDA confidentialityCode must be N, R or V", reason="header")
    return confidentiality_code(conf_code)


def _service_times(root: etree._Element) -> tuple[datetime | None, datetime | None]:
    event_time = _first(root, "h:documentationOf/h:serviceEvent/h:effectiveTime")
    if event_time is None:
        return None, None
    start = _ts(_first(event_time, "h:low"), "serviceEvent/effectiveTime/low")
    stop = _ts(_first(event_time, "h:high"), "serviceEvent/effectiveTime/high")
    if start is None and _attr(event_time, "value"):
        start = _ts(event_time, "serviceEvent/effectiveTime")
    return start, stop


# --- the mapping --------------------------------------------------------------------------------------


def document_from_cda(
    root: etree._Element, raw: bytes, *, now: datetime, provenance: Provenance | None = None
) -> Document:
    """Map a parsed CDA header to a :class:`Document` whose content is ``raw`` (the exact bytes)."""
    unique_id = _unique_id(root)
    type_code = _type_code(root)
    fmt = _format(root)
    lineage = _lineage(root, unique_id)
    confidentiality = _confidentiality(root)
    start, stop = _service_times(root)
    creation = _ts(_first(root, "h:effectiveTime"), "effectiveTime", required=True)
    assert creation is not None
    try:
        return Document(
            **lineage.fields(),
            patient=_patient(root, now),
            type_code=type_code,
            class_code=class_for_type(type_code.code),
            format_code=fmt,
            mime_type="text/xml",
            title=_text(_first(root, "h:title")) or type_code.display,
            creation_time=creation,
            service_start=start,
            service_stop=stop,
            author=_person(_first(root, "h:author/h:assignedAuthor")) or Author(),
            legal_authenticator=_person(_first(root, "h:legalAuthenticator/h:assignedEntity")),
            facility_type=_code(_first(root, _FACILITY_PATH)),
            practice_setting=_practice_setting(root),
            confidentiality=(confidentiality,),
            language=_attr(_first(root, "h:languageCode"), "code") or "fr-FR",
            reference_ids=_reference_ids(root, type_code.code),
            provenance=provenance or Provenance(),
            content=raw,
        )
    except PydanticValidationError as exc:
        raise MappingError("CDA header values do not fit the document model", reason="mapping") from exc


def map_cda(
    raw: bytes,
    *,
    now: datetime,
    provenance: Provenance | None = None,
    limits: CdaLimits = DEFAULT_LIMITS,
) -> Document:
    """Safe-parse CDA bytes and map the header (errors: see ``safe_xml.parse_xml``, ValidationError, MappingError)."""
    root = parse_cda(raw, limits)
    return document_from_cda(root, raw, now=now, provenance=provenance)


def map_cda_document(
    raw: bytes,
    *,
    test_environment: bool,
    now: datetime,
    provenance: Provenance | None = None,
    limits: CdaLimits = DEFAULT_LIMITS,
) -> Document:
    """:func:`map_cda` plus the identity rules for a CDA received alone (HTTP, folder).

    Raises :class:`~passerelle.errors.IdentityError` when the recordTarget INS is not usable.
    """
    doc = map_cda(raw, now=now, provenance=provenance, limits=limits)
    patient = qualify_cda_patient(doc.patient, test_environment=test_environment)
    return doc.model_copy(update={"patient": patient})
