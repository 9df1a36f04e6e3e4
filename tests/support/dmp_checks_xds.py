"""Independent checks of the ITI-41 metadata (XSD + DMP rules) and of the XAdES signature of the set.
See :mod:`tests.support.dmp_checks` for what "independent" means here."""

from __future__ import annotations

import base64
import copy
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.verifier import SignatureConfiguration, XMLVerifier

from tests.support.dmp_checks import (
    DE_PATIENT_ID,
    DE_UNIQUE_ID,
    DTM,
    INS_CX,
    REQUIRED_DE_SCHEMES,
    SS_AUTHOR,
    SS_CONTENT_TYPE,
    SS_PATIENT_ID,
    SS_SOURCE_ID,
    SS_UNIQUE_ID,
    Refused,
    require,
)
from tests.support.xml_ns import DS, RIM, XADES, XDSB, XOP

SIGNATURE_FORMAT = "http://www.w3.org/2000/09/xmldsig#"
SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
_SCHEMAS: dict[Path, etree.XMLSchema] = {}


def schema(folder: Path) -> etree.XMLSchema:
    if folder not in _SCHEMAS:
        _SCHEMAS[folder] = etree.XMLSchema(etree.parse(str(folder / "XDS.b_DocumentRepository.xsd")))
    return _SCHEMAS[folder]


@dataclass
class DocumentIn:
    entry_id: str
    unique_id: str
    patient_id: str
    mime_type: str
    content: bytes
    is_signature: bool
    hash: str
    size: int


@dataclass
class Submission:
    unique_id: str
    patient_id: str
    documents: list[DocumentIn]
    rplc_targets: list[str]
    author_institution: str


def resolve_and_validate(payload: etree._Element, parts: dict[str, bytes], schema_dir: Path) -> dict[str, bytes]:
    """Replace every xop:Include by its part (base64) and validate against the XSD; returns id → bytes."""
    body = copy.deepcopy(payload)
    contents: dict[str, bytes] = {}
    used: set[str] = set()
    for document in body.findall(f"{{{XDSB}}}Document"):
        includes = document.findall(f"{{{XOP}}}Include")
        require(len(includes) == 1, "XDSMissingDocument", "one xop:Include per Document")
        cid = includes[0].get("href", "").removeprefix("cid:")
        require(cid in parts, "XDSMissingDocument", "xop:Include names no part")
        used.add(cid)
        document.remove(includes[0])
        document.text = base64.b64encode(parts[cid]).decode()
        contents[document.get("id", "")] = parts[cid]
    require(used == set(parts), "soap:Sender", "unreferenced MIME part")
    validator = schema(schema_dir)
    if not validator.validate(body):
        raise Refused("XDSRegistryMetadataError", f"XSD: {validator.error_log.last_error}")
    return contents


def _slots(obj: etree._Element) -> dict[str, list[str]]:
    return {s.get("name", ""): [v.text or "" for v in s.iter(f"{{{RIM}}}Value")] for s in obj.findall(f"{{{RIM}}}Slot")}


def _ident(obj: etree._Element, scheme: str) -> str:
    found = [
        e.get("value", "")
        for e in obj.findall(f"{{{RIM}}}ExternalIdentifier")
        if e.get("identificationScheme") == scheme
    ]
    require(len(found) == 1, "XDSRegistryMetadataError", f"one identifier {scheme}")
    return found[0]


def check_metadata(payload: etree._Element, contents: dict[str, bytes]) -> Submission:
    objects = payload.find(f".//{{{RIM}}}RegistryObjectList")
    require(objects is not None, "XDSRegistryMetadataError", "RegistryObjectList")
    assert objects is not None
    packages = objects.findall(f"{{{RIM}}}RegistryPackage")
    require(len(packages) == 1, "XDSRegistryMetadataError", "one submission set")
    ss = packages[0]
    ss_id = ss.get("id", "")
    patient = _ident(ss, SS_PATIENT_ID)
    require(INS_CX.match(patient) is not None, "XDSRegistryMetadataError", "patientId is an INS CX")
    _ident(ss, SS_SOURCE_ID)
    ss_uid = _ident(ss, SS_UNIQUE_ID)
    require(
        DTM.match(_slots(ss).get("submissionTime", [""])[0]) is not None, "XDSRegistryMetadataError", "submissionTime"
    )
    schemes = {c.get("classificationScheme") for c in ss.findall(f"{{{RIM}}}Classification")}
    require(
        {SS_AUTHOR, SS_CONTENT_TYPE} <= schemes, "XDSRegistryMetadataError", "submission set author and contentType"
    )
    author = next(c for c in ss.findall(f"{{{RIM}}}Classification") if c.get("classificationScheme") == SS_AUTHOR)
    institution = _slots(author).get("authorInstitution", [""])[0]
    docs = [_document(e, contents, patient) for e in objects.findall(f"{{{RIM}}}ExtrinsicObject")]
    require({d.entry_id for d in docs} == set(contents), "XDSMissingDocumentMetadata", "documents = entries")
    require(len({d.unique_id for d in docs}) == len(docs), "XDSRegistryDuplicateUniqueIdInMessage", "unique ids")
    assocs = objects.findall(f"{{{RIM}}}Association")
    for doc in docs:
        members = [
            a
            for a in assocs
            if a.get("associationType") == HAS_MEMBER
            and a.get("sourceObject") == ss_id
            and a.get("targetObject") == doc.entry_id
        ]
        require(
            len(members) == 1 and _slots(members[0]).get("SubmissionSetStatus") == ["Original"],
            "XDSRegistryMetadataError",
            "HasMember Original",
        )
    signatures = [d for d in docs if d.is_signature]
    require(len(signatures) == 1, "XDSRegistryMetadataError", "one signature entry")
    signs = [a for a in assocs if a.get("associationType") == SIGNS]
    require(
        len(signs) == 1
        and signs[0].get("sourceObject") == signatures[0].entry_id
        and signs[0].get("targetObject") == ss_id,
        "XDSRegistryMetadataError",
        "signs association",
    )
    rplc = [a.get("targetObject", "") for a in assocs if a.get("associationType") == RPLC]
    return Submission(ss_uid, patient, docs, rplc, institution)


def _document(entry: etree._Element, contents: dict[str, bytes], patient: str) -> DocumentIn:
    entry_id = entry.get("id", "")
    require(entry_id in contents, "XDSMissingDocument", "entry without Document")
    slots = _slots(entry)
    for name in ("creationTime", "languageCode", "sourcePatientId", "hash", "size", "serviceStartTime"):
        require(bool(slots.get(name)), "XDSRegistryMetadataError", f"slot {name}")
    for name in ("creationTime", "serviceStartTime", "serviceStopTime"):
        for value in slots.get(name, []):
            require(DTM.match(value) is not None, "XDSRegistryMetadataError", f"{name} DTM")
    schemes = {c.get("classificationScheme") for c in entry.findall(f"{{{RIM}}}Classification")}
    missing = [name for scheme, name in REQUIRED_DE_SCHEMES.items() if scheme not in schemes]
    require(not missing, "XDSRegistryMetadataError", f"missing {missing}")
    require(_ident(entry, DE_PATIENT_ID) == patient, "XDSPatientIdDoesNotMatch", "entry patientId")
    content = contents[entry_id]
    digest = hashlib.sha1(content).hexdigest()
    require(slots["hash"][0].lower() == digest, "XDSRepositoryMetadataError", "hash of the part")
    require(slots["size"][0] == str(len(content)), "XDSRepositoryMetadataError", "size of the part")
    formats = [
        c.get("nodeRepresentation")
        for c in entry.findall(f"{{{RIM}}}Classification")
        if c.get("classificationScheme") == "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
    ]
    unique_id = _ident(entry, DE_UNIQUE_ID)
    require(len(unique_id) <= 64, "XDSRegistryMetadataError", "uniqueId at most 64 characters")
    return DocumentIn(
        entry_id,
        unique_id,
        patient,
        entry.get("mimeType", ""),
        content,
        formats == [SIGNATURE_FORMAT],
        digest,
        len(content),
    )


# --- XAdES --------------------------------------------------------------------------------------------


def c14n_with_comments(xml: bytes) -> bytes:
    """Inclusive C14N 1.0 with comments by xmllint (libxml2's command-line tool)."""
    result = subprocess.run(
        ["xmllint", "--nonet", "--c14n", "-"], input=xml, capture_output=True, check=True, timeout=60
    )
    return result.stdout


def check_xades(submission: Submission, ca: x509.Certificate, vihf_cert: x509.Certificate) -> None:
    signature = next(d for d in submission.documents if d.is_signature)
    root = etree.fromstring(signature.content)
    cert_b64 = "".join((root.findtext(f".//{{{DS}}}X509Certificate") or "").split())
    cert = x509.load_der_x509_certificate(base64.b64decode(cert_b64))
    cert.verify_directly_issued_by(ca)
    verifier = XMLVerifier()
    verifier.excise_empty_xmlns_declarations = True
    config = SignatureConfiguration(
        expect_references=2,
        signature_methods=frozenset({SignatureMethod.RSA_SHA1}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA1}),
    )
    try:
        verified = verifier.verify(
            signature.content,
            x509_cert=cert.public_bytes(serialization.Encoding.PEM).decode(),
            validate_schema=False,
            id_attribute="Id",
            expect_config=config,
        )
    except Exception as exc:
        raise Refused("XDSRegistryMetadataError", f"XAdES signature: {exc}") from exc
    assert isinstance(verified, list) and len(verified) == 2
    require(root.get("Id") == signature.unique_id, "XDSRegistryMetadataError", "Signature/@Id = signature uniqueId")
    types = {r.get("Type") for r in root.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")}
    require(
        types == {"http://www.w3.org/2000/09/xmldsig#Manifest", "http://uri.etsi.org/01903/v1.1.1#SignedProperties"},
        "XDSRegistryMetadataError",
        "reference types",
    )
    _check_manifest(root, submission)
    _check_properties(root, cert)


def _check_manifest(root: etree._Element, submission: Submission) -> None:
    manifest = root.find(f".//{{{DS}}}Manifest")
    require(manifest is not None and manifest.get("Id") == "IHEManifest", "XDSRegistryMetadataError", "IHEManifest")
    assert manifest is not None
    refs = {r.get("URI"): r.findtext(f"{{{DS}}}DigestValue") for r in manifest.findall(f"{{{DS}}}Reference")}
    expected = {f"urn:oid:{submission.unique_id}": "AA=="}
    for doc in submission.documents:
        if doc.is_signature:
            continue
        data = c14n_with_comments(doc.content) if doc.mime_type == "text/xml" else doc.content
        expected[f"urn:oid:{doc.unique_id}"] = base64.b64encode(hashlib.sha1(data).digest()).decode()
    require(refs == expected, "XDSRegistryMetadataError", "manifest references and digests")


def _check_properties(root: etree._Element, cert: x509.Certificate) -> None:
    purpose = root.find(f".//{{{DS}}}SignatureProperty")
    require(
        purpose is not None and (purpose.text or "").strip() == "1.2.840.10065.1.12.1.14",
        "XDSRegistryMetadataError",
        "purposeOfSignature",
    )
    require(
        purpose is not None and purpose.get("Target") == f"#{root.get('Id')}",
        "XDSRegistryMetadataError",
        "purpose target",
    )
    digest = root.findtext(f".//{{{XADES}}}CertDigest/{{{DS}}}DigestValue")
    der = cert.public_bytes(serialization.Encoding.DER)
    require(digest == base64.b64encode(hashlib.sha1(der).digest()).decode(), "XDSRegistryMetadataError", "CertDigest")
    serial = root.findtext(f".//{{{XADES}}}IssuerSerial/{{{DS}}}X509SerialNumber")
    require(serial == str(cert.serial_number), "XDSRegistryMetadataError", "IssuerSerial")
    require(bool(root.findtext(f".//{{{XADES}}}SigningTime")), "XDSRegistryMetadataError", "SigningTime")
