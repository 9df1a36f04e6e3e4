"""ITI-18 stored queries and ITI-57 updates (TD3.1, TD3.3a–d) for the DMP's registry service.

- :func:`get_documents` (GetDocuments by uniqueId, full metadata or references) and
  :func:`find_documents` (FindDocuments by patient and status);
- :func:`update_availability` (ITI-57 ``UpdateAvailabilityStatus``: deletion, archiving, unarchiving):
  a submission set and one association carrying ``OriginalStatus`` (which must be the entry's current
  status) and ``NewStatus``; no document, no signature;
- :func:`update_confidentiality` (ITI-57 metadata update, HL7v2 ``MODIF_CONF_CODE``): a new version of
  the DocumentEntry read from the registry (same ``lid``), its confidentiality codes replaced, linked by a
  ``HasMember`` that names the ``PreviousVersion``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from enum import StrEnum

from lxml import etree

from passerelle.mappings.document import Code, Patient
from passerelle.mappings.xds import ns
from passerelle.mappings.xds.rim import association, classification, element, q, slot
from passerelle.mappings.xds.submission import SUBMISSION_SET_ID, RegistryObjects, Submission


class StatusChange(StrEnum):
    """The availability-status changes the DMP offers a feeding system (TD3.3c, TD3.3d)."""

    DELETE = "delete"
    ARCHIVE = "archive"
    UNARCHIVE = "unarchive"


#: Allowed original statuses and the new status of each change.
TRANSITIONS: dict[StatusChange, tuple[frozenset[str], str]] = {
    StatusChange.DELETE: (frozenset({ns.APPROVED, ns.ARCHIVED}), ns.DELETED),
    StatusChange.ARCHIVE: (frozenset({ns.APPROVED}), ns.ARCHIVED),
    StatusChange.UNARCHIVE: (frozenset({ns.ARCHIVED}), ns.APPROVED),
}


def _quoted(values: Sequence[str]) -> str:
    for value in values:
        if "'" in value:
            raise ValueError("a query parameter cannot contain a quote")
    return "(" + ",".join(f"'{v}'" for v in values) + ")"


def _adhoc(query_id: str, params: list[tuple[str, str]], return_type: str) -> etree._Element:
    root = element("AdhocQueryRequest", ns.QUERY)
    etree.SubElement(root, f"{{{ns.QUERY}}}ResponseOption", returnComposedObjects="true", returnType=return_type)
    query = etree.SubElement(root, q("AdhocQuery"), id=query_id)
    for name, value in params:
        slot(query, name, [value])
    return root


def get_documents(unique_ids: Sequence[str], *, leaf_class: bool = True) -> etree._Element:
    """GetDocuments by uniqueId. ``LeafClass`` answers carry status, hash and size of each entry."""
    if not unique_ids:
        raise ValueError("GetDocuments needs at least one uniqueId")
    return _adhoc(
        ns.GET_DOCUMENTS,
        [("$XDSDocumentEntryUniqueId", _quoted(unique_ids))],
        "LeafClass" if leaf_class else "ObjectRef",
    )


def find_documents(patient: Patient, statuses: Sequence[str] = (ns.APPROVED,)) -> etree._Element:
    """FindDocuments for one patient (INS CX) in the given availability statuses."""
    cx = f"'{patient.ins}^^^&{patient.ins_oid}&ISO^NH'"
    return _adhoc(
        ns.FIND_DOCUMENTS,
        [("$XDSDocumentEntryPatientId", cx), ("$XDSDocumentEntryStatus", _quoted(statuses))],
        "LeafClass",
    )


def _submit_with_set(submission: Submission, patient: Patient) -> tuple[etree._Element, RegistryObjects]:
    if submission.author is None:
        raise ValueError("an ITI-57 update needs the submission set's author")
    root = element("SubmitObjectsRequest", ns.LCM)
    objects = etree.SubElement(root, q("RegistryObjectList"))
    builder = RegistryObjects(objects, submission, patient, submission.author)
    builder.submission_set()
    return root, builder


def update_availability(
    submission: Submission, patient: Patient, entry_uuid: str, current_status: str, change: StatusChange
) -> etree._Element:
    """ITI-57 ``UpdateAvailabilityStatus`` of one entry. Raises ValueError when ``current_status`` does
    not allow ``change`` (e.g. deleting an entry already deleted)."""
    allowed, new_status = TRANSITIONS[change]
    if current_status not in allowed:
        raise ValueError(f"cannot {change.value} an entry whose status is {current_status.rsplit(':', 1)[-1]}")
    root, builder = _submit_with_set(submission, patient)
    association(
        builder.objects,
        "as01",
        ns.UPDATE_AVAILABILITY,
        SUBMISSION_SET_ID,
        entry_uuid,
        [("OriginalStatus", [current_status]), ("NewStatus", [new_status])],
    )
    return root


def update_confidentiality(
    submission: Submission, patient: Patient, entry: etree._Element, codes: Sequence[Code]
) -> etree._Element:
    """ITI-57 metadata update: a copy of the registry's ``ExtrinsicObject`` ``entry`` (LeafClass) as a new
    version (symbolic id, same ``lid``) whose confidentiality codes are ``codes``. Raises ValueError when
    the entry has no ``lid`` or version."""
    lid = entry.get("lid") or entry.get("id") or ""
    version = entry.find(q("VersionInfo"))
    previous = version.get("versionName", "") if version is not None else ""
    if not lid or not previous:
        raise ValueError("the registry entry has no lid or version")
    root, builder = _submit_with_set(submission, patient)
    new = copy.deepcopy(entry)
    new_id = "Document01"
    _retarget(new, new_id)
    new.set("lid", lid)
    for attr in ("status", "home"):
        if attr in new.attrib:
            del new.attrib[attr]
    for old in [c for c in new.findall(q("Classification")) if c.get("classificationScheme") == ns.DE_CONFIDENTIALITY]:
        new.remove(old)
    if version is not None:
        new.remove(new.find(q("VersionInfo")))  # type: ignore[arg-type]
    anchor = _first_classification(new)
    for index, code in enumerate(codes, start=1):
        built = classification(new, ns.DE_CONFIDENTIALITY, new_id, f"clconf{index:02d}", code)
        if anchor is not None:
            anchor.addprevious(built)
    builder.objects.append(new)
    association(
        builder.objects,
        "as01",
        ns.HAS_MEMBER,
        SUBMISSION_SET_ID,
        new_id,
        [("SubmissionSetStatus", ["Original"]), ("PreviousVersion", [previous])],
    )
    return root


def _retarget(entry: etree._Element, new_id: str) -> None:
    old_id = entry.get("id", "")
    entry.set("id", new_id)
    for child in entry.iter(q("Classification"), q("ExternalIdentifier")):
        for attr in ("classifiedObject", "registryObject"):
            if child.get(attr) == old_id:
                child.set(attr, new_id)
        ident = child.get("id", "")
        if ident.startswith("urn:uuid:"):
            child.set("id", f"{child.tag.rsplit('}', 1)[-1][:2].lower()}-{ident[9:]}")


def _first_classification(entry: etree._Element) -> etree._Element | None:
    return entry.find(q("Classification"))
