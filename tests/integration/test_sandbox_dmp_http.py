"""The sandbox's DMP SOAP services over real HTTP, fed by an independent request builder."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import pytest
from lxml import etree

from passerelle.sandbox import SandboxConfig
from passerelle.sandbox.testing import SandboxURL, running_sandbox_sync
from tests.support import dmp_requests as b
from tests.support.xml_ns import DS, HL7, LCM, QUERY, RIM, SOAP, WSA

INS = "279035121518989"
NS = {"rs": LCM.replace("lcm", "rs"), "soap": SOAP, "wsa": WSA, "rim": RIM, "query": QUERY, "hl7": HL7}
STATUS = "urn:oasis:names:tc:ebxml-regrep:StatusType:"


@dataclass
class Dmp:
    url: SandboxURL
    pki: b.Pki
    client: httpx.Client

    def post(self, service: str, content_type: str, body: bytes) -> httpx.Response:
        return self.client.post(f"{self.url.dmp}/{service}", content=body, headers={"content-type": content_type})

    def submit(self, lot: b.Iti41) -> httpx.Response:
        return self.post("repository", *lot.render())

    def lot(self, **kwargs: object) -> b.Iti41:
        return b.Iti41(self.pki, INS, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pki() -> b.Pki:
    return b.Pki.create()


def _start(tmp_path: Path, pki: b.Pki, **options: object) -> Iterator[Dmp]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = SandboxConfig(data_dir=tmp_path / "space", dmp_ca_file=pki.write_ca(tmp_path), **options)  # type: ignore[arg-type]
    with running_sandbox_sync(config) as url, httpx.Client(timeout=30) as client:
        yield Dmp(url, pki, client)


@pytest.fixture
def dmp(tmp_path: Path, pki: b.Pki) -> Iterator[Dmp]:
    yield from _start(tmp_path, pki)


def soap_xml(response: httpx.Response) -> etree._Element:
    """The SOAP envelope of an answer, plain or multipart/related (read with the standard library)."""
    content_type = response.headers["content-type"]
    if content_type.startswith("multipart/related"):
        message = message_from_bytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + response.content, policy=policy.HTTP
        )
        parts = list(message.iter_parts())
        assert len(parts) == 1 and parts[0]["Content-ID"] == "<root.message@cxf.apache.org>"
        return etree.fromstring(parts[0].get_payload(decode=True))
    assert content_type.startswith("application/soap+xml")
    return etree.fromstring(response.content)


def registry_status(response: httpx.Response) -> tuple[str, list[str]]:
    assert response.status_code == 200, response.text
    root = soap_xml(response)
    rr = root.find(".//rs:RegistryResponse", NS)
    assert rr is not None
    return rr.get("status", "").rsplit(":", 1)[-1], [
        e.get("errorCode", "") for e in rr.iterfind(".//rs:RegistryError", NS)
    ]


def fault(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 500, response.text
    root = soap_xml(response)
    code = root.findtext(".//soap:Fault/soap:Code/soap:Value", namespaces=NS) or ""
    sub = root.findtext(".//soap:Fault/soap:Code/soap:Subcode/soap:Value", namespaces=NS) or ""
    return code.split(":")[-1], sub.split(":")[-1]


def test_iti41_success_is_stored_in_the_patient_space(dmp: Dmp) -> None:
    lot = dmp.lot()
    response = dmp.submit(lot)
    assert registry_status(response) == ("Success", [])
    root = soap_xml(response)
    assert root.findtext(".//wsa:Action", namespaces=NS) == b.ITI41 + "Response"
    assert root.findtext(".//wsa:RelatesTo", namespaces=NS) == lot.envelope.message_id
    docs = dmp.client.get(f"{dmp.url.admin}/patients/{INS}").json()["documents"]
    assert docs == {"current": 2}  # the CDA and the signature entry
    pushes = dmp.client.get(f"{dmp.url.admin}/pushes").json()
    assert [(p["transport"], p["outcome"]) for p in pushes] == [("dmp", "accepted")]
    page = dmp.client.get(f"{dmp.url}/patients/{INS}").text
    assert lot.documents[0].unique_id in page and ">dmp<" in page


def test_plain_answer_mode(tmp_path: Path, pki: b.Pki) -> None:
    for dmp in _start(tmp_path, pki, dmp_answer="plain"):
        response = dmp.submit(dmp.lot())
        assert response.headers["content-type"].startswith("application/soap+xml")
        assert registry_status(response) == ("Success", [])


def _drop(tag: str) -> object:
    def edit(objects: etree._Element) -> None:
        found = objects.find(f".//{tag}")
        assert found is not None
        found.getparent().remove(found)

    return edit


def _set_slot(name: str, value: str) -> object:
    def edit(objects: etree._Element) -> None:
        for slot in objects.iter(f"{{{RIM}}}Slot"):
            if slot.get("name") == name:
                slot.find(f".//{{{RIM}}}Value").text = value
                return
        raise AssertionError(name)

    return edit


def _code(kind: str, code: str, system: str) -> object:
    def mutate(lot: b.Iti41) -> None:
        lot.documents[0].codes[kind] = (code, system)

    return mutate


def _hook(name: str, edit: object) -> object:
    def mutate(lot: b.Iti41) -> None:
        setattr(lot, name, edit)

    return mutate


def _vihf(**changes: object) -> object:
    def mutate(lot: b.Iti41) -> None:
        assert lot.vihf is not None
        for key, value in changes.items():
            setattr(lot.vihf, key, value)

    return mutate


def _envelope(**changes: object) -> object:
    def mutate(lot: b.Iti41) -> None:
        for key, value in changes.items():
            setattr(lot.envelope, key, value)

    return mutate


def _masked(lot: b.Iti41) -> None:
    lot.documents[0].confidentiality = (
        ("N", "2.16.840.1.113883.5.25"),
        ("MASQUE_PS", "1.2.250.1.213.1.1.4.13"),
        ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13"),
    )


def _extra_part(parts: dict[str, bytes]) -> None:
    parts["orphan@test"] = b"x"


def _tamper_manifest(signature: etree._Element) -> None:
    signature.findall(f".//{{{DS}}}Manifest/{{{DS}}}Reference/{{{DS}}}DigestValue")[1].text = "AAAA"


def _purpose(signature: etree._Element) -> None:
    signature.find(f".//{{{DS}}}SignatureProperty").text = "1.2.3"


def _unknown_header(lot: b.Iti41) -> None:
    header = etree.Element("{urn:example}Trace")
    header.set(f"{{{SOAP}}}mustUnderstand", "true")
    lot.envelope.extra_header = header


def _lot_patient(lot: b.Iti41) -> None:
    lot.patient_id = f"{INS}^^^&1.2.250.1.999&ISO^NH"


def _doc_patient(lot: b.Iti41) -> None:
    lot.documents[0].patient_id = f"279035121518990^^^&{b.INS_OID}&ISO^NH"


def _foreign_xades(lot: b.Iti41) -> None:
    lot.xades_signer = lot.pki.foreign_sign


FAULTS = {
    "soap 1.1 envelope": (_envelope(soap_ns="http://schemas.xmlsoap.org/soap/envelope/"), ("VersionMismatch", "")),
    "no MessageID": (_envelope(drop_message_id=True), ("Sender", "DMPAddressingError")),
    "Action not mustUnderstand": (_envelope(action_must_understand=False), ("Sender", "DMPAddressingError")),
    "Action of another endpoint": (
        _envelope(action="urn:ihe:iti:2007:RegistryStoredQuery"),
        ("Sender", "DMPInvalidAction"),
    ),
    "unknown mustUnderstand header": (_unknown_header, ("MustUnderstand", "")),
    "unreferenced MIME part": (_hook("edit_parts", _extra_part), ("Sender", "DMPInvalidMimePackage")),
    "VIHF signed by another CA": (None, ("Sender", "DMPInvalidCertificate")),
    "VIHF signed with the AUTH_CLI certificate": (None, ("Sender", "DMPInvalidCertificate")),
    "VIHF content changed after signing": (_vihf(tamper=True), ("Sender", "DMPInvalidVIHFSignature")),
    "VIHF without LPS_Nom": (_vihf(drop=("LPS_Nom",)), ("Sender", "DMPInvalidVIHF")),
    "VIHF sector pattern": (_vihf(attributes={"Secteur_Activite": "SA01"}), ("Sender", "DMPInvalidVIHF")),
    "VIHF structure is not the certificate OU": (_vihf(structure="10B0000000"), ("Sender", "DMPAuthenticationFailure")),
    "VIHF issued 10 minutes ago": (None, ("Sender", "DMPVIHFExpired")),
    "VIHF for another patient": (_vihf(ins="279035121518990"), ("Sender", "DMPPatientMismatch")),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_each_transport_and_vihf_check_has_its_fault(dmp: Dmp, name: str) -> None:
    mutate, expected = FAULTS[name]
    lot = dmp.lot()
    if name.startswith("VIHF signed by another CA"):
        lot.vihf.signer = dmp.pki.foreign_sign  # type: ignore[union-attr]
    elif name.startswith("VIHF signed with the AUTH"):
        lot.vihf.signer = dmp.pki.auth  # type: ignore[union-attr]
    elif name.startswith("VIHF issued"):
        import datetime as dt

        lot.vihf.issue_instant = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)  # type: ignore[union-attr]
    else:
        mutate(lot)  # type: ignore[operator]
    assert fault(dmp.submit(lot)) == expected
    assert dmp.client.get(f"{dmp.url.admin}/patients/{INS}").status_code in (200, 404)


FAILURES = {
    "two submission sets": (
        _hook(
            "edit_metadata",
            lambda o: o.append(etree.fromstring(f'<rim:RegistryPackage xmlns:rim="{RIM}" id="Other"/>')),
        ),
        "XDSRegistryMetadataError",
    ),
    "schema order": (
        _hook(
            "edit_metadata",
            lambda o: o.find(f"{{{RIM}}}ExtrinsicObject").append(
                etree.fromstring(f'<rim:Slot xmlns:rim="{RIM}" name="x"><rim:ValueList/></rim:Slot>')
            ),
        ),
        "XDSRegistryMetadataError",
    ),
    "uniqueId not an OID": (lambda lot: setattr(lot.documents[0], "unique_id", "1.2.x"), "XDSRegistryMetadataError"),
    "uniqueId over 64 characters": (
        lambda lot: setattr(lot.documents[0], "unique_id", "1." + "2" * 70),
        "XDSRegistryMetadataError",
    ),
    "patientId not an INS": (_lot_patient, "XDSRegistryMetadataError"),
    "document for another patient": (_doc_patient, "XDSPatientIdDoesNotMatch"),
    "entry without document": (
        _hook("edit_metadata", lambda o: o.find(f"{{{RIM}}}ExtrinsicObject").set("id", "Lost")),
        "XDSMissingDocument",
    ),
    "HasMember without Original": (
        _hook("edit_metadata", _set_slot("SubmissionSetStatus", "Reference")),
        "XDSRegistryMetadataError",
    ),
    "creationTime not a DTM": (
        _hook("edit_metadata", _set_slot("creationTime", "2026-01-15")),
        "XDSRegistryMetadataError",
    ),
    "typeCode outside the value set": (_code("type", "99999-9", "2.16.840.1.113883.6.1"), "XDSRegistryMetadataError"),
    "INVISIBLE_PATIENT and MASQUE_PS on a clinical document": (_masked, "XDSRegistryMetadataError"),
    "no signs association": (
        _hook(
            "edit_metadata", _drop(f"{{{RIM}}}Association[@associationType='urn:ihe:iti:2007:AssociationType:signs']")
        ),
        "XDSRegistryMetadataError",
    ),
    "hash of other bytes": (lambda lot: lot.documents[0].slots.update(hash=["0" * 40]), "XDSRepositoryMetadataError"),
    "size of other bytes": (lambda lot: lot.documents[0].slots.update(size=["1"]), "XDSRepositoryMetadataError"),
    "XAdES manifest digest": (_hook("edit_signature", _tamper_manifest), "DMPInvalidXAdES"),
    "XAdES purposeOfSignature": (_hook("edit_signature", _purpose), "DMPInvalidXAdES"),
    "XAdES signed by another CA": (_foreign_xades, "DMPInvalidCertificate"),
    "RPLC to an unknown entryUUID": (
        lambda lot: lot.replaces.update(Document01="urn:uuid:00000000-0000-0000-0000-000000000001"),
        "UnresolvedReferenceException",
    ),
}


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_each_metadata_and_signature_rule_has_its_registry_error(dmp: Dmp, name: str) -> None:
    mutate, code = FAILURES[name]
    lot = dmp.lot()
    mutate(lot)  # type: ignore[operator]
    assert registry_status(dmp.submit(lot)) == ("Failure", [code])
    assert dmp.client.get(f"{dmp.url.admin}/stats").json()["stored"] == 0


def test_same_uniqueid_other_bytes_is_non_identical_hash(dmp: Dmp) -> None:
    first = dmp.lot()
    assert registry_status(dmp.submit(first)) == ("Success", [])
    again = dmp.lot(documents=[b.Doc("Document01", first.documents[0].unique_id, first.documents[0].content)])
    assert registry_status(dmp.submit(again)) == ("Success", [])  # identical bytes: idempotent
    # a re-sent lot is signed again (new signature uniqueId): nothing new is stored, not even that signature
    assert dmp.client.get(f"{dmp.url.admin}/patients/{INS}").json()["documents"] == {"current": 2}
    other = dmp.lot(documents=[b.Doc("Document01", first.documents[0].unique_id, b.cda("1.2.3.4"))])
    assert registry_status(dmp.submit(other)) == ("Failure", ["XDSNonIdenticalHash"])


def test_cda_manifest_digest_covers_the_whole_document(dmp: Dmp) -> None:
    """XML-DSig parses an external reference into the whole document's node-set: the processing
    instructions and comments of a CDA's prolog (as in the ANS examples) are in the canonical form
    the Manifest digests. A digest of the root element alone is refused (the sandbox once computed that)."""
    unique_id = b.oid()
    body = b.cda(unique_id).split(b"\n", 1)[1]
    content = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<?xml-stylesheet type="text/xsl" href="cda.xsl"?>\n<!-- ANS -->\n'
        + body
    )
    assert registry_status(dmp.submit(dmp.lot(documents=[b.Doc("Document01", unique_id, content)]))) == ("Success", [])

    def digest_root_only(signature: etree._Element) -> None:
        for reference in signature.iter(f"{{{DS}}}Reference"):
            if reference.get("URI") == f"urn:oid:{other}":
                reference.find(f"{{{DS}}}DigestValue").text = root_only  # type: ignore[union-attr]

    other = b.oid()
    content = content.replace(unique_id.encode(), other.encode())
    root_only = b.b64sha1(b.c14n(etree.fromstring(content)))
    lot = dmp.lot(documents=[b.Doc("Document01", other, content)], edit_signature=digest_root_only)
    assert registry_status(dmp.submit(lot)) == ("Failure", ["DMPInvalidXAdES"])


def _entry_uuid(dmp: Dmp, unique_id: str, lot: b.Iti41) -> tuple[str, str]:
    query = b.stored_query(
        "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4", {"$XDSDocumentEntryUniqueId": f"('{unique_id}')"}
    )
    response = dmp.post("registry", *b.plain("urn:ihe:iti:2007:RegistryStoredQuery", query, lot.vihf))  # type: ignore[arg-type]
    root = soap_xml(response)
    assert root.findtext(".//wsa:Action", namespaces=NS) == "urn:ihe:iti:2007:RegistryStoredQueryResponse"
    found = root.findall(".//rim:ExtrinsicObject", NS)
    assert len(found) == 1
    hash_slot = next(s for s in found[0].iterfind("rim:Slot", NS) if s.get("name") == "hash")
    assert hash_slot.findtext(".//rim:Value", namespaces=NS) == hashlib.sha1(lot.documents[0].content).hexdigest()
    return found[0].get("id", ""), found[0].get("status", "")


def test_replacement_find_then_rplc_and_deprecated_target(dmp: Dmp) -> None:
    first = dmp.lot()
    assert registry_status(dmp.submit(first)) == ("Success", [])
    old_uuid, status = _entry_uuid(dmp, first.documents[0].unique_id, first)
    assert status == STATUS + "Approved"
    second = dmp.lot(replaces={"Document01": old_uuid})
    assert registry_status(dmp.submit(second)) == ("Success", [])
    assert _entry_uuid(dmp, first.documents[0].unique_id, first)[1] == STATUS + "Deprecated"
    assert _entry_uuid(dmp, second.documents[0].unique_id, second)[1] == STATUS + "Approved"
    third = dmp.lot(replaces={"Document01": old_uuid})
    assert registry_status(dmp.submit(third)) == ("Failure", ["XDSRegistryDeprecatedDocumentError"])


def test_find_documents_and_iti57_status_changes(dmp: Dmp) -> None:
    lot = dmp.lot()
    assert registry_status(dmp.submit(lot)) == ("Success", [])
    entry, _ = _entry_uuid(dmp, lot.documents[0].unique_id, lot)
    action = "urn:ihe:iti:2010:UpdateDocumentSet"

    def update(original: str, new: str) -> httpx.Response:
        body = b.update_status(lot, entry, original, new)
        return dmp.post("registry", *b.plain(action, body, lot.vihf))  # type: ignore[arg-type]

    wrong = update(STATUS + "Deprecated", "urn:asip:ci-sis:2010:StatusType:Deleted")
    assert registry_status(wrong) == ("Failure", ["XDSMetadataUpdateError"])
    archived = update(STATUS + "Approved", "urn:asip:ci-sis:2010:StatusType:Archived")
    assert registry_status(archived) == ("Success", [])
    assert soap_xml(archived).findtext(".//wsa:Action", namespaces=NS) == "urn:ihe:iti:2010:UpdateDocumentSet-Response"
    find = b.stored_query(
        "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d",
        {
            "$XDSDocumentEntryPatientId": f"'{lot.pid}'",
            "$XDSDocumentEntryStatus": "('urn:asip:ci-sis:2010:StatusType:Archived')",
        },
        return_type="ObjectRef",
    )
    response = dmp.post("registry", *b.plain("urn:ihe:iti:2007:RegistryStoredQuery", find, lot.vihf))  # type: ignore[arg-type]
    assert [r.get("id") for r in soap_xml(response).iterfind(".//rim:ObjectRef", NS)] == [entry]
    deleted = update("urn:asip:ci-sis:2010:StatusType:Archived", "urn:asip:ci-sis:2010:StatusType:Deleted")
    assert registry_status(deleted) == ("Success", [])
    fhir = dmp.client.get(
        f"{dmp.url.fhir}/DocumentReference", params={"patient.identifier": f"urn:oid:{b.INS_OID}|{INS}"}
    )
    assert "entered-in-error" in {e["resource"]["status"] for e in fhir.json()["entry"]}


def test_only_the_documents_author_person_or_structure_deletes(dmp: Dmp) -> None:
    """A deletion asked by another structure is refused DMPNotAuthor unless its VIHF names the
    document's author person (a structure feeds for its professionals, documents keep their own
    authorInstitution); the author structure may always delete."""
    lot = dmp.lot()
    assert registry_status(dmp.submit(lot)) == ("Success", [])
    entry, _ = _entry_uuid(dmp, lot.documents[0].unique_id, lot)
    other = "10B0000002"
    other_lot = b.Iti41(dmp.pki, INS, structure=other, vihf=b.Vihf(dmp.pki.sign_for(other), INS, other))

    def delete(name_id: str) -> httpx.Response:
        other_lot.vihf.name_id = name_id  # type: ignore[union-attr]
        body = b.update_status(other_lot, entry, STATUS + "Approved", "urn:asip:ci-sis:2010:StatusType:Deleted")
        return dmp.post("registry", *b.plain("urn:ihe:iti:2010:UpdateDocumentSet", body, other_lot.vihf))  # type: ignore[arg-type]

    assert registry_status(delete("809999999999")) == ("Failure", ["DMPNotAuthor"])
    assert registry_status(delete("801234567890")) == ("Success", [])


def test_iti57_metadata_update_changes_the_confidentiality_of_a_version(dmp: Dmp) -> None:
    """ITI-18 LeafClass gives the entry's version (VersionInfo, as a registry with metadata update must);
    a new version naming it as PreviousVersion changes the codes; a stale or unknown one is refused."""
    lot = dmp.lot()
    assert registry_status(dmp.submit(lot)) == ("Success", [])
    unique_id = lot.documents[0].unique_id
    query = b.stored_query(
        "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4", {"$XDSDocumentEntryUniqueId": f"('{unique_id}')"}
    )
    answer = dmp.post("registry", *b.plain("urn:ihe:iti:2007:RegistryStoredQuery", query, lot.vihf))  # type: ignore[arg-type]
    [registered] = soap_xml(answer).findall(".//rim:ExtrinsicObject", NS)
    assert registered.find("rim:VersionInfo", NS).get("versionName") == "1"  # type: ignore[union-attr]
    assert {c.get("classifiedObject") for c in registered.iterfind("rim:Classification", NS)} == {registered.get("id")}
    masked = [("N", "2.16.840.1.113883.5.25"), ("MASQUE_PS", "1.2.250.1.213.1.1.4.13")]

    def update(previous: str, entry: etree._Element = registered) -> httpx.Response:
        body = b.metadata_update(lot, entry, previous, masked)
        return dmp.post("registry", *b.plain("urn:ihe:iti:2010:UpdateDocumentSet", body, lot.vihf))  # type: ignore[arg-type]

    assert registry_status(update("2")) == ("Failure", ["XDSMetadataVersionError"])
    assert registry_status(update("1")) == ("Success", [])
    assert registry_status(update("1")) == ("Failure", ["XDSMetadataVersionError"])  # now version 2
    page = dmp.client.get(f"{dmp.url}/patients/{INS}").text
    assert "MASQUE_PS" in page.split(unique_id, 1)[1].split("</tr>", 1)[0]
    unknown = etree.fromstring(etree.tostring(registered))
    unknown.set("lid", "urn:uuid:00000000-0000-4000-8000-000000000000")
    assert registry_status(update("2", unknown)) == ("Failure", ["UnresolvedReferenceException"])


def _td02(dmp: Dmp, ins: str = INS) -> etree._Element:
    vihf = b.Vihf(dmp.pki.sign, ins)
    response = dmp.post("patients", *b.plain("urn:hl7-org:v3:PRPA_IN201307UV02", b.td02(ins), vihf))
    assert response.status_code == 200, response.text
    root = soap_xml(response)
    assert root.findtext(".//wsa:Action", namespaces=NS) == "urn:hl7-org:v3:PRPA_IN201308UV02"
    return root


def test_td02_follows_the_space_state_and_iti41_refuses_consistently(dmp: Dmp) -> None:
    admin = f"{dmp.url.admin}/patients/{INS}"
    dmp.client.put(admin, json={"status": "ACTIF", "blocked_authors": [b.STRUCTURE]})
    root = _td02(dmp)
    assert root.find(".//hl7:queryResponseCode", NS).get("code") == "OK"
    assert root.find(".//hl7:patient/hl7:statusCode", NS).get("code") == "active"
    assert root.find(".//hl7:attentionLine/hl7:value", NS).get("code") == "INTERDIT"
    assert registry_status(dmp.submit(dmp.lot())) == ("Failure", ["DMPAuthorBlocked"])
    dmp.client.put(admin, json={"status": "FERME", "blocked_authors": []})
    assert _td02(dmp).find(".//hl7:patient/hl7:statusCode", NS).get("code") == "terminated"
    assert registry_status(dmp.submit(dmp.lot())) == ("Failure", ["DMPClosed"])
    dmp.client.put(admin, json={"status": "INEXISTANT"})
    assert _td02(dmp).find(".//hl7:queryResponseCode", NS).get("code") == "NF"
    assert registry_status(dmp.submit(dmp.lot())) == ("Failure", ["XDSUnknownPatientId"])
    refused = [p["code"] for p in dmp.client.get(f"{dmp.url.admin}/pushes").json()]
    assert refused == ["DMPAuthorBlocked", "DMPClosed", "XDSUnknownPatientId"]


def test_admin_forces_the_td02_authorisation(dmp: Dmp) -> None:
    """docs/sandbox.md: ``PUT /admin/patients/{ins}`` with ``authorisation`` forces the TD0.2 answer."""
    admin = f"{dmp.url.admin}/patients/{INS}"
    for value in ("EXPIRE", "NON_EXISTE", "INTERDIT", "VALIDE"):
        answer = dmp.client.put(admin, json={"status": "ACTIF", "authorisation": value})
        assert answer.status_code == 200 and answer.json()["authorisation"] == value, answer.text
        assert _td02(dmp).find(".//hl7:attentionLine/hl7:value", NS).get("code") == value
    assert dmp.client.put(admin, json={"authorisation": "PEUT-ETRE"}).status_code == 422


def test_soap_receiver_fault_injection(dmp: Dmp) -> None:
    dmp.client.put(f"{dmp.url.admin}/faults", json={"soap_receiver_rate": 1.0, "seed": 1})
    assert fault(dmp.submit(dmp.lot())) == ("Receiver", "DMPServiceUnavailable")
    dmp.client.put(f"{dmp.url.admin}/faults", json={"error_rate": 1.0, "error_status": 503})
    assert dmp.submit(dmp.lot()).status_code == 503
    dmp.client.delete(f"{dmp.url.admin}/faults")
    assert registry_status(dmp.submit(dmp.lot())) == ("Success", [])


#: the DRIMbox ITI-41 capture of the shared corpus (``PASSERELLE_CORPUS`` or ../shared/corpus)
CAPTURE = Path("xds") / "fr-drimbox-xds" / "publication.xml"


def test_drimbox_capture_strict_refuses_framing_lenient_reaches_the_redacted_vihf(
    tmp_path: Path, pki: b.Pki, corpus_dir: Path
) -> None:
    body = (corpus_dir / CAPTURE).read_bytes()
    header = (
        'multipart/related; boundary="MIMEBoundary_Bound"; type="application/xop+xml"; start="<0.1>"; '
        'start-info="application/soap+xml"; action="urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"'
    )
    for strict in _start(tmp_path / "strict", pki):
        assert fault(strict.post("repository", header, body)) == ("Sender", "DMPInvalidMimePackage")
    for lenient in _start(tmp_path / "lenient", pki, dmp_lenient=True):
        # framing, base64 part, envelope and WS-A accepted; the 2023 VIHF is then out of its time window
        assert fault(lenient.post("repository", header, body)) == ("Sender", "DMPVIHFExpired")
