"""Document → PDSm / IHE MHD ITI-65 "Provide Document Bundle" (FHIR R4 JSON).

Reading the space's answers (status lookup, transaction response, OperationOutcome code) is the
transport's job: :mod:`passerelle.adapters.mhd_answers`.

Pure functions over values: no I/O, no clock (the submission time comes in :class:`SubmissionInfo`).
Every ``fullUrl`` is a UUID 5 derived from the document unique id, so building the bundle twice from the
same inputs gives the same bytes (a re-push after a lost answer is byte-identical, and the space's
"same uniqueId and same hash" check answers ``200 OK`` instead of storing a duplicate).

Code systems are rendered as ``urn:oid:<OID>`` (docs/interop-reference.md, "XDS metadata"); a system that is already a
URI (``urn:…``, ``http…``) is kept as is.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from passerelle.mappings.document import (
    PS_ID_OID,
    STRUCTURE_ID_OID,
    Action,
    Author,
    Code,
    Document,
    Patient,
)

#: Namespace of every UUID 5 this module derives (fixed forever: changing it changes every fullUrl).
UUID_NAMESPACE = uuid.UUID("4a4e7f0e-6c1b-5b8e-9d3c-2f1a5c7e9b10")

RFC3986 = "urn:ietf:rfc:3986"
BUNDLE_PROFILE = (
    "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-comprehensive-provide-document-bundle"
)
DOCREF_PROFILE = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-comprehensive-document-reference"
SUBMISSIONSET_PROFILE = (
    "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-submissionset-comprehensive"
)
MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
EXT_DESIGNATION_TYPE = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType"
EXT_SOURCE_ID = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
EXT_AUTHOR_ORG = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-authorOrg"

_OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


@dataclass(frozen=True)
class SubmissionInfo:
    """What the SubmissionSet says beyond the documents.

    ``submission_time`` must be stable for one journal row (e.g. its reception time) if a re-push is to be
    byte-identical. ``unique_id`` defaults to a ``2.25.<uuid5>`` OID derived from the document ids.
    """

    source_id: str  # OID of the submitting system (this gateway instance)
    submission_time: datetime
    content_type: Code  # designationType / contentTypeCode (JDV_J59)
    author: Author | None = None  # defaults to the first document's submission_author (PRT SB), then author
    unique_id: str = ""
    title: str = ""


def fhir_system(system: str) -> str:
    """``urn:oid:<OID>`` for a bare OID; other systems (already URIs) unchanged."""
    return f"urn:oid:{system}" if _OID_RE.match(system) else system


def fhir_datetime(value: datetime) -> str:
    """FHIR dateTime. A naive datetime is taken as UTC (the document model should carry an offset)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def derived_uuid(kind: str, unique_id: str) -> str:
    """Deterministic ``urn:uuid:`` for one resource of one document."""
    return f"urn:uuid:{uuid.uuid5(UUID_NAMESPACE, f'{kind}:{unique_id}')}"


def derived_oid(seed: str) -> str:
    """A ``2.25`` OID (ITU-T X.667) derived from ``seed``."""
    return f"2.25.{uuid.uuid5(UUID_NAMESPACE, seed).int}"


def sha1_base64(content: bytes) -> str:
    """``Attachment.hash``: base64 of the raw SHA-1 digest (FHIR base64Binary)."""
    return base64.b64encode(hashlib.sha1(content, usedforsecurity=False).digest()).decode("ascii")


def patient_identifier(patient: Patient) -> dict[str, str]:
    return {"system": f"urn:oid:{patient.ins_oid}", "value": patient.ins}


def codeable(code: Code) -> dict[str, Any]:
    coding: dict[str, str] = {"system": fhir_system(code.system), "code": code.code}
    if code.display:
        coding["display"] = code.display
    return {"coding": [coding]}


def build_provide_bundle(docs: Sequence[Document], submission: SubmissionInfo) -> dict[str, Any]:
    """ITI-65 transaction Bundle: one SubmissionSet List, then a DocumentReference and its Binary per
    document, in that order (the response entries come back in the same order).

    All documents must be publications or replacements of the same patient; deletions are not bundles.
    Raises :class:`ValueError` otherwise (a programming error in the caller, not an input problem).
    """
    if not docs:
        raise ValueError("an ITI-65 bundle needs at least one document")
    patient = docs[0].patient
    for doc in docs:
        if doc.action == Action.DELETE:
            raise ValueError("a deletion is not sent as an ITI-65 bundle")
        if (doc.patient.ins, doc.patient.ins_oid) != (patient.ins, patient.ins_oid):
            raise ValueError("all documents of one submission must belong to the same patient")
        if not doc.patient.ins or not doc.patient.ins_oid:
            raise ValueError("a document for the patient space needs an INS")

    ss_unique_id = submission.unique_id or derived_oid("submissionset:" + "|".join(d.unique_id for d in docs))
    ss_url = derived_uuid("submissionset", ss_unique_id)
    entries: list[dict[str, Any]] = []
    doc_entries: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for doc in docs:
        ref_url = derived_uuid("documentreference", doc.unique_id)
        bin_url = derived_uuid("binary", doc.unique_id)
        doc_entries.append(_entry(ref_url, _document_reference(doc, ref_url, bin_url, submission)))
        doc_entries.append(_entry(bin_url, _binary(doc)))
        items.append({"item": {"reference": ref_url}})
    author = submission.author or docs[0].submission_author or docs[0].author
    entries.append(_entry(ss_url, _submission_set(patient, author, submission, ss_unique_id, ss_url, items)))
    entries.extend(doc_entries)
    bundle = {
        "resourceType": "Bundle",
        "meta": {"profile": [BUNDLE_PROFILE]},
        "type": "transaction",
        "entry": entries,
    }
    pruned: dict[str, Any] = _prune(bundle)
    return pruned


def _prune(value: Any) -> Any:
    """Drop empty strings, ``None`` and emptied lists/objects: FHIR forbids empty values.

    Plain loops, not comprehensions over generators: this visits every node of every bundle."""
    if type(value) is dict:
        return _prune_dict(value)
    if type(value) is list:
        return _prune_list(value)
    return value


def _prune_dict(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        kind = type(item)
        if kind is dict:
            item = _prune_dict(item)
        elif kind is list:
            item = _prune_list(item)
        elif item is None or item == "":
            continue
        if item or not (kind is dict or kind is list):
            out[key] = item
    return out


def _prune_list(value: list[Any]) -> list[Any]:
    return [item for item in map(_prune, value) if item or not (type(item) is dict or type(item) is list)
            if item is not None and item != ""]  # fmt: skip


def _entry(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def _submission_set(
    patient: Patient,
    author: Author,
    submission: SubmissionInfo,
    unique_id: str,
    full_url: str,
    items: list[dict[str, Any]],
) -> dict[str, Any]:
    contained, author_ref, org_ref = _author_resources(author, "ss-author")
    source: dict[str, Any] = {}
    if author_ref:
        source["reference"] = author_ref
    if org_ref:
        source["extension"] = [{"url": EXT_AUTHOR_ORG, "valueReference": {"reference": org_ref}}]
    if not source:
        source["display"] = "Passerelle"
    resource: dict[str, Any] = {
        "resourceType": "List",
        "meta": {"profile": [SUBMISSIONSET_PROFILE]},
    }
    if contained:
        resource["contained"] = contained
    resource.update(
        {
            "extension": [
                {"url": EXT_DESIGNATION_TYPE, "valueCodeableConcept": codeable(submission.content_type)},
                {
                    "url": EXT_SOURCE_ID,
                    "valueIdentifier": {"system": RFC3986, "value": f"urn:oid:{submission.source_id}"},
                },
            ],
            "identifier": [
                {"use": "usual", "system": RFC3986, "value": f"urn:oid:{unique_id}"},
                {"use": "official", "system": RFC3986, "value": full_url},
            ],
            "status": "current",
            "mode": "working",
            "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]},
            "subject": {"identifier": patient_identifier(patient)},
            "date": fhir_datetime(submission.submission_time),
            "source": source,
            "entry": items,
        }
    )
    if submission.title:
        resource["title"] = submission.title
    return resource


def _author_resources(author: Author, prefix: str) -> tuple[list[dict[str, Any]], str, str]:
    """Contained resources for one author: (resources, author reference, organisation reference)."""
    contained: list[dict[str, Any]] = []
    author_ref = org_ref = ""
    if author.person_id:
        practitioner: dict[str, Any] = {
            "resourceType": "Practitioner",
            "id": f"{prefix}-ps",
            "identifier": [{"system": f"urn:oid:{PS_ID_OID}", "value": author.person_id}],
        }
        name: dict[str, Any] = {}
        if author.family:
            name["family"] = author.family
        if author.given:
            name["given"] = [author.given]
        if name:
            practitioner["name"] = [name]
        if author.role is not None:
            practitioner["qualification"] = [{"code": codeable(author.role)}]
        contained.append(practitioner)
        author_ref = f"#{prefix}-ps"
    elif author.device:
        contained.append(
            {
                "resourceType": "Device",
                "id": f"{prefix}-device",
                "deviceName": [{"name": author.device, "type": "user-friendly-name"}],
            }
        )
        author_ref = f"#{prefix}-device"
    if author.organisation_id or author.organisation_name:
        org: dict[str, Any] = {"resourceType": "Organization", "id": f"{prefix}-org"}
        if author.organisation_id:
            org["identifier"] = [{"system": f"urn:oid:{STRUCTURE_ID_OID}", "value": author.organisation_id}]
        if author.organisation_name:
            org["name"] = author.organisation_name
        contained.append(org)
        org_ref = f"#{prefix}-org"
    return contained, author_ref, org_ref


def _document_reference(doc: Document, full_url: str, binary_url: str, submission: SubmissionInfo) -> dict[str, Any]:
    contained, author_ref, org_ref = _author_resources(doc.author, "author")
    authors = [{"reference": ref} for ref in (author_ref, org_ref) if ref]
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [DOCREF_PROFILE]},
    }
    authenticator_ref = ""
    if doc.legal_authenticator is not None and doc.legal_authenticator.person_id:
        auth_contained, authenticator_ref, _ = _author_resources(
            doc.legal_authenticator.model_copy(update={"organisation_id": "", "organisation_name": ""}),
            "authenticator",
        )
        contained.extend(auth_contained)
    if doc.patient.local_id and doc.patient.local_id_oid:
        # sourcePatientInfo: the local identifier only (no demographics travel in the metadata).
        contained.append(
            {
                "resourceType": "Patient",
                "id": "source-patient",
                "identifier": [{"system": f"urn:oid:{doc.patient.local_id_oid}", "value": doc.patient.local_id}],
            }
        )
    if contained:
        resource["contained"] = contained
    resource.update(
        {
            "masterIdentifier": {"system": RFC3986, "value": f"urn:oid:{doc.unique_id}"},
            "identifier": [{"use": "official", "system": RFC3986, "value": full_url}],
            "status": "current",
            "type": codeable(doc.type_code),
            "category": [codeable(doc.class_code)],
            "subject": {"identifier": patient_identifier(doc.patient)},
            "date": fhir_datetime(submission.submission_time),
        }
    )
    if authors:
        resource["author"] = authors
    if authenticator_ref:
        resource["authenticator"] = {"reference": authenticator_ref}
    if org_ref:
        resource["custodian"] = {"reference": org_ref}
    if doc.action == Action.REPLACE and doc.replaces:
        resource["relatesTo"] = [
            {
                "code": "replaces",
                "target": {"identifier": {"system": RFC3986, "value": f"urn:oid:{doc.replaces}"}},
            }
        ]
    resource["description"] = doc.title
    if doc.confidentiality:
        resource["securityLabel"] = [codeable(code) for code in doc.confidentiality]
    resource["content"] = [
        {
            "attachment": {
                "contentType": doc.mime_type,
                "language": doc.language,
                "url": binary_url,
                "size": doc.size,
                "hash": sha1_base64(doc.content),
                "title": doc.title,
                "creation": fhir_datetime(doc.creation_time),
            },
            "format": _coding(doc.format_code),
        }
    ]
    resource["context"] = _context(doc)
    return resource


def _coding(code: Code) -> dict[str, str]:
    coding = {"system": fhir_system(code.system), "code": code.code}
    if code.display:
        coding["display"] = code.display
    return coding


def _context(doc: Document) -> dict[str, Any]:
    context: dict[str, Any] = {}
    period = {"start": fhir_datetime(doc.service_start or doc.creation_time)}
    if doc.service_stop is not None:
        period["end"] = fhir_datetime(doc.service_stop)
    context["period"] = period
    if doc.facility_type is not None:
        context["facilityType"] = codeable(doc.facility_type)
    if doc.practice_setting is not None:
        context["practiceSetting"] = codeable(doc.practice_setting)
    if doc.patient.local_id and doc.patient.local_id_oid:
        context["sourcePatientInfo"] = {"reference": "#source-patient"}
    if doc.reference_ids:
        related = []
        for ref in doc.reference_ids:
            identifier: dict[str, Any] = {
                "type": {"coding": [{"system": RFC3986, "code": ref.type}]},
                "value": ref.value,
            }
            if ref.assigner:
                identifier["system"] = fhir_system(ref.assigner)
            related.append({"identifier": identifier})
        context["related"] = related
    return context


def _binary(doc: Document) -> dict[str, Any]:
    return {
        "resourceType": "Binary",
        "contentType": doc.mime_type,
        "data": base64.b64encode(doc.content).decode("ascii"),
    }


def deletion_identifier(doc: Document) -> str:
    """The token a deletion searches on: ``urn:ietf:rfc:3986|urn:oid:<uniqueId>``."""
    return f"{RFC3986}|urn:oid:{doc.replaces or doc.unique_id}"
