"""Independent checks of what the gateway sends to the DMP: written for the tests from the public
specifications, sharing no code with ``passerelle.adapters.dmp`` or ``passerelle.mappings.xds``.

Independent means: MIME parsed by the standard library ``email`` package; the SOAP body validated against
the XDS.b / ebRIM XSDs (lxml XMLSchema) with every ``xop:Include`` replaced by its part in base64; the VIHF
signature verified with python-xmlsec (libxmlsec1; the gateway signs with signxml); the XAdES signature
verified with signxml's verifier (the gateway builds it by hand) and its manifest digests recomputed with
``xmllint --c14n`` (XML) or ``hashlib`` (binary).
"""

from __future__ import annotations

import base64
import copy
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from lxml import etree

from tests.support.xml_ns import DS, HL7, SAML, SOAP, WSA, WSSE

DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
REQUIRED_DE_SCHEMES = {
    "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a": "classCode",
    "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f": "confidentialityCode",
    "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d": "formatCode",
    "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1": "healthcareFacilityTypeCode",
    "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead": "practiceSettingCode",
    "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983": "typeCode",
    "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d": "author",
}
DTM = re.compile(r"^\d{14}$")
INS_CX = re.compile(r"^\d{13,15}\^\^\^&1\.2\.250\.1\.213\.1\.4\.(8|9|10|11)&ISO\^NH$")
SECTOR = re.compile(r"^SA\d\d\^1\.2\.250\.1\.71\.4\.2\.4$")


class Refused(Exception):
    """One failed check: ``code`` is what a strict DMP would answer, ``what`` says which rule."""

    def __init__(self, code: str, what: str) -> None:
        super().__init__(f"{code}: {what}")
        self.code = code
        self.what = what


def require(condition: bool, code: str, what: str) -> None:
    if not condition:
        raise Refused(code, what)


def parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False)


# --- MIME / envelope ----------------------------------------------------------------------------------


@dataclass
class Request:
    envelope: etree._Element
    parts: dict[str, bytes] = field(default_factory=dict)  # Content-ID (no brackets) → bytes


def read_mtom(content_type: str, body: bytes) -> Request:
    """multipart/related with XOP: the root part named by ``start``, CRLF framing, binary parts."""
    require(content_type.startswith("multipart/related"), "soap:Sender", "ITI-41 must be multipart/related")
    message = BytesParser(policy=policy.HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    assert isinstance(message, EmailMessage)
    require(message.get_param("type") == "application/xop+xml", "soap:Sender", "type must be application/xop+xml")
    require(message.get_param("start-info") == "application/soap+xml", "soap:Sender", "start-info")
    start = str(message.get_param("start") or "").strip("<>")
    boundary = str(message.get_param("boundary"))
    for found in re.finditer(re.escape(f"--{boundary}".encode()), body):
        require(found.start() == 0 or body[found.start() - 2 : found.start()] == b"\r\n", "soap:Sender", "CRLF framing")
    parts: dict[str, bytes] = {}
    root: bytes | None = None
    for part in message.iter_parts():
        cid = str(part.get("Content-ID", "")).strip().strip("<>")
        require(part.get("Content-Transfer-Encoding", "").lower() == "binary", "soap:Sender", "parts must be binary")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        if cid == start:
            require(part.get_content_type() == "application/xop+xml", "soap:Sender", "root part type")
            require(part.get_param("type") == "application/soap+xml", "soap:Sender", "root part type parameter")
            root = payload
        else:
            require(cid not in parts, "soap:Sender", "duplicate Content-ID")
            parts[cid] = payload
    require(root is not None, "soap:Sender", "start names no part")
    assert root is not None
    return Request(etree.fromstring(root, parser()), parts)


def check_envelope(envelope: etree._Element, action: str, endpoint: str) -> str:
    """SOAP 1.2 + WS-Addressing; returns the MessageID."""
    require(envelope.tag == f"{{{SOAP}}}Envelope", "soap:VersionMismatch", "SOAP 1.2 envelope")
    header = envelope.find(f"{{{SOAP}}}Header")
    require(header is not None, "soap:Sender", "no Header")
    assert header is not None
    msg_id = header.findtext(f"{{{WSA}}}MessageID") or ""
    require(re.match(r"^urn:uuid:[0-9a-f-]{36}$", msg_id) is not None, "soap:Sender", "MessageID urn:uuid")
    action_el = header.find(f"{{{WSA}}}Action")
    require(action_el is not None and action_el.text == action, "soap:Sender", f"Action {action}")
    assert action_el is not None
    require(action_el.get(f"{{{SOAP}}}mustUnderstand") in ("true", "1"), "soap:Sender", "Action mustUnderstand")
    require((header.findtext(f"{{{WSA}}}To") or "").endswith(endpoint), "soap:Sender", "To = the endpoint")
    return msg_id


def body_payload(envelope: etree._Element) -> etree._Element:
    body = envelope.find(f"{{{SOAP}}}Body")
    require(body is not None and len(body) == 1, "soap:Sender", "one element in the Body")
    assert body is not None
    return body[0]


# --- VIHF ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vihf:
    structure_id: str
    resource_id: str
    certificate: x509.Certificate
    attributes: dict[str, list[str]]


def check_vihf(envelope: etree._Element, ca: x509.Certificate, now: datetime) -> Vihf:
    security = envelope.find(f"{{{SOAP}}}Header/{{{WSSE}}}Security")
    require(security is not None, "DMPInvalidVIHF", "wsse:Security")
    assert security is not None
    require(len(security) == 1 and security[0].tag == f"{{{SAML}}}Assertion", "DMPInvalidVIHF", "the assertion alone")
    assertion = copy.deepcopy(security[0])
    require(assertion.get("Version") == "2.0", "DMPInvalidVIHF", "Version 2.0")
    issued = datetime.strptime(assertion.get("IssueInstant", ""), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    require(abs(issued - now) < timedelta(minutes=5), "DMPInvalidVIHF", "IssueInstant within 5 minutes")
    children = [c.tag.rsplit("}", 1)[-1] for c in assertion]
    require(children[:3] == ["Issuer", "Signature", "Subject"], "DMPInvalidVIHF", "Issuer, Signature, Subject order")
    cert_b64 = "".join((assertion.findtext(f".//{{{DS}}}X509Certificate") or "").split())
    cert = x509.load_der_x509_certificate(base64.b64decode(cert_b64))
    _verify_enveloped(assertion, cert)
    cert.verify_directly_issued_by(ca)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    require(usage.digital_signature or usage.content_commitment, "DMPInvalidCertificate", "signing key usage")
    require(assertion.findtext(f"{{{SAML}}}Issuer") == cert.subject.rfc4514_string(), "DMPInvalidVIHF", "Issuer = DN")
    attributes = {
        a.get("Name", ""): [(v.text or "").strip() for v in a.findall(f"{{{SAML}}}AttributeValue")]
        for a in assertion.iter(f"{{{SAML}}}Attribute")
    }
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[-1].value
    _check_attributes(attributes, str(ou), assertion)
    return Vihf(str(ou), attributes["urn:oasis:names:tc:xacml:2.0:resource:resource-id"][0], cert, attributes)


def _verify_enveloped(assertion: etree._Element, cert: x509.Certificate) -> None:
    document = etree.fromstring(etree.tostring(assertion))
    xmlsec.tree.add_ids(document, ["ID"])
    node = xmlsec.tree.find_node(document, xmlsec.constants.NodeSignature)
    context = xmlsec.SignatureContext()
    context.key = xmlsec.Key.from_memory(
        cert.public_bytes(serialization.Encoding.PEM), xmlsec.constants.KeyDataFormatCertPem
    )
    try:
        context.verify(node)
    except xmlsec.Error as exc:
        raise Refused("DMPInvalidVIHF", "VIHF signature does not verify") from exc
    reference = node.find(f".//{{{DS}}}Reference")
    require(reference is not None and reference.get("URI") == f"#{assertion.get('ID')}", "DMPInvalidVIHF", "reference")


def _check_attributes(attrs: dict[str, list[str]], ou: str, assertion: etree._Element) -> None:
    for name in ("VIHF_Version", "Identifiant_Structure", "Secteur_Activite", "Ressource_URN", "LPS_Nom", "LPS_Version",
                 "LPS_ID_HOMOLOGATION_DMP", "urn:oasis:names:tc:xspa:1.0:subject:subject-id", "urn:oasis:names:tc:xacml:2.0:resource:resource-id"):  # fmt: skip
        require(bool(attrs.get(name) and attrs[name][0]), "DMPInvalidVIHF", f"attribute {name}")
    mode = {k.lower(): v for k, v in attrs.items()}.get("authentification_mode", [""])[0]
    require(mode == "INDIRECTE", "DMPInvalidVIHF", "Authentification_Mode INDIRECTE")
    require(attrs["Identifiant_Structure"][0] == ou, "DMPInvalidCertificate", "Identifiant_Structure = certificate OU")
    require(SECTOR.match(attrs["Secteur_Activite"][0]) is not None, "DMPInvalidVIHF", "Secteur_Activite format")
    require(attrs["Ressource_URN"] == ["urn:dmp"], "DMPInvalidVIHF", "Ressource_URN")
    require(
        INS_CX.match(attrs["urn:oasis:names:tc:xacml:2.0:resource:resource-id"][0]) is not None,
        "DMPInvalidVIHF",
        "resource-id",
    )
    roles = assertion.findall(
        f".//{{{SAML}}}Attribute[@Name='urn:oasis:names:tc:xacml:2.0:subject:role']//{{{HL7}}}Role"
    )
    require(len(roles) >= 1 and all(r.get("code") and r.get("codeSystem") for r in roles), "DMPInvalidVIHF", "roles")
    purpose = assertion.find(f".//{{{HL7}}}PurposeOfUse")
    require(purpose is not None and purpose.get("code") == "normal", "DMPInvalidVIHF", "purposeofuse normal")
