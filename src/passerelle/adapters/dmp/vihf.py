"""The VIHF: a self-issued SAML 2.0 assertion naming the structure, the sender and the patient, signed
(enveloped XML-DSig, exclusive C14N, RSA-SHA256) with the structure's SIGN key, and placed alone in
``wsse:Security`` (no timestamp, no message signature). One per patient and sender; a short lifetime.

Element order (SAML schema): Issuer, ds:Signature, Subject, Conditions, AuthnStatement, AttributeStatement.
Attributes: docs/dmp-transport.md (table "VIHF").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from lxml import etree
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.signer import XMLSigner

from passerelle.adapters.dmp.credentials import SigningIdentity
from passerelle.adapters.dmp.settings import DmpSettings
from passerelle.mappings.document import Author, Patient
from passerelle.mappings.xds.ns import default_ns

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
HL7V3 = "urn:hl7-org:v3"
X509_SUBJECT = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
UNSPECIFIED_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified"
PROFESSION_SYSTEM = "1.2.250.1.71.1.2.7"  # TRE_G15 professions
SPECIALTY_SYSTEM = "1.2.250.1.71.4.2.5"  # TRE_R01 RPPS specialties
NON_HUMAN_SYSTEM = "1.2.250.1.213.1.1.4.6"  # TRE_A00 (AUTOMATE)
PURPOSE_SYSTEM = "1.2.250.1.213.1.1.4.248"  # TRE_R248 access modes
ACTIVITY_SECTOR_SYSTEM = "1.2.250.1.71.4.2.4"
LIFETIME = timedelta(minutes=5)


@dataclass(frozen=True)
class Sender:
    """Who the token speaks for: a health professional (IdNat_PS, names, profession/specialty) or, for an
    automated processing, the responsible person's id with the role AUTOMATE."""

    name_id: str
    display_name: str
    roles: tuple[tuple[str, str, str, str], ...]  # (code, codeSystem, codeSystemName, displayName)


def sender_for(author: Author | None, context: DmpSettings) -> Sender:
    """The VIHF subject for a document's author (a device or no author: the automated-processing form)."""
    if author is not None and author.person_id:
        name = " ".join(part for part in (author.given, author.family) if part) or author.person_id
        return Sender(author.person_id, name, _roles(author))
    return Sender(
        context.responsible_id or context.structure_id,
        f"{context.software_name}, {context.software_version}",
        (("AUTOMATE", NON_HUMAN_SYSTEM, "TRE_A00", "Automate"),),
    )


def _roles(author: Author) -> tuple[tuple[str, str, str, str], ...]:
    """``G15_10/SM03`` (TRE_G15 combined code) → profession ``10`` + specialty ``SM03``."""
    role = author.role
    if role is None or not role.code.startswith("G15_"):
        return (("AUTOMATE", NON_HUMAN_SYSTEM, "TRE_A00", "Automate"),)
    profession, _, specialty = role.code[4:].partition("/")
    roles = [(profession, PROFESSION_SYSTEM, "professions", role.display.split(" - ")[0])]
    if specialty:
        roles.append((specialty, SPECIALTY_SYSTEM, "specialites RPPS", role.display))
    return tuple(roles)


def _instant(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{SAML}}}{tag}", attrs)
    if text is not None:
        element.text = text
    return element


def build_assertion(
    identity: SigningIdentity, context: DmpSettings, sender: Sender, patient: Patient, now: datetime
) -> etree._Element:
    """The unsigned assertion (with an empty ``ds:Signature`` placeholder after ``Issuer``)."""
    assertion = etree.Element(
        f"{{{SAML}}}Assertion",
        {"ID": f"_{uuid.uuid4()}", "IssueInstant": _instant(now), "Version": "2.0"},
        nsmap={"saml2": SAML, "xsi": XSI},
    )
    _sub(assertion, "Issuer", identity.subject, Format=X509_SUBJECT)
    etree.SubElement(assertion, f"{{{DSIG}}}Signature", {"Id": "placeholder"}, nsmap={"ds": DSIG})
    _sub(_sub(assertion, "Subject"), "NameID", sender.name_id)
    _sub(assertion, "Conditions", NotBefore=_instant(now - LIFETIME), NotOnOrAfter=_instant(now + LIFETIME))
    authn = _sub(assertion, "AuthnStatement", AuthnInstant=_instant(now))
    _sub(_sub(authn, "AuthnContext"), "AuthnContextClassRef", UNSPECIFIED_CONTEXT)
    statement = _sub(assertion, "AttributeStatement")
    for name, value in _text_attributes(context, sender, patient):
        _sub(_sub(statement, "Attribute", Name=name), "AttributeValue", value)
    roles = _sub(statement, "Attribute", Name="urn:oasis:names:tc:xacml:2.0:subject:role")
    for code, system, system_name, display in sender.roles:
        _ce(_sub(roles, "AttributeValue"), "Role", code, system, system_name, display)
    purpose = _sub(statement, "Attribute", Name="urn:oasis:names:tc:xspa:1.0:subject:purposeofuse")
    _ce(
        _sub(purpose, "AttributeValue"), "PurposeOfUse", "normal", PURPOSE_SYSTEM, "mode acces VIHF 1.0", "Accès normal"
    )
    return assertion


def _text_attributes(context: DmpSettings, sender: Sender, patient: Patient) -> list[tuple[str, str]]:
    pairs = [
        ("VIHF_Version", context.vihf_version),
        ("Authentification_Mode", "INDIRECTE"),
        ("Identifiant_Structure", context.structure_id),
        ("Secteur_Activite", f"{context.activity_sector}^{ACTIVITY_SECTOR_SYSTEM}"),
        ("urn:oasis:names:tc:xspa:1.0:subject:subject-id", sender.display_name),
        ("urn:oasis:names:tc:xacml:2.0:resource:resource-id", f"{patient.ins}^^^&{patient.ins_oid}&ISO^NH"),
        ("Ressource_URN", "urn:dmp"),
        ("LPS_Nom", context.software_name),
        ("LPS_Version", context.software_version),
        ("LPS_ID_HOMOLOGATION_DMP", context.homologation_id),
    ]
    if context.installation_id:
        pairs.append(("LPS_ID", context.installation_id))
    return pairs


def _ce(parent: etree._Element, tag: str, code: str, system: str, system_name: str, display: str) -> None:
    element = etree.SubElement(
        parent,
        f"{{{HL7V3}}}{tag}",
        {"code": code, "codeSystem": system, "codeSystemName": system_name, "displayName": display},
        nsmap=default_ns(HL7V3, xsi=XSI),
    )
    element.set(f"{{{XSI}}}type", "CE")


def sign_assertion(assertion: etree._Element, identity: SigningIdentity) -> etree._Element:
    """Enveloped signature of the whole assertion (reference ``#<ID>``), certificate in KeyInfo."""
    signer = XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    signed: etree._Element = signer.sign(
        assertion,
        key=identity.key,
        cert=[identity.certificate],
        reference_uri=assertion.get("ID"),
        id_attribute="ID",
    )
    return signed


def build_vihf(
    identity: SigningIdentity, context: DmpSettings, sender: Sender, patient: Patient, now: datetime
) -> etree._Element:
    """A signed VIHF for one patient and one sender, issued at ``now`` (UTC)."""
    return sign_assertion(build_assertion(identity, context, sender, patient, now), identity)
