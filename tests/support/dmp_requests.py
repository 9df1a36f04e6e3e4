"""An independent builder of DMP SOAP requests for the sandbox's tests (lxml, signxml, cryptography).

It shares no code with the sandbox nor with the gateway: a test PKI (CA, an IGC-Santé-shaped ORG SIGN
certificate with OU = IdNat_Struct and digitalSignature + nonRepudiation, an AUTH_CLI-like one), a
VIHF signed with signxml, a hand-built XAdES 1.1.1 signature of the submission set, ebRIM metadata in
schema order and the MTOM/XOP packaging. Each piece is a plain attribute that a mutation test changes
before :meth:`Iti41.render`.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lxml import etree
from signxml import XMLSigner, methods

from tests.support.xml_ns import DS, HL7, LCM, QUERY, RIM, SAML, SOAP, WSA, WSSE, XADES, XDSB, XSI

INS_OID = "1.2.250.1.213.1.4.10"
STRUCTURE = "10B0127189"


@dataclass
class Identity:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, ou: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HOPITAL TEST"),
    ]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _issue(
    subject: x509.Name, issuer: Identity | None, *, ca: bool, usage: dict[str, bool], eku: list[x509.ObjectIdentifier]
) -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    flags = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False,
    )  # fmt: skip
    flags.update(usage)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**flags), critical=True)
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    cert = builder.sign((issuer.key if issuer else key), hashes.SHA256())
    return Identity(key, cert)


@dataclass
class Pki:
    """A test CA, the structure's SIGN certificate and an AUTH_CLI-like one (plus a foreign CA's SIGN)."""

    ca: Identity
    sign: Identity
    auth: Identity
    foreign_sign: Identity

    @classmethod
    def create(cls, structure: str = STRUCTURE) -> Pki:
        ca = _issue(_name("TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS", "IGC-SANTE TEST"), None, ca=True,
                    usage={"key_cert_sign": True, "crl_sign": True}, eku=[])  # fmt: skip
        sign = _issue(_name("HOPITAL TEST SIGN", structure), ca, ca=False,
                      usage={"digital_signature": True, "content_commitment": True},
                      eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION])  # fmt: skip
        auth = _issue(_name("HOPITAL TEST AUTH_CLI", structure), ca, ca=False,
                      usage={"digital_signature": True, "key_encipherment": True},
                      eku=[ExtendedKeyUsageOID.CLIENT_AUTH])  # fmt: skip
        other = _issue(_name("OTHER CA"), None, ca=True, usage={"key_cert_sign": True}, eku=[])
        foreign = _issue(_name("FOREIGN SIGN", structure), other, ca=False,
                         usage={"digital_signature": True, "content_commitment": True}, eku=[])  # fmt: skip
        return cls(ca, sign, auth, foreign)

    def sign_for(self, structure: str) -> Identity:
        """Another structure's SIGN certificate from the same test CA."""
        return _issue(_name(f"{structure} SIGN", structure), self.ca, ca=False,
                      usage={"digital_signature": True, "content_commitment": True},
                      eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION])  # fmt: skip

    def write_ca(self, directory: Path) -> Path:
        path = directory / "dmp-test-ca.pem"
        path.write_bytes(self.ca.pem())
        return path


def _el(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


# --- VIHF -----------------------------------------------------------------------------------------


@dataclass
class Vihf:
    signer: Identity
    ins: str
    structure: str = STRUCTURE
    issue_instant: dt.datetime | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    tamper: bool = False
    name_id: str = "801234567890"

    def build(self) -> etree._Element:
        assertion_id = f"_{uuid.uuid4()}"
        instant = (self.issue_instant or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        root = etree.Element(f"{{{SAML}}}Assertion", nsmap={"saml2": SAML, "xsi": XSI}, ID=assertion_id,
                             IssueInstant=instant, Version="2.0")  # fmt: skip
        _el(root, f"{{{SAML}}}Issuer", self.signer.cert.subject.rfc4514_string(),
            Format="urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName")  # fmt: skip
        etree.SubElement(root, f"{{{DS}}}Signature", {"Id": "placeholder"}, nsmap={"ds": DS})
        _el(_el(root, f"{{{SAML}}}Subject"), f"{{{SAML}}}NameID", self.name_id)
        authn = _el(root, f"{{{SAML}}}AuthnStatement", AuthnInstant=instant)
        _el(_el(authn, f"{{{SAML}}}AuthnContext"), f"{{{SAML}}}AuthnContextClassRef",
            "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified")  # fmt: skip
        statement = _el(root, f"{{{SAML}}}AttributeStatement")
        values = {
            "VIHF_Version": "3.0",
            "Authentification_Mode": "INDIRECTE",
            "Identifiant_Structure": self.structure,
            "Secteur_Activite": "SA01^1.2.250.1.71.4.2.4",
            "urn:oasis:names:tc:xspa:1.0:subject:subject-id": "Passerelle, test, lab",
            "urn:oasis:names:tc:xacml:2.0:resource:resource-id": f"{self.ins}^^^&{INS_OID}&ISO^NH",
            "Ressource_URN": "urn:dmp",
            "LPS_Nom": "Passerelle",
            "LPS_Version": "1.0",
            "LPS_ID_HOMOLOGATION_DMP": "TEST-0001",
            **self.attributes,
        }
        for name, value in values.items():
            if name not in self.drop:
                _el(_el(statement, f"{{{SAML}}}Attribute", Name=name), f"{{{SAML}}}AttributeValue", value)
        for name, tag, attrs in (
            ("urn:oasis:names:tc:xacml:2.0:subject:role", "Role",
             {"code": "AUTOMATE", "codeSystem": "1.2.250.1.213.1.1.4.6", "codeSystemName": "TRE_A00"}),
            ("urn:oasis:names:tc:xspa:1.0:subject:purposeofuse", "PurposeOfUse",
             {"code": self.attributes.get("purpose", "normal"), "codeSystem": "1.2.250.1.213.1.1.4.248"}),
        ):  # fmt: skip
            if name in self.drop:
                continue
            value = _el(_el(statement, f"{{{SAML}}}Attribute", Name=name), f"{{{SAML}}}AttributeValue")
            inner = etree.SubElement(value, f"{{{HL7}}}{tag}", attrs, nsmap={None: HL7})
            inner.set(f"{{{XSI}}}type", "CE")
        signed = XMLSigner(
            method=methods.enveloped,
            signature_algorithm="rsa-sha256",
            digest_algorithm="sha256",
            c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
        ).sign(root, key=self.signer.key, cert=[self.signer.cert.public_bytes(serialization.Encoding.PEM).decode()],
               reference_uri=assertion_id, id_attribute="ID")  # fmt: skip
        if self.tamper:
            signed.find(f"{{{SAML}}}Subject/{{{SAML}}}NameID").text = "899999999999"
        return signed


# --- SOAP envelope and MTOM -------------------------------------------------------------------------


@dataclass
class Envelope:
    action: str
    to: str = ""
    message_id: str = field(default_factory=lambda: f"urn:uuid:{uuid.uuid4()}")
    soap_ns: str = SOAP
    action_must_understand: bool = True
    drop_message_id: bool = False
    extra_header: etree._Element | None = None

    def build(self, vihf: etree._Element | None, body: etree._Element) -> bytes:
        root = etree.Element(f"{{{self.soap_ns}}}Envelope", nsmap={"soap": self.soap_ns, "wsa": WSA})
        header = _el(root, f"{{{self.soap_ns}}}Header")
        if not self.drop_message_id:
            _el(header, f"{{{WSA}}}MessageID", self.message_id)
        _el(header, f"{{{WSA}}}To", self.to)
        reply = _el(header, f"{{{WSA}}}ReplyTo")
        _el(reply, f"{{{WSA}}}Address", "http://www.w3.org/2005/08/addressing/anonymous")
        action = _el(header, f"{{{WSA}}}Action", self.action)
        if self.action_must_understand:
            action.set(f"{{{self.soap_ns}}}mustUnderstand", "true")
        if vihf is not None:
            etree.SubElement(header, f"{{{WSSE}}}Security", nsmap={"wsse": WSSE}).append(vihf)
        if self.extra_header is not None:
            header.append(self.extra_header)
        _el(root, f"{{{self.soap_ns}}}Body").append(body)
        return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def multipart(
    envelope: bytes, parts: dict[str, bytes], action: str, *, boundary: str = "MIMEBoundary_test"
) -> tuple[str, bytes]:
    chunks = [
        f'--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n'
        "Content-Transfer-Encoding: binary\r\nContent-ID: <0.root@test>\r\n\r\n".encode()
        + envelope
    ]
    for cid, data in parts.items():
        chunks.append(
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: <{cid}>\r\n\r\n".encode()
            + data
        )
    body = b"\r\n".join(chunks) + f"\r\n--{boundary}--\r\n".encode()
    header = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start="<0.root@test>"; '
        f'start-info="application/soap+xml"; action="{action}"'
    )
    return header, body


# --- ITI-41 --------------------------------------------------------------------------------------

ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
C14N_WC = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"


def oid() -> str:
    return f"1.2.250.1.999.1.{uuid.uuid4().int % 10**18}"


def cda(unique_id: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ClinicalDocument xmlns="urn:hl7-org:v3">'
        f'<!-- synthetic --><id root="{unique_id}"/><title>Compte rendu</title></ClinicalDocument>'
    ).encode()


def c14n(element: etree._Element) -> bytes:
    return bytes(etree.tostring(copy.deepcopy(element), method="c14n", with_comments=True))


def c14n_document(data: bytes) -> bytes:
    """C14N with comments of a whole document (its prolog's processing instructions and comments too)."""
    return bytes(etree.tostring(etree.fromstring(data).getroottree(), method="c14n", with_comments=True))


def b64sha1(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


@dataclass
class Doc:
    entry_id: str
    unique_id: str
    content: bytes
    mime: str = "text/xml"
    confidentiality: tuple[tuple[str, str], ...] = (("N", "2.16.840.1.113883.5.25"),)
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)
    slots: dict[str, list[str]] = field(default_factory=dict)
    patient_id: str | None = None


DE_CODES = {
    "class": ("urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a", ("10", "1.2.250.1.213.1.1.4.1")),
    "type": ("urn:uuid:f0306f51-975f-434e-a61c-c59651d33983", ("11502-2", "2.16.840.1.113883.6.1")),
    "format": ("urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d", ("urn:ihe:lab:xd-lab:2008", "1.3.6.1.4.1.19376.1.2.3")),
    "facility": ("urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1", ("SA01", "1.2.250.1.71.4.2.4")),
    "practice": ("urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead", ("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9")),
}
CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
EVENT = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"


@dataclass
class Iti41:
    """One ITI-41 submission; change any attribute (or the hooks) before :meth:`render`."""

    pki: Pki
    ins: str
    documents: list[Doc] = field(default_factory=list)
    structure: str = STRUCTURE
    ss_unique_id: str = field(default_factory=oid)
    signature_unique_id: str = field(default_factory=oid)
    replaces: dict[str, str] = field(default_factory=dict)
    xades_signer: Identity | None = None
    vihf: Vihf | None = None
    envelope: Envelope = field(default_factory=lambda: Envelope(ITI41))
    patient_id: str | None = None
    #: hooks: change the metadata (RegistryObjectList), the signature element, the parts
    edit_metadata: Callable[[etree._Element], None] | None = None
    edit_signature: Callable[[etree._Element], None] | None = None
    edit_parts: Callable[[dict[str, bytes]], None] | None = None
    signature_size: int | None = None

    def __post_init__(self) -> None:
        if not self.documents:
            unique_id = oid()
            self.documents = [Doc("Document01", unique_id, cda(unique_id))]
        if self.vihf is None:
            self.vihf = Vihf(self.pki.sign, self.ins, self.structure)

    @property
    def pid(self) -> str:
        return self.patient_id or f"{self.ins}^^^&{INS_OID}&ISO^NH"

    def _author(self, parent: etree._Element, scheme: str, obj: str) -> None:
        cls = _el(parent, f"{{{RIM}}}Classification", classificationScheme=scheme, classifiedObject=obj,
                  id=f"urn:uuid:{uuid.uuid4()}", nodeRepresentation="")  # fmt: skip
        for name, value in (
            ("authorPerson", "801234567890^DUPONT^JEAN^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"),
            ("authorInstitution", f"HOPITAL TEST^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^{self.structure}"),
        ):
            _slot(cls, name, [value])

    def _code(self, parent: etree._Element, scheme: str, obj: str, code: str, system: str) -> None:
        cls = _el(parent, f"{{{RIM}}}Classification", classificationScheme=scheme, classifiedObject=obj,
                  id=f"urn:uuid:{uuid.uuid4()}", nodeRepresentation=code)  # fmt: skip
        _slot(cls, "codingScheme", [system])
        _name_of(cls, code)

    def _entry(self, parent: etree._Element, doc: Doc, data: bytes, now: str) -> None:
        eo = _el(parent, f"{{{RIM}}}ExtrinsicObject", id=doc.entry_id, mimeType=doc.mime,
                 objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1")  # fmt: skip
        slots = {
            "creationTime": [now], "languageCode": ["fr-FR"], "serviceStartTime": [now], "serviceStopTime": [now],
            "sourcePatientId": [f"{self.ins}^^^&{INS_OID}&ISO^NH"],
            "hash": [hashlib.sha1(data).hexdigest()], "size": [str(len(data))],
            **doc.slots,
        }  # fmt: skip
        for name, values in slots.items():
            if values:
                _slot(eo, name, values)
        _name_of(eo, "Compte rendu")
        self._author(eo, "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d", doc.entry_id)
        for kind, (scheme, default) in DE_CODES.items():
            code, system = doc.codes.get(kind, default)
            self._code(eo, scheme, doc.entry_id, code, system)
        for code, system in doc.confidentiality:
            self._code(eo, CONFIDENTIALITY, doc.entry_id, code, system)
        if "event" in doc.codes:
            self._code(eo, EVENT, doc.entry_id, *doc.codes["event"])
        _external(eo, "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427", doc.entry_id, doc.patient_id or self.pid)
        _external(eo, "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab", doc.entry_id, doc.unique_id)

    def signature_doc(self, now: str) -> Doc:
        """The XAdES 1.1.1 signature of the submission set (built by hand, §7 of the DMP rules)."""
        signer = self.xades_signer or self.pki.sign
        sig_id = self.signature_unique_id
        root = etree.Element(f"{{{DS}}}Signature", nsmap={None: DS}, Id=sig_id)
        signed_info = _el(root, f"{{{DS}}}SignedInfo")
        _el(signed_info, f"{{{DS}}}CanonicalizationMethod", Algorithm=C14N_WC)
        _el(signed_info, f"{{{DS}}}SignatureMethod", Algorithm="http://www.w3.org/2000/09/xmldsig#rsa-sha1")
        value = _el(root, f"{{{DS}}}SignatureValue")
        _el(_el(_el(root, f"{{{DS}}}KeyInfo"), f"{{{DS}}}X509Data"), f"{{{DS}}}X509Certificate",
            base64.b64encode(signer.cert.public_bytes(serialization.Encoding.DER)).decode())  # fmt: skip
        props = _el(_el(root, f"{{{DS}}}Object"), f"{{{DS}}}SignatureProperties")
        _el(
            props, f"{{{DS}}}SignatureProperty", "1.2.840.10065.1.12.1.14", Id="purposeOfSignature", Target=f"#{sig_id}"
        )
        manifest = _el(_el(root, f"{{{DS}}}Object"), f"{{{DS}}}Manifest", Id="IHEManifest")
        entries = [(f"urn:oid:{self.ss_unique_id}", "AA==")] + [
            (
                f"urn:oid:{d.unique_id}",
                b64sha1(c14n_document(d.content)) if d.mime == "text/xml" else b64sha1(d.content),
            )
            for d in self.documents
        ]
        for uri, digest in entries:
            ref = _el(manifest, f"{{{DS}}}Reference", URI=uri)
            if uri != entries[0][0] and digest != "AA==":
                pass
            _el(ref, f"{{{DS}}}DigestMethod", Algorithm=SHA1)
            _el(ref, f"{{{DS}}}DigestValue", digest)
        qualifying = etree.SubElement(_el(root, f"{{{DS}}}Object"), f"{{{XADES}}}QualifyingProperties",
                                      {"Target": f"#{sig_id}"}, nsmap={None: XADES})  # fmt: skip
        signed_props = _el(qualifying, f"{{{XADES}}}SignedProperties", Id="S0-SignedProperties")
        ssp = _el(signed_props, f"{{{XADES}}}SignedSignatureProperties")
        _el(ssp, f"{{{XADES}}}SigningTime", dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"))
        cert = _el(_el(ssp, f"{{{XADES}}}SigningCertificate"), f"{{{XADES}}}Cert")
        digest = _el(cert, f"{{{XADES}}}CertDigest")
        _el(digest, f"{{{DS}}}DigestMethod", Algorithm=SHA1)
        _el(digest, f"{{{DS}}}DigestValue", b64sha1(signer.cert.public_bytes(serialization.Encoding.DER)))
        serial = _el(cert, f"{{{XADES}}}IssuerSerial")
        _el(serial, f"{{{DS}}}X509IssuerName", signer.cert.issuer.rfc4514_string())
        _el(serial, f"{{{DS}}}X509SerialNumber", str(signer.cert.serial_number))
        _el(_el(ssp, f"{{{XADES}}}SignaturePolicyIdentifier"), f"{{{XADES}}}SignaturePolicyImplied")
        _el(signed_props, f"{{{XADES}}}SignedDataObjectProperties")
        if self.edit_signature is not None:
            self.edit_signature(root)
        for target, kind in ((manifest, f"{DS}Manifest"), (signed_props, f"{XADES}SignedProperties")):
            ref = etree.Element(f"{{{DS}}}Reference", Type=kind, URI=f"#{target.get('Id')}")
            _el(ref, f"{{{DS}}}DigestMethod", Algorithm=SHA1)
            _el(ref, f"{{{DS}}}DigestValue", b64sha1(c14n(target)))
            signed_info.append(ref)
        value.text = base64.b64encode(signer.key.sign(c14n(signed_info), padding.PKCS1v15(), hashes.SHA1())).decode()
        content = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        return Doc(
            "Signature01", sig_id, content,
            confidentiality=(("N", "2.16.840.1.113883.5.25"), ("MASQUE_PS", "1.2.250.1.213.1.1.4.13"),
                             ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13")),
            codes={"class": ("urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", "URN"), "type": ("E1762", "ASTM"),
                   "format": ("http://www.w3.org/2000/09/xmldsig#", "URN"),
                   "event": ("1.2.840.10065.1.12.1.14", "1.2.840.10065.1.12")},
            slots={"languageCode": ["art"]},
        )  # fmt: skip

    def body(self) -> tuple[etree._Element, dict[str, bytes]]:
        now = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
        docs = [*self.documents, self.signature_doc(now)]
        request = etree.Element(f"{{{XDSB}}}ProvideAndRegisterDocumentSetRequest",
                                nsmap={"xdsb": XDSB, "lcm": LCM, "rim": RIM})  # fmt: skip
        objects = _el(_el(request, f"{{{LCM}}}SubmitObjectsRequest"), f"{{{RIM}}}RegistryObjectList")
        ss = _el(objects, f"{{{RIM}}}RegistryPackage", id="SubmissionSet01")
        _slot(ss, "submissionTime", [now])
        _name_of(ss, "Lot")
        self._author(ss, "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d", "SubmissionSet01")
        self._code(ss, "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500", "SubmissionSet01", "04", "1.2.250.1.213.2.2")
        _external(ss, "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446", "SubmissionSet01", self.pid)
        _external(ss, "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832", "SubmissionSet01", "1.2.250.1.999.1.1")
        _external(ss, "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8", "SubmissionSet01", self.ss_unique_id)
        _el(objects, f"{{{RIM}}}Classification", classificationNode="urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd",
            classifiedObject="SubmissionSet01", id=f"urn:uuid:{uuid.uuid4()}")  # fmt: skip
        parts: dict[str, bytes] = {}
        for index, doc in enumerate(docs):
            self._entry(objects, doc, doc.content, now)
            parts[f"part{index}@test"] = doc.content
        for doc in docs:
            assoc = _el(objects, f"{{{RIM}}}Association", id=f"urn:uuid:{uuid.uuid4()}", sourceObject="SubmissionSet01",
                        targetObject=doc.entry_id,
                        associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember")  # fmt: skip
            _slot(assoc, "SubmissionSetStatus", ["Original"])
        _el(objects, f"{{{RIM}}}Association", id=f"urn:uuid:{uuid.uuid4()}", sourceObject="Signature01",
            targetObject="SubmissionSet01", associationType="urn:ihe:iti:2007:AssociationType:signs")  # fmt: skip
        for source, target in self.replaces.items():
            _el(objects, f"{{{RIM}}}Association", id=f"urn:uuid:{uuid.uuid4()}", sourceObject=source,
                targetObject=target, associationType="urn:ihe:iti:2007:AssociationType:RPLC")  # fmt: skip
        if self.edit_metadata is not None:
            self.edit_metadata(objects)
        for index, doc in enumerate(docs):
            document = _el(request, f"{{{XDSB}}}Document", id=doc.entry_id)
            etree.SubElement(document, "{http://www.w3.org/2004/08/xop/include}Include",
                             href=f"cid:part{index}@test", nsmap={"xop": "http://www.w3.org/2004/08/xop/include"})  # fmt: skip
        if self.edit_parts is not None:
            self.edit_parts(parts)
        return request, parts

    def render(self) -> tuple[str, bytes]:
        """(Content-Type header, body) of the request."""
        body, parts = self.body()
        assert self.vihf is not None
        envelope = self.envelope.build(self.vihf.build(), body)
        return multipart(envelope, parts, self.envelope.action)


def _slot(parent: etree._Element, name: str, values: list[str]) -> None:
    value_list = _el(_el(parent, f"{{{RIM}}}Slot", name=name), f"{{{RIM}}}ValueList")
    for value in values:
        _el(value_list, f"{{{RIM}}}Value", value)


def _name_of(parent: etree._Element, text: str) -> None:
    _el(_el(parent, f"{{{RIM}}}Name"), f"{{{RIM}}}LocalizedString", value=text)


def _external(parent: etree._Element, scheme: str, obj: str, value: str) -> None:
    ext = _el(parent, f"{{{RIM}}}ExternalIdentifier", id=f"urn:uuid:{uuid.uuid4()}", identificationScheme=scheme,
              registryObject=obj, value=value)  # fmt: skip
    _name_of(ext, "id")


# --- plain SOAP requests: TD0.2, ITI-18, ITI-57 ---------------------------------------------------


def td02(ins: str, ins_oid: str = INS_OID) -> etree._Element:
    root = etree.Element(f"{{{HL7}}}PRPA_IN201307UV02", nsmap={None: HL7}, ITSVersion="XML_1.0")
    _el(root, f"{{{HL7}}}id", root="1.2.250.1.999.2", extension=str(uuid.uuid4()))
    control = _el(root, f"{{{HL7}}}controlActProcess", classCode="CACT", moodCode="EVN")
    params = _el(_el(control, f"{{{HL7}}}queryByParameter"), f"{{{HL7}}}parameterList")
    _el(_el(params, f"{{{HL7}}}patientIdentifier"), f"{{{HL7}}}value", root=ins_oid, extension=ins)
    return root


def stored_query(query_id: str, slots: dict[str, str], return_type: str = "LeafClass") -> etree._Element:
    root = etree.Element(f"{{{QUERY}}}AdhocQueryRequest", nsmap={"query": QUERY, "rim": RIM})
    _el(root, f"{{{QUERY}}}ResponseOption", returnComposedObjects="true", returnType=return_type)
    query = _el(root, f"{{{RIM}}}AdhocQuery", id=query_id)
    for name, value in slots.items():
        _slot(query, name, [value])
    return root


def update_status(builder: Iti41, target: str, original: str, new: str) -> etree._Element:
    root = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap={"lcm": LCM, "rim": RIM})
    objects = _el(root, f"{{{RIM}}}RegistryObjectList")
    ss = _el(objects, f"{{{RIM}}}RegistryPackage", id="SubmissionSet01")
    _slot(ss, "submissionTime", [dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")])
    builder._author(ss, "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d", "SubmissionSet01")
    _external(ss, "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446", "SubmissionSet01", builder.pid)
    _external(ss, "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8", "SubmissionSet01", oid())
    assoc = _el(objects, f"{{{RIM}}}Association", id=f"urn:uuid:{uuid.uuid4()}", sourceObject="SubmissionSet01",
                targetObject=target, associationType="urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus")  # fmt: skip
    _slot(assoc, "OriginalStatus", [original])
    _slot(assoc, "NewStatus", [new])
    return root


def metadata_update(
    builder: Iti41, registered: etree._Element, previous: str, confidentiality: list[tuple[str, str]]
) -> etree._Element:
    """ITI-57 metadata update: ``registered`` (an ITI-18 LeafClass ExtrinsicObject) as a new version
    (symbolic id ``Document01``, same ``lid``) with these confidentiality codes, HasMember with
    PreviousVersion."""
    root = update_status(builder, "", "", "")
    objects = root.find(f"{{{RIM}}}RegistryObjectList")
    assert objects is not None
    objects.remove(objects.find(f"{{{RIM}}}Association"))  # type: ignore[arg-type]
    ss = objects.find(f"{{{RIM}}}RegistryPackage")
    assert ss is not None
    content_type = etree.Element("holder")
    builder._code(
        content_type, "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500", "SubmissionSet01", "04", "1.2.250.1.213.2.2"
    )
    ss.find(f"{{{RIM}}}ExternalIdentifier").addprevious(content_type[0])  # type: ignore[union-attr]
    _external(ss, "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832", "SubmissionSet01", "1.2.250.1.999.1.1")
    _el(objects, f"{{{RIM}}}Classification", classificationNode="urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd",
        classifiedObject="SubmissionSet01", id=f"urn:uuid:{uuid.uuid4()}")  # fmt: skip
    entry = copy.deepcopy(registered)
    old_id = entry.get("id")
    entry.set("lid", str(entry.get("lid") or old_id))
    entry.set("id", "Document01")
    entry.attrib.pop("status", None)
    for child in list(entry):
        if child.tag == f"{{{RIM}}}VersionInfo" or child.get("classificationScheme") == CONFIDENTIALITY:
            entry.remove(child)
    for child in entry.iter(f"{{{RIM}}}Classification", f"{{{RIM}}}ExternalIdentifier"):
        for attr in ("classifiedObject", "registryObject"):
            if child.get(attr) == old_id:
                child.set(attr, "Document01")
        child.set("id", f"urn:uuid:{uuid.uuid4()}")
    codes = etree.Element("codes")
    for code, system in confidentiality:
        builder._code(codes, CONFIDENTIALITY, "Document01", code, system)
    first = next(i for i, c in enumerate(entry) if c.tag == f"{{{RIM}}}Classification")
    for offset, built in enumerate(list(codes)):
        entry.insert(first + offset, built)
    objects.append(entry)
    assoc = _el(objects, f"{{{RIM}}}Association", id=f"urn:uuid:{uuid.uuid4()}", sourceObject="SubmissionSet01",
                targetObject="Document01", associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember")  # fmt: skip
    _slot(assoc, "SubmissionSetStatus", ["Original"])
    _slot(assoc, "PreviousVersion", [previous])
    return root


def plain(action: str, body: etree._Element, vihf: Vihf, envelope: Envelope | None = None) -> tuple[str, bytes]:
    env = envelope or Envelope(action)
    return f'application/soap+xml; charset=UTF-8; action="{action}"', env.build(vihf.build(), body)
