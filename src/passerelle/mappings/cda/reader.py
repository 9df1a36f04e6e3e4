"""CDA R2: safe XML parsing and the CDA header → :class:`Document` mapping (dmp-interop.md §2, §4).

Safe parsing (reliability.md §3.2): the byte size is capped before lxml sees anything; a DOCTYPE
anywhere is refused (reason ``doctype``) so no DTD, internal or external entity, parameter entity
or billion-laughs construct is ever processed; the parser itself also runs with
``resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False``; processing
instructions (``<?xml-stylesheet?>``) and comments are dropped at parse time and never executed;
nesting depth and element count are capped. Encodings: UTF-8 (with or without BOM) and the
single-byte encodings lxml knows, as declared in the XML declaration; UTF-16/UTF-32 are refused
(reason ``unsupported_encoding``; bytes invalid in the declared encoding: reason ``encoding``), so the DOCTYPE scan always reads ASCII-compatible bytes.

The mapping reads only the header: it never decodes the body (a PDF in ``nonXMLBody`` stays as
is inside ``Document.content``, which is the CDA bytes exactly as received).
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from lxml import etree
from pydantic import ValidationError as PydanticValidationError

from passerelle.errors import EncodingError, MappingError, ParseError, TooLargeError, ValidationError
from passerelle.mappings.document import (
    CLASS_CODE_SYSTEM,
    FORMAT_IHE_SYSTEM,
    INS_NIA_OID,
    INS_NIR_DEMO_OID,
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    LOINC,
    PS_ID_OID,
    STRUCTURE_ID_OID,
    Action,
    Author,
    Code,
    Document,
    Patient,
    Provenance,
    ReferenceId,
    confidentiality_code,
)

HL7_NS = "urn:hl7-org:v3"
PS3_20_NS = "urn:dicom-org:ps3-20"
NS = {"h": HL7_NS, "d": PS3_20_NS}
CDA_ROOT = f"{{{HL7_NS}}}ClinicalDocument"
INS_ROOTS = frozenset({INS_NIR_OID, INS_NIA_OID, INS_NIR_TEST_OID, INS_NIR_DEMO_OID})
#: TRE_A06-FormatCodeComplementaire: the code system of the urn:asip:* / urn:ans:* format codes.
FORMAT_ANS_SYSTEM = "1.2.250.1.213.1.1.4.2.282"
XDS_SD_TEMPLATE = "1.3.6.1.4.1.19376.1.2.20"
#: Structuration minimale: every French CDA declares the CI-SIS template (dmp-interop.md §4.1).
CISIS_TEMPLATE = "1.2.250.1.213.1.1.1.1"
IMAGING_REPORT_TYPE = "18748-4"
REF_ORDER = "urn:ihe:iti:xds:2013:order"
REF_ACCESSION = "urn:ihe:iti:xds:2013:accession"
REF_STUDY = "urn:ihe:iti:xds:2016:studyInstanceUID"
#: Where a timestamp carries no offset we read it as French legal time (documented in cda-intake.md).
DEFAULT_TZ: tzinfo = ZoneInfo("Europe/Paris")

_OID = re.compile(r"^[0-2](?:\.(?:0|[1-9][0-9]*))+$")
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$")
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)
_XML_DECL = re.compile(rb"^<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")


_UTF16 = "UTF-16/UTF-32 XML is not supported; send UTF-8"


@dataclass(frozen=True, slots=True)
class CdaLimits:
    """Caps applied before and during parsing (every one configurable by the intake settings)."""

    max_bytes: int = 20 * 1024 * 1024
    max_depth: int = 200
    max_elements: int = 500_000


DEFAULT_LIMITS = CdaLimits()


# --- safe parsing -------------------------------------------------------------------------------


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers keep state and are not safe to share across threads.
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_pis=True,
        remove_comments=True,
        collect_ids=False,
    )


def check_encoding(raw: bytes) -> None:
    """Refuse UTF-16/UTF-32 (BOM, NUL bytes or declaration); the rest is left to lxml."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or raw[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"):
        raise EncodingError(_UTF16, reason="unsupported_encoding")
    if b"\x00" in raw[:64]:
        raise EncodingError(_UTF16, reason="unsupported_encoding")
    head = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    m = _XML_DECL.match(head[:200])
    if m and m.group(1).decode("ascii").upper().replace("_", "-").startswith(("UTF-16", "UTF-32", "UCS")):
        raise EncodingError(_UTF16, reason="unsupported_encoding")


def parse_xml(raw: bytes, limits: CdaLimits = DEFAULT_LIMITS) -> etree._Element:
    """Parse untrusted XML bytes safely and return the root element.

    Raises :class:`TooLargeError` (reason ``too_large``) over ``max_bytes``, :class:`ParseError`
    with reason ``doctype`` for any DOCTYPE/ENTITY declaration, ``depth``/``too_many_elements``
    over the structural caps, ``xml`` when not well-formed, and :class:`EncodingError` (reason
    ``unsupported_encoding``) for UTF-16/32, (reason ``encoding``) for bytes invalid in the declared encoding.
    """
    if len(raw) > limits.max_bytes:
        raise TooLargeError(f"XML document of {len(raw)} bytes exceeds the {limits.max_bytes}-byte cap")
    if not raw.strip():
        raise ParseError("empty XML document", reason="xml")
    check_encoding(raw)
    if _DOCTYPE.search(raw) or _ENTITY.search(raw):
        raise ParseError("DOCTYPE not allowed", reason="doctype")
    try:
        root = etree.fromstring(raw, parser=_parser())
    except etree.XMLSyntaxError as exc:
        text = str(exc).lower()
        if "encoding" in text or "utf-8" in text or ("char" in text and "range" in text):
            raise EncodingError("XML bytes are invalid in the declared encoding", reason="encoding") from exc
        if "depth" in text or "nesting" in text:
            raise ParseError("XML nesting too deep", reason="depth") from exc
        line = getattr(exc, "lineno", 0)
        raise ParseError(f"XML not well-formed (line {line})", reason="xml") from exc
    doctype: str = getattr(root.getroottree().docinfo, "doctype", "") or ""
    if doctype:
        raise ParseError("DOCTYPE not allowed", reason="doctype")
    _check_structure(root, limits)
    return root


def _check_structure(root: etree._Element, limits: CdaLimits) -> None:
    count = 0
    depth = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        if event == "start":
            count += 1
            depth += 1
            if depth > limits.max_depth:
                raise ParseError(f"XML nesting deeper than {limits.max_depth}", reason="depth")
            if count > limits.max_elements:
                raise ParseError(f"more than {limits.max_elements} XML elements", reason="too_many_elements")
        else:
            depth -= 1


def parse_cda(raw: bytes, limits: CdaLimits = DEFAULT_LIMITS) -> etree._Element:
    """Safe parse + check that the root is an HL7 v3 ``ClinicalDocument`` (reason ``not_cda``)."""
    root = parse_xml(raw, limits)
    if root.tag != CDA_ROOT:
        raise ValidationError("root element is not an HL7 v3 ClinicalDocument", reason="not_cda")
    return root


# --- code tables ----------------------------------------------------------------------------------


@cache
def _tables() -> dict[str, Any]:
    text = resources.files("passerelle.mappings.codes").joinpath("cda_codes.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def document_type(code: str, system: str = "") -> Code:
    """The type code as a :class:`Code` if it is in the DMP type list; else :class:`MappingError`."""
    entry = _tables()["types"].get(code)
    if entry is None or (system and system != entry["system"]):
        raise MappingError(f"document type {code!r} is not in the DMP type list (JDV_J07)", reason="type")
    return Code(code=code, system=entry["system"], display=entry["display"])


def class_for_type(type_code: str) -> Code:
    """classCode derived from typeCode (ASS_X04 reading, see cda_codes.json ``_source``)."""
    tables = _tables()
    entry = tables["types"].get(type_code)
    if entry is None:
        raise MappingError(f"no class for document type {type_code!r}", reason="type")
    klass = entry["class"]
    return Code(code=klass, system=CLASS_CODE_SYSTEM, display=tables["classes"][klass])


def format_code(value: str) -> Code:
    system = FORMAT_IHE_SYSTEM if value.startswith("urn:ihe:") else FORMAT_ANS_SYSTEM
    return Code(code=value, system=system)


def format_for(template_ids: list[str], non_xml_media_type: str | None) -> Code:
    """formatCode: nonXMLBody media type (XDS-SD, ASS_A12), else the model templateId (ASS_A11)."""
    tables = _tables()
    if non_xml_media_type is not None:
        fmt = tables["formats_by_media_type"].get(non_xml_media_type.lower())
        if fmt is None:
            raise MappingError("nonXMLBody media type is not accepted by the DMP", reason="format")
        return format_code(fmt)
    for tid in template_ids:
        fmt = tables["formats_by_template"].get(tid)
        if fmt is not None:
            return format_code(fmt)
    return format_code(tables["default_format"])


# --- small readers ------------------------------------------------------------------------------


def _first(node: etree._Element, path: str) -> etree._Element | None:
    found = node.xpath(path, namespaces=NS)
    if isinstance(found, list) and found:
        el = found[0]
        if isinstance(el, etree._Element):
            return el
    return None


def _all(node: etree._Element, path: str) -> list[etree._Element]:
    found = node.xpath(path, namespaces=NS)
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


def parse_ts(value: str, *, default_tz: tzinfo = DEFAULT_TZ) -> datetime:
    """HL7 v3 TS (``YYYY[MM[DD[HH[MM[SS[.f]]]]]][+ZZZZ]``) → aware datetime."""
    m = _TS.match(value.strip())
    if not m:
        raise ValueError("not an HL7 timestamp")
    year, month, day, hour, minute, second, frac, offset = m.groups()
    micro = int((frac or "0").ljust(6, "0")[:6])
    tz: tzinfo = default_tz
    if offset:
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    return datetime(
        int(year),
        int(month or 1),
        int(day or 1),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        micro,
        tzinfo=tz,
    )


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


def is_oid(value: str) -> bool:
    return len(value) <= 64 and bool(_OID.match(value))


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


def _patient(root: etree._Element, now: datetime) -> Patient:
    role = _first(root, "h:recordTarget/h:patientRole")
    if role is None:
        raise ValidationError("CDA recordTarget/patientRole is missing", reason="no_patient")
    ins = ins_oid = local_id = local_oid = ""
    for el in _all(role, "h:id"):
        root_oid, ext = _attr(el, "root"), _attr(el, "extension")
        if not ext:
            continue
        if root_oid in INS_ROOTS:
            if not ins:
                ins, ins_oid = ext.upper(), root_oid
        elif not local_id:
            local_id, local_oid = ext, root_oid
    if not ins and not local_id:
        raise ValidationError("CDA recordTarget has no patient identifier", reason="no_patient")
    person = _first(role, "h:patient")
    name = _first(person, "h:name") if person is not None else None
    family = given = ""
    if name is not None:
        fam = _first(name, "h:family[@qualifier='BR']")
        giv = _first(name, "h:given[@qualifier='BR']")
        family = _text(fam if fam is not None else _first(name, "h:family"))
        given = _text(giv if giv is not None else _first(name, "h:given"))
    birth = _attr(_first(person, "h:birthTime"), "value")[:8] if person is not None else ""
    sex = _attr(_first(person, "h:administrativeGenderCode"), "code") if person is not None else ""
    return Patient(
        ins=ins,
        ins_oid=ins_oid,
        local_id=local_id,
        local_id_oid=local_oid,
        family=family,
        given=given,
        birth_date=birth,
        sex=sex,
        minor=is_minor(birth, now),
    )


def _person(entity: etree._Element | None, person_tag: str, org_tag: str) -> Author | None:
    if entity is None:
        return None
    person_id = ""
    for el in _all(entity, "h:id"):
        if _attr(el, "root") == PS_ID_OID and _attr(el, "extension"):
            person_id = _attr(el, "extension")
            break
    if not person_id:
        first_id = _first(entity, "h:id")
        ext = _attr(first_id, "extension")
        person_id = ext or _attr(first_id, "root")
    name = _first(entity, f"h:{person_tag}/h:name")
    org = _first(entity, f"h:{org_tag}")
    org_id = ""
    if org is not None:
        for el in _all(org, "h:id"):
            if _attr(el, "root") == STRUCTURE_ID_OID and _attr(el, "extension"):
                org_id = _attr(el, "extension")
                break
    device = _first(entity, "h:assignedAuthoringDevice")
    device_name = ""
    if device is not None:
        device_name = _text(_first(device, "h:softwareName")) or _text(_first(device, "h:manufacturerModelName"))
    return Author(
        person_id=person_id,
        family=_text(_first(name, "h:family")) if name is not None else "",
        given=_text(_first(name, "h:given")) if name is not None else "",
        role=_code(_first(entity, "h:code")),
        organisation_id=org_id,
        organisation_name=_text(_first(org, "h:name")) if org is not None else "",
        device=device_name,
    )


def _practice_setting(root: etree._Element) -> Code | None:
    for path in (
        "h:documentationOf/h:serviceEvent/h:performer/h:assignedEntity/h:representedOrganization"
        "/h:standardIndustryClassCode",
        "h:author/h:assignedAuthor/h:representedOrganization/h:standardIndustryClassCode",
        "h:legalAuthenticator/h:assignedEntity/h:representedOrganization/h:standardIndustryClassCode",
    ):
        code = _code(_first(root, path))
        if code is not None:
            return code
    return None


def _reference_ids(root: etree._Element, type_code: str) -> tuple[ReferenceId, ...]:
    refs: list[ReferenceId] = []
    for el in _all(root, "h:inFulfillmentOf/h:order/h:id"):
        value = _attr(el, "extension") or _attr(el, "root")
        if value:
            assigner = _attr(el, "root") if _attr(el, "extension") else ""
            refs.append(ReferenceId(value=value, type=REF_ORDER, assigner=assigner))
    for el in _all(root, "h:inFulfillmentOf/h:order/d:accessionNumber"):
        value = _attr(el, "extension")
        if value:
            refs.append(ReferenceId(value=value, type=REF_ACCESSION, assigner=_attr(el, "root")))
    if type_code == IMAGING_REPORT_TYPE:
        # In an imaging report each serviceEvent/id (root only) is a Study Instance UID (§4.4).
        for el in _all(root, "h:documentationOf/h:serviceEvent/h:id"):
            uid = _attr(el, "root")
            if uid and not _attr(el, "extension") and is_oid(uid):
                refs.append(ReferenceId(value=uid, type=REF_STUDY))
    seen: set[tuple[str, str, str]] = set()
    unique: list[ReferenceId] = []
    for ref in refs:
        key = (ref.value, ref.type, ref.assigner)
        if key not in seen:
            seen.add(key)
            unique.append(ref)
    return tuple(unique)


def _unique_id(root: etree._Element) -> str:
    el = _first(root, "h:id")
    doc_root, ext = _attr(el, "root"), _attr(el, "extension")
    if not doc_root:
        raise ValidationError("CDA ClinicalDocument/id is missing", reason="header", location="id")
    if ext:
        # The DMP does not support the OID^extension form (TXA-12 rule, dmp-interop.md §2.9).
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


def _ii(el: etree._Element | None) -> str:
    r, ext = _attr(el, "root"), _attr(el, "extension")
    return f"{r}^{ext}" if ext else r


# --- the mapping --------------------------------------------------------------------------------------


def document_from_cda(
    root: etree._Element, raw: bytes, *, now: datetime, provenance: Provenance | None = None
) -> Document:
    """Map a parsed CDA header to a :class:`Document` whose content is ``raw`` (the exact bytes)."""
    unique_id = _unique_id(root)
    code_el = _first(root, "h:code")
    type_raw = _attr(code_el, "code")
    if not type_raw:
        raise ValidationError("CDA code is missing", reason="header", location="code")
    type_system = _attr(code_el, "codeSystem")
    type_code = document_type(type_raw, type_system)
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
    fmt = format_for(template_ids, media_type)

    version_raw = _attr(_first(root, "h:versionNumber"), "value") or "1"
    try:
        version = int(version_raw)
    except ValueError as exc:
        raise ValidationError("CDA versionNumber is not an integer", reason="header") from exc
    action, replaces = Action.PUBLISH, ""
    rplc = _first(root, "h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id")
    if rplc is not None:
        action, replaces = Action.REPLACE, _ii(rplc)

    conf_code = _attr(_first(root, "h:confidentialityCode"), "code") or "N"
    if conf_code not in ("N", "R", "V"):
        raise ValidationError("CDA confidentialityCode must be N, R or V", reason="header")

    event_time = _first(root, "h:documentationOf/h:serviceEvent/h:effectiveTime")
    start = _ts(_first(event_time, "h:low"), "serviceEvent/effectiveTime/low") if event_time is not None else None
    stop = _ts(_first(event_time, "h:high"), "serviceEvent/effectiveTime/high") if event_time is not None else None
    if event_time is not None and start is None and _attr(event_time, "value"):
        start = _ts(event_time, "serviceEvent/effectiveTime")

    author = _person(_first(root, "h:author/h:assignedAuthor"), "assignedPerson", "representedOrganization")
    legal = _person(_first(root, "h:legalAuthenticator/h:assignedEntity"), "assignedPerson", "representedOrganization")

    creation = _ts(_first(root, "h:effectiveTime"), "effectiveTime", required=True)
    assert creation is not None
    try:
        return Document(
            unique_id=unique_id,
            set_id=_ii(_first(root, "h:setId")),
            version=version,
            action=action,
            replaces=replaces,
            patient=_patient(root, now),
            type_code=type_code,
            class_code=class_for_type(type_code.code),
            format_code=fmt,
            mime_type="text/xml",
            title=_text(_first(root, "h:title")) or type_code.display,
            creation_time=creation,
            service_start=start,
            service_stop=stop,
            author=author or Author(),
            legal_authenticator=legal,
            facility_type=_code(
                _first(root, "h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility/h:code")
            ),
            practice_setting=_practice_setting(root),
            confidentiality=(confidentiality_code(conf_code),),
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
    """Safe-parse CDA bytes and map the header (errors: see :func:`parse_xml`, ValidationError, MappingError)."""
    root = parse_cda(raw, limits)
    return document_from_cda(root, raw, now=now, provenance=provenance)


__all__ = [
    "CDA_ROOT",
    "DEFAULT_LIMITS",
    "INS_ROOTS",
    "LOINC",
    "CdaLimits",
    "class_for_type",
    "document_from_cda",
    "document_type",
    "format_for",
    "is_minor",
    "map_cda",
    "map_cda_document",
    "parse_cda",
    "parse_ts",
    "parse_xml",
]


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
    from passerelle.mappings.identity.rules import qualify_cda_patient

    doc = map_cda(raw, now=now, provenance=provenance, limits=limits)
    patient = qualify_cda_patient(doc.patient, test_environment=test_environment)
    return doc.model_copy(update={"patient": patient})
