"""Builds the exact requests of the DMP transport (envelope, VIHF, XAdES, MTOM) without sending them.

Used by :class:`passerelle.adapters.dmp.client.DmpSpace` and by ``passerelle map --transport dmp`` (which
writes them for review). The clock is injected; identifiers that must not change on a re-send (document
uniqueIds, submission set uniqueId, Content-IDs) are derived from the documents, the rest (message ids,
VIHF ids, times) are fresh per request.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from datetime import datetime

from lxml import etree

from passerelle.adapters.dmp.credentials import SigningIdentity
from passerelle.adapters.dmp.envelope import build_envelope, message_id, mtom_package, plain_content_type
from passerelle.adapters.dmp.settings import DmpSettings
from passerelle.adapters.dmp.transport import Exchange
from passerelle.adapters.dmp.vihf import Sender, build_vihf, sender_for
from passerelle.adapters.dmp.xades import SignedDocument, sign_submission_set
from passerelle.mappings.document import Author, Code, Document, Patient
from passerelle.mappings.xds import queries, td02
from passerelle.mappings.xds.queries import StatusChange
from passerelle.mappings.xds.rim import derive_oid
from passerelle.mappings.xds.submission import (
    Structure,
    Submission,
    build_provide_request,
    signature_unique_id,
    submission_unique_id,
)

ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI57 = "urn:ihe:iti:2010:UpdateDocumentSet"
FACILITY_SYSTEM = "1.2.250.1.71.4.2.4"
PRACTICE_SYSTEM = "1.2.250.1.213.1.1.4.9"


class DmpRequests:
    """Request factory for one structure. ``base_url`` is the services base (``…/v2/services``)."""

    def __init__(
        self,
        base_url: str,
        dmp: DmpSettings,
        identity: SigningIdentity,
        *,
        source_id: str,
        content_type: Code,
        now: Callable[[], datetime],
    ) -> None:
        self.urls = {name: f"{base_url.rstrip('/')}/{name}" for name in ("patients", "repository", "registry")}
        self.identity = identity
        self.now = now
        self.source_id = source_id
        self.content_type = content_type
        self.dmp = dmp
        self.structure = Structure(
            id=dmp.structure_id,
            name=dmp.structure_name or identity.organisation or dmp.structure_id,
            facility_type=Code(code=dmp.activity_sector, system=FACILITY_SYSTEM, display=dmp.activity_sector),
            practice_setting=Code(code=dmp.practice_setting, system=PRACTICE_SYSTEM, display=dmp.practice_setting),
        )

    def _envelope(
        self, action: str, service: str, body: etree._Element, patient: Patient, sender: Sender
    ) -> tuple[str, bytes]:
        msg_id = message_id()
        vihf = build_vihf(self.identity, self.dmp, sender, patient, self.now())
        return msg_id, build_envelope(action, self.urls[service], body, vihf, msg_id)

    def _plain(
        self, transaction: str, action: str, service: str, body: etree._Element, patient: Patient, sender: Sender
    ) -> Exchange:
        msg_id, envelope = self._envelope(action, service, body, patient, sender)
        return Exchange(transaction, self.urls[service], plain_content_type(action), envelope, msg_id)

    def submission(self, unique_id: str, author: Author | None, time: datetime | None = None) -> Submission:
        return Submission(
            unique_id=unique_id,
            source_id=self.source_id,
            time=time or self.now(),
            content_type=self.content_type,
            structure=self.structure,
            author=author,
        )

    def provide(self, doc: Document, replaced_entries: Mapping[str, str] | None = None) -> Exchange:
        """ITI-41 for one document (publication or replacement), signed submission set, MTOM."""
        ss_uid = submission_unique_id([doc])
        now = self.now()
        sig_uid = signature_unique_id(ss_uid, now)
        signature = sign_submission_set(
            ss_uid, sig_uid, [SignedDocument(doc.unique_id, doc.content, _is_xml(doc))], self.identity, now
        )
        request = build_provide_request(
            [doc], self.submission(ss_uid, None, now), signature=signature, replaced_entries=replaced_entries
        )
        msg_id, envelope = self._envelope(
            ITI41, "repository", request.body, doc.patient, sender_for(doc.author, self.dmp)
        )
        boundary = f"MIMEBoundary_{secrets.token_hex(16)}"
        content_type, body = mtom_package(envelope, request.parts, ITI41, boundary)
        return Exchange("ITI-41", self.urls["repository"], content_type, body, msg_id)

    def get_documents(self, unique_ids: list[str], patient: Patient, author: Author | None) -> Exchange:
        return self._plain(
            "ITI-18", ITI18, "registry", queries.get_documents(unique_ids), patient, sender_for(author, self.dmp)
        )

    def update_status(self, doc: Document, entry_uuid: str, current_status: str, change: StatusChange) -> Exchange:
        """ITI-57 availability-status change of ``entry_uuid`` on behalf of ``doc``'s author."""
        author = doc.submission_author or doc.author
        ss_uid = derive_oid(f"update:{change.value}:{entry_uuid}:{current_status}")
        body = queries.update_availability(
            self.submission(ss_uid, author), doc.patient, entry_uuid, current_status, change
        )
        return self._plain("ITI-57", ITI57, "registry", body, doc.patient, sender_for(doc.author, self.dmp))

    def update_confidentiality(self, doc: Document, entry: etree._Element) -> Exchange:
        author = doc.submission_author or doc.author
        ss_uid = derive_oid(f"confidentiality:{doc.unique_id}:" + ",".join(c.code for c in doc.confidentiality))
        body = queries.update_confidentiality(self.submission(ss_uid, author), doc.patient, entry, doc.confidentiality)
        return self._plain("ITI-57", ITI57, "registry", body, doc.patient, sender_for(doc.author, self.dmp))

    def td02(self, patient: Patient, author_id: str) -> Exchange:
        body = td02.build_query(
            patient,
            sender_oid=self.source_id,
            software_name=self.dmp.software_name,
            message_id=message_id()[9:],
            query_id=message_id()[9:],
            now=self.now(),
        )
        sender = sender_for(
            Author(person_id=author_id) if author_id and author_id != self.dmp.structure_id else None, self.dmp
        )
        return self._plain("TD0.2", td02.ACTION, "patients", body, patient, sender)


def _is_xml(doc: Document) -> bool:
    return doc.mime_type in ("text/xml", "application/xml") or doc.mime_type.endswith("+xml")
