"""Reading an ITI-65 Provide Document Bundle, with the sandbox's own code.

The bundle is first validated against the FHIR R4B models of ``fhir.resources`` (structure, types,
unknown elements), then checked against the MHD rules docs/patient-space-api.md relies on. The result
is a :class:`Submission`: plain values the store can act on. Every problem raises
:class:`~passerelle.sandbox.outcome.SpaceRefusal` ``InvalidBundle`` whose text names the location
(``entry[2].resource.masterIdentifier``) and never a value from the bundle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from passerelle.sandbox.fhir_models import FhirValidator
from passerelle.sandbox.outcome import SpaceRefusal
from passerelle.sandbox.store import VISIBILITY_CODES, VISIBILITY_SYSTEM_OID

#: IdNat_PS and IdNat_Struct assigning authorities.
IDNAT_PS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
IDNAT_STRUCT_SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"
RPPS_SYSTEM = "https://rpps.esante.gouv.fr"
#: INS assigning authorities all live under this arc (NIR, NIA, test and demo OIDs).
INS_OID_PREFIX = "urn:oid:1.2.250.1.213.1.4."
#: ANS test INS-NIR assigning authority (synthetic identities only): the sandbox's samples and the spaces
#: its admin API creates without a system.
TEST_INS_SYSTEM = INS_OID_PREFIX + "10"
RFC3986_SYSTEM = "urn:ietf:rfc:3986"


def invalid(diagnostics: str) -> SpaceRefusal:
    return SpaceRefusal("InvalidBundle", diagnostics)


@dataclass(frozen=True)
class PatientKey:
    """A patient's INS: the assigning authority (``urn:oid:...``) and the value."""

    system: str
    value: str


@dataclass(frozen=True)
class ReplacedRef:
    """What a ``relatesTo replaces`` points at: a uniqueId, a stored id, or a document of this bundle."""

    unique_id: str | None = None
    document_id: str | None = None


@dataclass
class SubmittedDocument:
    entry_index: int
    binary_index: int
    unique_id: str
    content: bytes
    content_type: str
    content_hash: str
    size: int
    title: str
    author_idnat: str | None
    author_org: str | None
    visibility: frozenset[str]
    replaces: ReplacedRef | None
    resource: dict[str, Any]


@dataclass
class Submission:
    patient: PatientKey
    submission_set_index: int
    submission_set: dict[str, Any]
    source_idnat: str | None
    documents: list[SubmittedDocument]
    #: role of each request entry, in request order: "submissionset", "folder", "document",
    #: "binary", "patient" or "patch"
    roles: list[str]
    #: PATCH entries: (entry index, DocumentReference id) asking for ``status = superseded``
    patches: list[tuple[int, str]] = field(default_factory=list)

    @property
    def authors(self) -> set[str]:
        found = {d.author_idnat for d in self.documents if d.author_idnat}
        if self.source_idnat:
            found.add(self.source_idnat)
        return found


def validate_fhir(raw: Any, validator: FhirValidator | None = None) -> None:
    """Structure and types per FHIR R4B (``fhir.resources``); errors name locations only.

    The same checks as validating the whole ``Bundle`` model, done faster: the bundle shell (its
    entries without their resources) and then each resource with its own model, so that the
    ``resource`` choice is not re-resolved per entry; a ``Binary`` is validated with a placeholder
    for ``data``, whose base64 is decoded strictly by :func:`_read_document` (the model's regular
    expression over a large payload was the single most expensive check); and ``validator``, when
    given, validates each distinct element once (:mod:`.fhir_models`). See docs/sandbox.md.
    """
    if not isinstance(raw, dict) or raw.get("resourceType") != "Bundle":
        raise invalid("the body is not a FHIR Bundle")
    check = validator or FhirValidator(max_entries=1)
    entries = raw.get("entry")
    places: list[str] = []
    if isinstance(entries, list) and all(isinstance(e, dict) for e in entries):
        shell = {**raw, "entry": [{k: v for k, v in e.items() if k != "resource"} for e in entries]}
        places += check.errors(Bundle, shell, "")
        for index, entry in enumerate(entries):
            places += _validate_resource(check, entry.get("resource"), f"entry.{index}.resource.")
    else:
        places += check.errors(Bundle, raw, "")
    if places:
        raise invalid("FHIR R4 validation failed: " + "; ".join(places[:5]))


def _validate_resource(check: FhirValidator, resource: Any, prefix: str) -> list[str]:
    if resource is None:
        return []
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    try:
        model = get_fhir_model_class(str(kind))
    except (KeyError, ValueError, LookupError):
        return [f"{prefix.rstrip('.')}: unknown resourceType"]
    if kind == "Binary" and isinstance(resource.get("data"), str):
        resource = {**resource, "data": "AA=="}
    return check.errors(model, resource, prefix)


def _index_entries(entries: list[Any]) -> dict[str, tuple[int, dict[str, Any]]]:
    """fullUrl -> (index, resource); every entry has a resource and a request, fullUrls are unique."""
    by_url: dict[str, tuple[int, dict[str, Any]]] = {}
    for index, entry in enumerate(entries):
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            raise invalid(f"entry[{index}].resource is missing")
        if not entry.get("request"):
            raise invalid(f"entry[{index}].request is missing")
        full_url = entry.get("fullUrl")
        if full_url:
            if full_url in by_url:
                raise invalid(f"entry[{index}].fullUrl is used twice")
            by_url[full_url] = (index, resource)
    return by_url


_ROLE_OF_KIND = {"DocumentReference": "document", "Binary": "binary", "Patient": "patient"}


def _role(index: int, entry: dict[str, Any]) -> str:
    """The role of one entry: submissionset, folder, document, binary, patient or patch."""
    resource = entry["resource"]
    kind = resource.get("resourceType")
    method = entry["request"].get("method")
    if method == "PATCH":
        return "patch"
    if method != "POST":
        raise invalid(f"entry[{index}].request.method must be POST or PATCH")
    if kind == "List":
        return "submissionset" if _is_submission_set(resource) else "folder"
    if kind in _ROLE_OF_KIND:
        return _ROLE_OF_KIND[kind]
    raise invalid(f"entry[{index}]: {kind} is not expected in an ITI-65 bundle")


def read_submission(raw: Any, validator: FhirValidator | None = None) -> Submission:
    """Validate an ITI-65 transaction bundle and extract what the space stores."""
    validate_fhir(raw, validator)
    if raw.get("type") != "transaction":
        raise invalid("Bundle.type must be transaction")
    entries = raw.get("entry") or []
    if not entries:
        raise invalid("the bundle has no entry")
    by_url = _index_entries(entries)
    roles = [_role(index, entry) for index, entry in enumerate(entries)]
    patches = [(i, _read_patch(i, entries[i])) for i, role in enumerate(roles) if role == "patch"]
    submission_sets = [i for i, role in enumerate(roles) if role == "submissionset"]
    if len(submission_sets) != 1:
        raise invalid(f"expected exactly one SubmissionSet List, found {len(submission_sets)}")
    doc_indexes = [i for i, role in enumerate(roles) if role == "document"]
    if not doc_indexes:
        raise invalid("the bundle has no DocumentReference")
    ss_index = submission_sets[0]
    submission_set = entries[ss_index]["resource"]
    documents, patient = _read_documents(entries, doc_indexes, submission_set, by_url)
    if submission_set.get("subject") is not None:
        ss_subject = _read_subject(f"entry[{ss_index}].resource.subject", submission_set, by_url)
        if ss_subject != patient:
            raise invalid(f"entry[{ss_index}].resource.subject differs from the documents' subject")
    used_binaries = {d.binary_index for d in documents}
    for index, role in enumerate(roles):
        if role == "binary" and index not in used_binaries:
            raise invalid(f"entry[{index}]: the Binary is referenced by no DocumentReference")
    source_idnat, _ = _resolve_author(submission_set.get("source"), submission_set, by_url)
    return Submission(
        patient=patient,
        submission_set_index=ss_index,
        submission_set=submission_set,
        source_idnat=source_idnat,
        documents=documents,
        roles=roles,
        patches=patches,
    )


def _read_documents(
    entries: list[Any], doc_indexes: list[int], submission_set: dict[str, Any], by_url: dict[str, Any]
) -> tuple[list[SubmittedDocument], PatientKey]:
    """Every DocumentReference: listed in the SubmissionSet, unique uniqueId and Binary, one patient."""
    listed = {
        (item.get("item") or {}).get("reference")
        for item in submission_set.get("entry") or []
        if isinstance(item, dict)
    }
    documents: list[SubmittedDocument] = []
    patients: set[PatientKey] = set()
    for index in doc_indexes:
        entry = entries[index]
        doc = _read_document(index, entry["resource"], by_url)
        if entry.get("fullUrl") not in listed:
            raise invalid(f"entry[{index}]: the DocumentReference is not an entry of the SubmissionSet")
        if any(d.unique_id == doc.unique_id for d in documents):
            raise invalid(f"entry[{index}].resource.masterIdentifier is used twice in the bundle")
        if any(d.binary_index == doc.binary_index for d in documents):
            raise invalid(f"entry[{index}]: the Binary is referenced twice")
        patients.add(_read_subject(f"entry[{index}].resource.subject", entry["resource"], by_url))
        if len(patients) > 1:
            raise invalid(f"entry[{index}].resource.subject: all documents must be for one patient")
        documents.append(doc)
    return documents, next(iter(patients))


def _is_submission_set(resource: dict[str, Any]) -> bool:
    codings = (resource.get("code") or {}).get("coding") or []
    return any(c.get("code") == "submissionset" for c in codings if isinstance(c, dict))


def _read_patch(index: int, entry: dict[str, Any]) -> str:
    """Only the MHD patch that marks a DocumentReference superseded is understood."""
    url = str(entry["request"].get("url") or "")
    kind, _, target = url.partition("/")
    if kind != "DocumentReference" or not target:
        raise invalid(f"entry[{index}].request.url: only DocumentReference/<id> may be patched")
    resource = entry["resource"]
    if resource.get("resourceType") != "Parameters":
        raise invalid(f"entry[{index}].resource must be a Parameters patch")
    for parameter in resource.get("parameter") or []:
        parts = {p.get("name"): p for p in parameter.get("part") or []}
        path = (parts.get("path") or {}).get("valueString")
        op = (parts.get("type") or {}).get("valueCode")
        value = (parts.get("value") or {}).get("valueCode")
        if path != "DocumentReference.status" or op != "replace" or value != "superseded":
            raise invalid(f"entry[{index}]: only 'replace DocumentReference.status superseded' is supported")
    return target


def _read_document(index: int, resource: dict[str, Any], by_url: dict[str, Any]) -> SubmittedDocument:
    where = f"entry[{index}].resource"
    unique_id = (resource.get("masterIdentifier") or {}).get("value")
    if not unique_id:
        raise invalid(f"{where}.masterIdentifier.value is missing")
    content = resource.get("content") or []
    if not content:
        raise invalid(f"{where}.content is missing")
    attachment = content[0].get("attachment") or {}
    where_att = f"{where}.content[0].attachment"
    for name in ("url", "size", "hash", "title"):
        if attachment.get(name) in (None, ""):
            raise invalid(f"{where_att}.{name} is missing")
    period = (resource.get("context") or {}).get("period")
    if period is not None and not period.get("start"):
        raise invalid(f"{where}.context.period.start is missing")
    binary_index, binary, data, digest = _read_binary(where_att, attachment, by_url)
    # authors may be split (a Practitioner and an Organization): keep the first person and organisation
    author_idnat, author_org = None, None
    for author in resource.get("author") or []:
        person, org = _resolve_author(author, resource, by_url)
        author_idnat = author_idnat or person
        author_org = author_org or org
    return SubmittedDocument(
        entry_index=index,
        binary_index=binary_index,
        unique_id=str(unique_id),
        content=data,
        content_type=str(binary.get("contentType") or attachment.get("contentType") or ""),
        content_hash=digest,
        size=len(data),
        title=str(attachment["title"]),
        author_idnat=author_idnat,
        author_org=author_org,
        visibility=_read_visibility(where, resource),
        replaces=_read_replaces(where, resource, by_url),
        resource=resource,
    )


def _read_binary(
    where_att: str, attachment: dict[str, Any], by_url: dict[str, Any]
) -> tuple[int, dict[str, Any], bytes, str]:
    """The Binary an attachment points at, its decoded bytes and their base64 SHA-1, checked."""
    target = by_url.get(attachment["url"])
    if target is None or target[1].get("resourceType") != "Binary":
        raise invalid(f"{where_att}.url does not point to a Binary entry of the bundle")
    binary_index, binary = target
    try:
        data = base64.b64decode(binary.get("data") or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"entry[{binary_index}].resource.data is not base64") from exc
    if not data:
        raise invalid(f"entry[{binary_index}].resource.data is missing")
    if int(attachment["size"]) != len(data):
        raise invalid(f"{where_att}.size does not match the Binary data")
    digest = base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode("ascii")
    if attachment["hash"] != digest:
        raise invalid(f"{where_att}.hash is not the base64 SHA-1 of the Binary data")
    return binary_index, binary, data, digest


def _read_visibility(where: str, resource: dict[str, Any]) -> frozenset[str]:
    codes: set[str] = set()
    for i, label in enumerate(resource.get("securityLabel") or []):
        for coding in label.get("coding") or []:
            if coding.get("code") not in VISIBILITY_CODES:
                continue
            if coding.get("system") not in (f"urn:oid:{VISIBILITY_SYSTEM_OID}", VISIBILITY_SYSTEM_OID):
                # a visibility code under another system would be silently ignored by a real space
                raise invalid(f"{where}.securityLabel[{i}]: visibility codes use urn:oid:{VISIBILITY_SYSTEM_OID}")
            codes.add(str(coding["code"]))
    return frozenset(codes)


def _read_replaces(where: str, resource: dict[str, Any], by_url: dict[str, Any]) -> ReplacedRef | None:
    replaces = [r for r in resource.get("relatesTo") or [] if r.get("code") == "replaces"]
    if not replaces:
        return None
    if len(replaces) > 1:
        raise invalid(f"{where}.relatesTo: at most one 'replaces'")
    target = replaces[0].get("target") or {}
    identifier = target.get("identifier") or {}
    if identifier.get("value"):
        return ReplacedRef(unique_id=str(identifier["value"]))
    reference = str(target.get("reference") or "")
    if reference in by_url:
        inner = by_url[reference][1]
        value = (inner.get("masterIdentifier") or {}).get("value")
        if inner.get("resourceType") == "DocumentReference" and value:
            return ReplacedRef(unique_id=str(value))
    kind, _, ident = reference.partition("/")
    if kind == "DocumentReference" and ident:
        return ReplacedRef(document_id=ident)
    raise invalid(f"{where}.relatesTo[0].target must be an identifier or a DocumentReference")


def _read_subject(where: str, resource: dict[str, Any], by_url: dict[str, Any]) -> PatientKey:
    subject = resource.get("subject") or {}
    identifiers: list[dict[str, Any]] = [subject["identifier"]] if subject.get("identifier") else []
    reference = subject.get("reference")
    if not identifiers and reference in by_url and by_url[reference][1].get("resourceType") == "Patient":
        identifiers = by_url[reference][1].get("identifier") or []
    for identifier in identifiers:
        system = str(identifier.get("system") or "")
        if system.startswith(INS_OID_PREFIX) and identifier.get("value"):
            return PatientKey(system=system, value=str(identifier["value"]))
    raise invalid(f"{where}: expected an INS identifier (urn:oid:1.2.250.1.213.1.4.*) or a Patient entry carrying one")


def _resolve(reference: Any, container: dict[str, Any], by_url: dict[str, Any]) -> dict[str, Any] | None:
    if not isinstance(reference, str):
        return None
    if reference.startswith("#"):
        for contained in container.get("contained") or []:
            if contained.get("id") == reference[1:]:
                return dict(contained)
        return None
    if reference in by_url:
        return dict(by_url[reference][1])
    return None


def _resolve_author(ref: Any, container: dict[str, Any], by_url: dict[str, Any]) -> tuple[str | None, str | None]:
    """(IdNat_PS, IdNat_Struct) of an author reference: Practitioner, PractitionerRole or Organization."""
    if not isinstance(ref, dict):
        return None, None
    target = _resolve(ref.get("reference"), container, by_url)
    if target is None:
        return _idnat_ps([ref.get("identifier") or {}]), None
    kind = target.get("resourceType")
    if kind == "Organization":
        return None, _idnat_struct(target.get("identifier") or [])
    person = _idnat_ps(target.get("identifier") or [])
    org = None
    if kind == "PractitionerRole":
        practitioner = _resolve((target.get("practitioner") or {}).get("reference"), container, by_url)
        if practitioner is not None and person is None:
            person = _idnat_ps(practitioner.get("identifier") or [])
        organization = _resolve((target.get("organization") or {}).get("reference"), container, by_url)
        if organization is not None:
            org = _idnat_struct(organization.get("identifier") or [])
    return person, org


def _idnat_ps(identifiers: list[dict[str, Any]]) -> str | None:
    for identifier in identifiers:
        if identifier.get("system") == IDNAT_PS_SYSTEM and identifier.get("value"):
            return str(identifier["value"])
    for identifier in identifiers:
        # an RPPS number alone: IdNat_PS is "8" + RPPS
        if identifier.get("system") == RPPS_SYSTEM and identifier.get("value"):
            return "8" + str(identifier["value"])
    return None


def _idnat_struct(identifiers: list[dict[str, Any]]) -> str | None:
    for identifier in identifiers:
        if identifier.get("system") == IDNAT_STRUCT_SYSTEM and identifier.get("value"):
            return str(identifier["value"])
    return None
