"""ITI-57 metadata update (TD3.3a/b: masking, visibility): a new version of a registered DocumentEntry.

The request carries one SubmissionSet, the new version of each DocumentEntry (``lid`` = the registered
entry's entryUUID, a symbolic ``id``) and a ``HasMember`` SubmissionSet → entry with
``SubmissionSetStatus`` Original and ``PreviousVersion`` = the registered version (IHE ITI-57). Checked,
in order: the HasMember; the ``lid`` names a registered document (``UnresolvedReferenceException``) of
this patient (``XDSPatientIdDoesNotMatch``) that is Approved and keeps its uniqueId
(``XDSMetadataUpdateError``); ``PreviousVersion`` is its current version (``XDSMetadataVersionError``);
the requester is its author (``DMPNotAuthor``). Applied in one transaction: the stored document's
confidentiality codes (its visibility, as the pages and FHIR views show it), its metadata and version
(``VersionInfo``, given back by ITI-18 LeafClass). The sandbox keeps one row per document, so the
entryUUID stays; IHE gives the new version its own entryUUID under the same ``lid``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from lxml import etree

from passerelle.sandbox.dmp import ebrim, registry
from passerelle.sandbox.dmp.common import RIM, STATUS_APPROVED, failure, q
from passerelle.sandbox.dmp.ebrim import Metadata, RegistryObject
from passerelle.sandbox.dmp.rules import HAS_MEMBER
from passerelle.sandbox.store import VISIBILITY_SYSTEM_OID, SandboxStore, StoredDocument


@dataclass(frozen=True)
class _Change:
    doc: StoredDocument
    entry: RegistryObject
    version: int


def apply(store: SandboxStore, metadata: Metadata, ss: RegistryObject, requester: tuple[str, str], actor: str) -> None:
    """Check every new version against the registry, then store them all (or none)."""
    if any(a.type != HAS_MEMBER or a.source != ss.id for a in metadata.associations):
        raise failure("XDSMetadataUpdateError", "a metadata update carries only HasMember from the SubmissionSet")
    ins = ss.external.get(ebrim.SS_PATIENT, "").split("^", 1)[0]
    changes = [_check(store, metadata, ss, entry, ins, requester) for entry in metadata.entries]
    with store.transaction() as db:
        for change in changes:
            visibility = frozenset(
                c.code
                for c in change.entry.codes_of(ebrim.DE_CONFIDENTIALITY)
                if c.coding_scheme == VISIBILITY_SYSTEM_OID
            )
            store.set_visibility(db, change.doc.id, visibility)
            store.save_xds_metadata(db, change.doc.id, _stored_version(change))
            detail = f"ITI-57 metadata update v{change.version + 1}"
            store.add_trace(db, change.doc.patient_ins, actor, "update", change.doc.id, detail)


def _check(
    store: SandboxStore,
    metadata: Metadata,
    ss: RegistryObject,
    entry: RegistryObject,
    ins: str,
    requester: tuple[str, str],
) -> _Change:
    members = [a for a in metadata.associations if a.type == HAS_MEMBER and a.source == ss.id and a.target == entry.id]
    previous = (members[0].slots.get("PreviousVersion") or [""])[0] if len(members) == 1 else ""
    if not previous or members[0].slots.get("SubmissionSetStatus") != ["Original"]:
        raise failure(
            "XDSMetadataUpdateError", "a new version needs one HasMember with PreviousVersion (Original)", entry.id
        )
    doc = registry.by_entry_uuid(store, entry.attributes.get("lid", ""))
    if doc is None:
        raise failure("UnresolvedReferenceException", "the lid of the new version is not a registered entry", entry.id)
    if doc.patient_ins != ins:
        raise failure("XDSPatientIdDoesNotMatch", "the updated document belongs to another patient", entry.id)
    if registry.xds_status(doc) != STATUS_APPROVED or entry.external.get(ebrim.DE_UNIQUE) != doc.unique_id:
        raise failure("XDSMetadataUpdateError", "only an Approved entry is updated, under its own uniqueId", entry.id)
    version = registry.version_of(store, doc)
    if previous != str(version):
        raise failure("XDSMetadataVersionError", "PreviousVersion is not the entry's current version", entry.id)
    registry.check_author(doc, requester)
    return _Change(doc, entry, version)


def _stored_version(change: _Change) -> str:
    """The new version as the registry keeps it: the entryUUID, no status, ``VersionInfo`` bumped."""
    element = copy.deepcopy(change.entry.element)
    element.set("id", registry.entry_uuid(change.doc))
    for found in element.findall(q(RIM, "VersionInfo")):
        element.remove(found)
    registry.set_version(element, change.version + 1)
    return etree.tostring(element, encoding="unicode")
