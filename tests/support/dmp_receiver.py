"""An independent DMP SOAP receiver for the tests: TD0.2, ITI-41, ITI-18 and ITI-57 on a real socket
(127.0.0.1, port 0, optionally mutual TLS), checking every request part by part with
:mod:`tests.support.dmp_checks` and :mod:`tests.support.dmp_checks_xds`, storing accepted documents, and
answering on demand: ``plan`` holds the next answers (``success``, ``failure:<code>``,
``sender_fault:<subcode>``, ``receiver_fault``, ``http503``), and what a platform or a proxy in front of
it answers that a sandbox never does: ``html:<status>`` (a proxy's error page), ``redirect:<status>:<url>``,
``endless`` (a SOAP answer that never ends; ``cut`` is set once the client hung up),
``elsewhere:<sender_fault:<subcode>|success>`` (an answer whose ``RelatesTo`` names another message), and
``anonymous:<answer>`` (``answer`` as planned, the document stored on success, without ``RelatesTo``).
Every other answer, a refusal of the receiver's own checks included, carries ``RelatesTo`` = the
request's MessageID whenever it could be read, as the DMP's services do.
Shares no code with the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.asgi_server import serving
from tests.support.dmp_checks import (
    Refused,
    body_payload,
    check_envelope,
    check_vihf,
    parser,
    read_mtom,
    require,
)
from tests.support.dmp_checks_xds import check_metadata, check_xades, resolve_and_validate
from tests.support.xml_ns import HL7, QUERY, RIM, SOAP, WSA

RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
ACTIONS = {
    "repository": "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b",
    "registry": ("urn:ihe:iti:2007:RegistryStoredQuery", "urn:ihe:iti:2010:UpdateDocumentSet"),
    "patients": "urn:hl7-org:v3:PRPA_IN201307UV02",
}


@dataclass
class Stored:
    entry_uuid: str
    unique_id: str
    patient_id: str
    status: str
    hash: str
    size: int
    mime_type: str
    content: bytes


@dataclass
class Seen:
    transaction: str
    problem: str = ""  # the first failed check ("" when everything passed)
    answer: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class DmpReceiver:
    def __init__(self, schema_dir: Path, ca: x509.Certificate) -> None:
        self.schema_dir = schema_dir
        self.ca = ca
        self.store: dict[str, list[Stored]] = {}
        self.seen: list[Seen] = []
        self.plan: list[str] = []
        self.multipart_answers = True
        self.versioned = True  # ITI-18 LeafClass entries carry VersionInfo (a registry with metadata update does)
        self.closed: set[str] = set()  # INS whose DMP is closed
        self.unknown: set[str] = set()  # INS without a DMP
        self.base_url = ""
        self.cut = asyncio.Event()  # an ``endless`` answer's client hung up

    @property
    def problems(self) -> list[str]:
        return [f"{s.transaction}: {s.problem}" for s in self.seen if s.problem]

    def transactions(self) -> list[str]:
        return [s.transaction for s in self.seen]

    def documents(self, status: str = APPROVED) -> list[Stored]:
        return [d for versions in self.store.values() for d in versions if d.status == status]

    # --- ASGI -----------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/si-dmp-server/v2/services/{service}", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        service = request.path_params["service"]
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        planned = self.plan.pop(0) if self.plan and service == "repository" else "success"
        if planned == "http503":
            self.seen.append(Seen("ITI-41", answer="503"))
            return Response("busy", status_code=503, headers={"Retry-After": "0"})
        canned = self._canned(planned)
        if canned is not None:
            self.seen.append(Seen("ITI-41", answer=planned))
            return canned
        seen = Seen(service)  # this request's own record: requests run concurrently, seen[-1] may be another's
        self.seen.append(seen)
        try:
            return await asyncio.to_thread(self._dispatch, seen, content_type, body, planned)
        except Refused as exc:
            seen.problem = exc.what
            msg_id = _message_id(body)
            return (
                self._fault("Sender", exc.code, exc.what, msg_id)
                if exc.code.startswith(("soap:", "DMP"))
                else self._registry(msg_id, "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse", [exc.code])
            )

    def _canned(self, planned: str) -> Response | None:
        """The platform's or a proxy's answers that do not read the request."""
        kind, _, rest = planned.partition(":")
        if kind == "html":
            page = b"<html><head><title>502 Bad Gateway</title></head><body>upstream 1.2.250.1.213.1.4.8</body></html>"
            return Response(page, status_code=int(rest), media_type="text/html")
        if kind == "redirect":
            status, _, location = rest.partition(":")
            return Response(b"", status_code=int(status), headers={"Location": location})
        if kind == "endless":
            return StreamingResponse(self._endless(), media_type="application/soap+xml; charset=UTF-8")
        return None

    async def _endless(self) -> AsyncIterator[bytes]:
        try:
            yield b'<?xml version="1.0"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body>'
            while True:
                yield b"<x>" + b"0" * 65536 + b"</x>"
                await asyncio.sleep(0)  # the server shares its loop with the test's client
        finally:
            self.cut.set()

    def _dispatch(self, seen: Seen, content_type: str, body: bytes, planned: str) -> Response:
        service = seen.transaction
        if service == "repository":
            seen.transaction = "ITI-41"
            return self._iti41(seen, content_type, body, planned)
        require(content_type.startswith("application/soap+xml"), "soap:Sender", "plain SOAP 1.2 expected")
        envelope = etree.fromstring(body, parser())
        action = envelope.findtext(f"{{{SOAP}}}Header/{{{WSA}}}Action") or ""
        if service == "patients":
            seen.transaction = "TD0.2"
            return self._td02(envelope)
        if action.endswith("RegistryStoredQuery"):
            seen.transaction = "ITI-18"
            return self._iti18(seen, envelope)
        seen.transaction = "ITI-57"
        return self._iti57(seen, envelope)

    # --- transactions -----------------------------------------------------------------------------------

    def _iti41(self, seen: Seen, content_type: str, body: bytes, planned: str) -> Response:
        request = read_mtom(content_type, body)
        msg_id = check_envelope(request.envelope, ACTIONS["repository"], "/repository")  # type: ignore[arg-type]
        vihf = check_vihf(request.envelope, self.ca, datetime.now(UTC))
        payload = body_payload(request.envelope)
        contents = resolve_and_validate(payload, request.parts, self.schema_dir)
        submission = check_metadata(payload, contents)
        require(vihf.resource_id == submission.patient_id, "XDSPatientIdDoesNotMatch", "VIHF resource-id = patientId")
        require(
            submission.author_institution.endswith(f"^{vihf.structure_id}"),
            "DMPInvalidCertificate",
            "authorInstitution = certificate OU",
        )
        check_xades(submission, self.ca, vihf.certificate)
        seen.detail = {"rplc": submission.rplc_targets, "unique_ids": [d.unique_id for d in submission.documents]}
        action = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
        if planned.startswith("anonymous:"):  # the answer as planned, without RelatesTo
            planned, msg_id = planned.removeprefix("anonymous:"), ""
        if planned.startswith("elsewhere:"):  # a well-formed answer, to another message
            seen.answer, planned, msg_id = planned, planned.removeprefix("elsewhere:"), f"urn:uuid:{uuid.uuid4()}"
            if planned == "success":
                return self._registry(msg_id, action, [])
        if planned == "receiver_fault":
            seen.answer = "receiver_fault"
            return self._fault("Receiver", "", "internal error", msg_id)
        if planned.startswith("sender_fault:"):
            seen.answer = planned
            return self._fault("Sender", planned.split(":", 1)[1], "refused", msg_id)
        if planned.startswith("failure:"):
            seen.answer = planned
            return self._registry(msg_id, action, [planned.split(":", 1)[1]])
        errors = self._store(submission)
        seen.answer = "Failure" if errors else "Success"
        return self._registry(msg_id, action, errors)

    def _store(self, submission: Any) -> list[str]:
        for target in submission.rplc_targets:
            old = next((d for v in self.store.values() for d in v if d.entry_uuid == target), None)
            if old is None:
                return ["UnresolvedReferenceException"]
            if old.status != APPROVED or old.patient_id != submission.patient_id:
                return ["XDSRegistryDeprecatedDocumentError"]
        for doc in submission.documents:
            for existing in self.store.get(doc.unique_id, []):
                return ["XDSDuplicateUniqueIdInRegistry" if existing.hash == doc.hash else "XDSNonIdenticalHash"]
        for target in submission.rplc_targets:
            for versions in self.store.values():
                for d in versions:
                    if d.entry_uuid == target:
                        d.status = DEPRECATED
        for doc in submission.documents:
            self.store.setdefault(doc.unique_id, []).append(
                Stored(
                    f"urn:uuid:{uuid.uuid4()}",
                    doc.unique_id,
                    doc.patient_id,
                    APPROVED,
                    doc.hash,
                    doc.size,
                    doc.mime_type,
                    doc.content,
                )
            )
        return []

    def _common(self, envelope: etree._Element, action: str, endpoint: str) -> str:
        msg_id = check_envelope(envelope, action, endpoint)
        check_vihf(envelope, self.ca, datetime.now(UTC))
        return msg_id

    def _iti18(self, seen: Seen, envelope: etree._Element) -> Response:
        msg_id = self._common(envelope, "urn:ihe:iti:2007:RegistryStoredQuery", "/registry")
        query = body_payload(envelope).find(f"{{{RIM}}}AdhocQuery")
        require(
            query is not None and query.get("id") == "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4",
            "XDSRegistryError",
            "GetDocuments",
        )
        assert query is not None
        value = (
            query.findtext(f"{{{RIM}}}Slot[@name='$XDSDocumentEntryUniqueId']/{{{RIM}}}ValueList/{{{RIM}}}Value") or ""
        )
        wanted = [v.strip().strip("'") for v in value.strip("()").split(",") if v.strip()]
        seen.detail = {"unique_ids": wanted}
        response = self._answer_root(
            f"{{{QUERY}}}AdhocQueryResponse", "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
        )
        objects = etree.SubElement(response, f"{{{RIM}}}RegistryObjectList")
        for unique_id in wanted:
            for doc in self.store.get(unique_id, []):
                objects.append(_leaf(doc, self.versioned))
        return self._envelope(msg_id, "urn:ihe:iti:2007:RegistryStoredQueryResponse", response)

    def _iti57(self, seen: Seen, envelope: etree._Element) -> Response:
        msg_id = self._common(envelope, "urn:ihe:iti:2010:UpdateDocumentSet", "/registry")
        payload = body_payload(envelope)
        for assoc in payload.iter(f"{{{RIM}}}Association"):
            if assoc.get("associationType") != "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus":
                continue
            slots = {s.get("name"): s.findtext(f".//{{{RIM}}}Value") for s in assoc.findall(f"{{{RIM}}}Slot")}
            doc = next((d for v in self.store.values() for d in v if d.entry_uuid == assoc.get("targetObject")), None)
            require(doc is not None, "UnresolvedReferenceException", "ITI-57 target")
            assert doc is not None
            require(slots.get("OriginalStatus") == doc.status, "XDSMetadataUpdateError", "OriginalStatus")
            doc.status = slots.get("NewStatus") or doc.status
            seen.detail = {"target": doc.unique_id, "new_status": doc.status}
        return self._registry(msg_id, "urn:ihe:iti:2010:UpdateDocumentSet-Response", [])

    def _td02(self, envelope: etree._Element) -> Response:
        msg_id = self._common(envelope, ACTIONS["patients"], "/patients")  # type: ignore[arg-type]
        value = body_payload(envelope).find(f".//{{{HL7}}}patientIdentifier/{{{HL7}}}value")
        ins = value.get("extension", "") if value is not None else ""
        root = etree.Element(f"{{{HL7}}}PRPA_IN201308UV02", nsmap={None: HL7})  # type: ignore[dict-item]
        etree.SubElement(root, f"{{{HL7}}}acknowledgement", typeCode="AA")
        act = etree.SubElement(root, f"{{{HL7}}}controlActProcess")
        found = "NF" if ins in self.unknown else "OK"
        if found == "OK":
            patient = etree.SubElement(
                etree.SubElement(
                    etree.SubElement(etree.SubElement(act, f"{{{HL7}}}subject"), f"{{{HL7}}}registrationEvent"),
                    f"{{{HL7}}}subject1",
                ),
                f"{{{HL7}}}patient",
            )
            etree.SubElement(patient, f"{{{HL7}}}statusCode", code="terminated" if ins in self.closed else "active")
        etree.SubElement(etree.SubElement(act, f"{{{HL7}}}queryAck"), f"{{{HL7}}}queryResponseCode", code=found)
        return self._envelope(msg_id, "urn:hl7-org:v3:PRPA_IN201308UV02", root)

    # --- answers ----------------------------------------------------------------------------------------

    @staticmethod
    def _answer_root(tag: str, status: str) -> etree._Element:
        return etree.Element(tag, status=status, nsmap={"rs": RS, "query": QUERY, "rim": RIM})

    def _registry(self, msg_id: str, action: str, errors: list[str]) -> Response:
        status = "Failure" if errors else "Success"
        response = self._answer_root(
            f"{{{RS}}}RegistryResponse", f"urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:{status}"
        )
        if errors:
            errors_el = etree.SubElement(response, f"{{{RS}}}RegistryErrorList")
            for code in errors:
                etree.SubElement(
                    errors_el,
                    f"{{{RS}}}RegistryError",
                    errorCode=code,
                    codeContext="refused by the test DMP",
                    severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error",
                )
        return self._envelope(msg_id, action, response)

    def _fault(self, code: str, subcode: str, reason: str, msg_id: str = "") -> Response:
        fault = etree.Element(f"{{{SOAP}}}Fault", nsmap={"soap": SOAP, "dmp": "urn:dmp:errors"})
        code_el = etree.SubElement(fault, f"{{{SOAP}}}Code")
        etree.SubElement(code_el, f"{{{SOAP}}}Value").text = f"soap:{code}"
        if subcode:
            etree.SubElement(
                etree.SubElement(code_el, f"{{{SOAP}}}Subcode"), f"{{{SOAP}}}Value"
            ).text = f"dmp:{subcode.removeprefix('soap:')}"
        etree.SubElement(
            etree.SubElement(fault, f"{{{SOAP}}}Reason"),
            f"{{{SOAP}}}Text",
            {"{http://www.w3.org/XML/1998/namespace}lang": "fr"},
        ).text = reason
        return self._envelope(
            msg_id, "http://www.w3.org/2005/08/addressing/soap/fault", fault, status=500, multipart=False
        )

    def _envelope(
        self, msg_id: str, action: str, payload: etree._Element, *, status: int = 200, multipart: bool | None = None
    ) -> Response:
        envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP})
        header = etree.SubElement(envelope, f"{{{SOAP}}}Header")
        etree.SubElement(header, f"{{{WSA}}}Action", nsmap={None: WSA}).text = action  # type: ignore[dict-item]
        etree.SubElement(header, f"{{{WSA}}}MessageID", nsmap={None: WSA}).text = f"urn:uuid:{uuid.uuid4()}"  # type: ignore[dict-item]
        if msg_id:
            etree.SubElement(header, f"{{{WSA}}}RelatesTo", nsmap={None: WSA}).text = msg_id  # type: ignore[dict-item]
        etree.SubElement(envelope, f"{{{SOAP}}}Body").append(payload)
        xml = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
        if not (self.multipart_answers if multipart is None else multipart):
            return Response(xml, status_code=status, media_type="application/soap+xml; charset=UTF-8")
        boundary = f"uuid:{uuid.uuid4()}"
        head = (f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\n"
                "Content-Transfer-Encoding: binary\r\nContent-ID: <root.message@cxf.apache.org>\r\n\r\n")  # fmt: skip
        body = head.encode() + xml + f"\r\n--{boundary}--".encode()
        content_type = f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; start="<root.message@cxf.apache.org>"; start-info="application/soap+xml"'
        return Response(body, status_code=status, headers={"Content-Type": content_type})


_MESSAGE_ID = re.compile(rb"<(?:[\w.-]+:)?MessageID(?:\s[^>]*)?>\s*([^<\s]+)\s*<")


def _message_id(body: bytes) -> str:
    """The request's wsa:MessageID when it can be found in the bytes (a request refused by a check)."""
    found = _MESSAGE_ID.search(body)
    return found.group(1).decode("ascii", "replace") if found else ""


def _leaf(doc: Stored, versioned: bool = True) -> etree._Element:
    entry = etree.Element(
        f"{{{RIM}}}ExtrinsicObject",
        id=doc.entry_uuid,
        lid=doc.entry_uuid,
        status=doc.status,
        mimeType=doc.mime_type,
        objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1",
    )
    for name, value in (("hash", doc.hash), ("size", str(doc.size))):
        slot = etree.SubElement(entry, f"{{{RIM}}}Slot", name=name)
        etree.SubElement(etree.SubElement(slot, f"{{{RIM}}}ValueList"), f"{{{RIM}}}Value").text = value
    if versioned:
        etree.SubElement(entry, f"{{{RIM}}}VersionInfo", versionName="1")
    etree.SubElement(
        entry,
        f"{{{RIM}}}ExternalIdentifier",
        id=f"ei-{uuid.uuid4()}",
        registryObject=doc.entry_uuid,
        identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab",
        value=doc.unique_id,
    )
    return entry


@contextlib.asynccontextmanager
async def running_receiver(
    schema_dir: Path, ca_file: Path, *, tls: tuple[Path, Path] | None = None
) -> AsyncIterator[DmpReceiver]:
    """Serve a :class:`DmpReceiver` on 127.0.0.1 (port 0). With ``tls`` = (server cert, key): TLS 1.2+
    requiring a client certificate issued by ``ca_file``. ``base_url`` is the services base."""
    receiver = DmpReceiver(schema_dir, x509.load_pem_x509_certificate(ca_file.read_bytes()))
    options: dict[str, Any] = {}
    if tls is not None:
        options = {
            "ssl_certfile": str(tls[0]),
            "ssl_keyfile": str(tls[1]),
            "ssl_ca_certs": str(ca_file),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
    async with serving(receiver.app(), access_log=False, **options) as port:
        receiver.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/si-dmp-server/v2/services"
        yield receiver
