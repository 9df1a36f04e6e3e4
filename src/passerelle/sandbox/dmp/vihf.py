"""The VIHF: a self-issued SAML 2.0 assertion in ``wsse:Security``, signed with the structure's SIGN key.

Checked as docs/sandbox.md lists: one assertion, version and time window, enveloped XML-DSig verified
with signxml against the KeyInfo certificate, that certificate issued by the sandbox's test CA with
the signature key usages and distinct from the TLS client certificate, Issuer = its subject, the
required attributes and their formats. The request-dependent checks (structure of the submission set,
patient) are :func:`check_context`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidInput, InvalidSignature
from signxml.verifier import SignatureConfiguration, XMLVerifier

from passerelle.sandbox.dmp.certs import CERT_ERROR, check_signing_cert, dn_matches, from_base64, structure_id
from passerelle.sandbox.dmp.common import DS, HL7, SAML, WSSE, q, sender

VIHF_ERROR = "DMPInvalidVIHF"
SIGNATURE_ERROR = "DMPInvalidVIHFSignature"
TIME_ERROR = "DMPVIHFExpired"
STRUCTURE_ERROR = "DMPAuthenticationFailure"
PATIENT_ERROR = "DMPPatientMismatch"

WINDOW = timedelta(minutes=5)
SECTOR = re.compile(r"^SA\d\d\^1\.2\.250\.1\.71\.4\.2\.4$")
RESOURCE_ID = re.compile(r"^[^^&]+\^\^\^&1\.2\.250\.1\.213\.1\.4\.\d+&ISO\^NH$")
ROLE_SYSTEMS = frozenset({"1.2.250.1.71.1.2.7", "1.2.250.1.213.1.1.4.6", "1.2.250.1.71.4.2.5"})
PURPOSE_SYSTEM = "1.2.250.1.213.1.1.4.248"
SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
RESOURCE = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
#: attribute names, matched case-insensitively (senders spell ``Authentification_mode`` both ways)
REQUIRED = (
    "VIHF_Version",
    "Authentification_Mode",
    "Identifiant_Structure",
    "Secteur_Activite",
    SUBJECT_ID,
    ROLE,
    RESOURCE,
    "Ressource_URN",
    PURPOSE,
    "LPS_Nom",
    "LPS_Version",
    "LPS_ID_HOMOLOGATION_DMP",
)

_CONFIG = SignatureConfiguration(
    require_x509=True,
    signature_methods=frozenset({SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA1}),
    digest_algorithms=frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA1}),
    expect_references=1,
)


@dataclass(frozen=True)
class Vihf:
    """What the rest of the request is checked against."""

    assertion_id: str
    structure_id: str
    resource_id: str
    subject: str
    certificate: x509.Certificate


def read_vihf(header: etree._Element, cas: list[x509.Certificate], tls_peer: bytes | None, now: datetime) -> Vihf:
    """Check the assertion of ``wsse:Security``; raise a ``soap:Sender`` fault on the first problem."""
    security = header.findall(q(WSSE, "Security"))
    assertions = [a for s in security for a in s.findall(q(SAML, "Assertion"))]
    if len(security) != 1 or len(assertions) != 1:
        raise sender(VIHF_ERROR, "wsse:Security must hold exactly one saml2:Assertion")
    assertion = assertions[0]
    if assertion.get("Version") != "2.0" or not assertion.get("ID"):
        raise sender(VIHF_ERROR, "the assertion must have Version 2.0 and an ID")
    _check_instant(assertion.get("IssueInstant"), now)
    cert = _verify_signature(assertion, cas, tls_peer)
    attributes = _attributes(assertion)
    _check_attributes(attributes, cert)
    subject = assertion.findtext(f"{q(SAML, 'Subject')}/{q(SAML, 'NameID')}") or ""
    if not subject.strip():
        raise sender(VIHF_ERROR, "the assertion has no Subject/NameID")
    return Vihf(
        assertion_id=str(assertion.get("ID")),
        structure_id=_text(attributes, "identifiant_structure"),
        resource_id=_text(attributes, RESOURCE.lower()),
        subject=subject.strip(),
        certificate=cert,
    )


def _check_instant(value: str | None, now: datetime) -> None:
    try:
        instant = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise sender(VIHF_ERROR, "IssueInstant is not an xs:dateTime") from exc
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    if abs(now - instant) > WINDOW:
        raise sender(TIME_ERROR, "IssueInstant is more than 5 minutes away from the platform clock")


def _verify_signature(
    assertion: etree._Element, cas: list[x509.Certificate], tls_peer: bytes | None
) -> x509.Certificate:
    children = list(assertion)
    signature = assertion.find(q(DS, "Signature"))
    if signature is None:
        raise sender(SIGNATURE_ERROR, "the assertion is not signed")
    if len(children) < 2 or children[0].tag != q(SAML, "Issuer") or children[1] is not signature:
        raise sender(SIGNATURE_ERROR, "ds:Signature must immediately follow saml2:Issuer")
    cert_text = signature.findtext(f".//{q(DS, 'X509Certificate')}")
    if not cert_text:
        raise sender(CERT_ERROR, "the signature carries no X509Certificate")
    cert = from_base64(cert_text)
    check_signing_cert(cert, cas, "VIHF signing")
    if tls_peer is not None and cert.public_bytes(Encoding.DER) == tls_peer:
        raise sender(CERT_ERROR, "the VIHF is signed with the TLS client certificate")
    try:
        result = XMLVerifier().verify(
            etree.tostring(assertion),
            x509_cert=cert.public_bytes(Encoding.PEM).decode("ascii"),
            expect_config=_CONFIG,
            id_attribute="ID",
        )
    except (InvalidSignature, InvalidInput) as exc:
        raise sender(SIGNATURE_ERROR, "the VIHF signature does not verify") from exc
    signed = result.signed_xml if not isinstance(result, list) else None
    if signed is None or signed.get("ID") != assertion.get("ID"):
        raise sender(SIGNATURE_ERROR, "the VIHF signature does not cover the assertion")
    issuer = assertion.findtext(q(SAML, "Issuer")) or ""
    if not dn_matches(issuer, cert.subject):
        raise sender(VIHF_ERROR, "saml2:Issuer is not the signing certificate's subject")
    return cert


def _attributes(assertion: etree._Element) -> dict[str, list[etree._Element]]:
    found: dict[str, list[etree._Element]] = {}
    for attribute in assertion.iter(q(SAML, "Attribute")):
        values = attribute.findall(q(SAML, "AttributeValue"))
        found.setdefault(str(attribute.get("Name") or "").lower(), []).extend(values)
    return found


def _text(attributes: dict[str, list[etree._Element]], name: str) -> str:
    values = attributes.get(name.lower()) or []
    return (values[0].text or "").strip() if values else ""


def _check_attributes(attributes: dict[str, list[etree._Element]], cert: x509.Certificate) -> None:
    for name in REQUIRED:
        if not attributes.get(name.lower()):
            raise sender(VIHF_ERROR, f"the VIHF attribute {name} is missing")
    if _text(attributes, "Authentification_Mode").upper() not in ("INDIRECTE", "DIRECTE", "INDIRECTE_RENFORCEE"):
        raise sender(VIHF_ERROR, "Authentification_Mode is not INDIRECTE, DIRECTE or INDIRECTE_RENFORCEE")
    if not SECTOR.match(_text(attributes, "Secteur_Activite")):
        raise sender(VIHF_ERROR, "Secteur_Activite must be SAnn^1.2.250.1.71.4.2.4")
    if _text(attributes, "Ressource_URN") != "urn:dmp":
        raise sender(VIHF_ERROR, "Ressource_URN must be urn:dmp")
    if not RESOURCE_ID.match(_text(attributes, RESOURCE)):
        raise sender(VIHF_ERROR, "resource-id must be an INS as <INS>^^^&<INS OID>&ISO^NH")
    _check_coded(attributes)
    if _text(attributes, "Identifiant_Structure") != structure_id(cert):
        raise sender(STRUCTURE_ERROR, "Identifiant_Structure is not the OU of the signing certificate")


def _check_coded(attributes: dict[str, list[etree._Element]]) -> None:
    for value in attributes[ROLE.lower()]:
        role = value.find(q(HL7, "Role"))
        if role is None or not role.get("code") or role.get("codeSystem") not in ROLE_SYSTEMS:
            raise sender(VIHF_ERROR, "each role is an hl7:Role CE from the professions or AUTOMATE code systems")
    purpose = attributes[PURPOSE.lower()][0].find(q(HL7, "PurposeOfUse"))
    if purpose is None or purpose.get("code") != "normal" or purpose.get("codeSystem") != PURPOSE_SYSTEM:
        raise sender(VIHF_ERROR, "purposeofuse must be the CE normal of 1.2.250.1.213.1.1.4.248")


def check_context(vihf: Vihf, patient_id: str | None, institution_ids: set[str] | None) -> None:
    """The VIHF speaks for this request: same patient, and the submitting structure is its own."""
    if patient_id is not None and vihf.resource_id != patient_id:
        raise sender(PATIENT_ERROR, "the VIHF resource-id is not the request's patient")
    if institution_ids is not None and vihf.structure_id not in institution_ids:
        raise sender(STRUCTURE_ERROR, "the submission set's authorInstitution is not the VIHF structure")
