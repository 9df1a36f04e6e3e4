"""The XAdES 1.1.1 signature of the submission set (the signature DocumentEntry's part), verified.

Verified by hand, as docs/sandbox.md explains: SignedInfo canonicalised (C14N 1.0 with comments) and
its RSA signature checked with the KeyInfo certificate; both references (Manifest and XAdES
SignedProperties) recomputed; the Manifest lists the submission set (digest ``AA==``) and every
other document of the lot with the right digest; CertDigest, IssuerSerial, SigningTime and the
purposeOfSignature checked. Each element is canonicalised from a ``deepcopy`` taken as its own
document: lxml's in-tree subtree canonicalisation adds ``xmlns=""`` and changes the digests.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from passerelle.sandbox.dmp import certs
from passerelle.sandbox.dmp.common import DS, XADES, SoapFault, failure, parse_xml, q
from passerelle.sandbox.dmp.rules import Lot

XADES_ERROR = "DMPInvalidXAdES"
C14N_WITH_COMMENTS = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
MANIFEST_TYPE = "http://www.w3.org/2000/09/xmldsig#Manifest"
PROPERTIES_TYPE = "http://uri.etsi.org/01903/v1.1.1#SignedProperties"
PURPOSE = "1.2.840.10065.1.12.1.14"
_DIGESTS = {
    "http://www.w3.org/2000/09/xmldsig#sha1": hashes.SHA1,
    "http://www.w3.org/2001/04/xmlenc#sha256": hashes.SHA256,
}
_SIGNATURES = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": hashes.SHA1,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": hashes.SHA256,
}


def c14n(element: etree._Element) -> bytes:
    """Inclusive C14N 1.0 with comments of ``element`` as its own document."""
    return bytes(etree.tostring(copy.deepcopy(element), method="c14n", with_comments=True))


def _digest(algorithm: str | None, data: bytes) -> str:
    if algorithm not in _DIGESTS:
        raise failure(XADES_ERROR, "unsupported DigestMethod")
    h = hashes.Hash(_DIGESTS[algorithm]())
    h.update(data)
    return base64.b64encode(h.finalize()).decode("ascii")


def _algorithm(parent: etree._Element, name: str) -> str | None:
    found = parent.find(q(DS, name))
    return None if found is None else found.get("Algorithm")


def _by_id(root: etree._Element, ident: str) -> etree._Element:
    found = [e for e in root.iter() if isinstance(e.tag, str) and e.get("Id") == ident]
    if len(found) != 1:
        raise failure(XADES_ERROR, "a reference does not resolve to exactly one element")
    return found[0]


def verify(lot: Lot, cas: list[x509.Certificate], *, lenient: bool) -> None:
    """Raise ``DMPInvalidXAdES`` / ``DMPInvalidCertificate`` failures; return when the signature holds."""
    entry, data = lot.signature
    try:
        root = parse_xml(data.lstrip() if lenient else data)
    except ValueError as exc:
        raise failure(XADES_ERROR, "the signature document is not well-formed XML", entry.id) from exc
    if root.tag != q(DS, "Signature") or not root.get("Id"):
        raise failure(XADES_ERROR, "the signature document must be a ds:Signature with an Id", entry.id)
    signed_info = root.find(q(DS, "SignedInfo"))
    if signed_info is None:
        raise failure(XADES_ERROR, "ds:SignedInfo is missing", entry.id)
    cert = _certificate(root, cas, lot)
    _check_signed_info(root, signed_info, cert)
    _check_manifest(root, signed_info, lot)
    _check_properties(root, cert)


def _certificate(root: etree._Element, cas: list[x509.Certificate], lot: Lot) -> x509.Certificate:
    text = root.findtext(f"{q(DS, 'KeyInfo')}/{q(DS, 'X509Data')}/{q(DS, 'X509Certificate')}")
    try:
        cert = certs.from_base64(text or "")
        certs.check_signing_cert(cert, cas, "XAdES signing")
    except SoapFault as fault:
        raise failure(certs.CERT_ERROR, fault.reason) from fault
    if certs.structure_id(cert) not in lot.institutions:
        raise failure(certs.CERT_ERROR, "the XAdES certificate is not the submitting structure's")
    return cert


def _check_signed_info(root: etree._Element, signed_info: etree._Element, cert: x509.Certificate) -> None:
    method = signed_info.find(q(DS, "CanonicalizationMethod"))
    if method is None or method.get("Algorithm") != C14N_WITH_COMMENTS:
        raise failure(XADES_ERROR, "SignedInfo must be canonicalised with C14N 1.0 with comments")
    algorithm = _algorithm(signed_info, "SignatureMethod")
    if algorithm not in _SIGNATURES:
        raise failure(XADES_ERROR, "unsupported SignatureMethod")
    types = []
    for reference in signed_info.findall(q(DS, "Reference")):
        uri = str(reference.get("URI") or "")
        target = _by_id(root, uri.removeprefix("#")) if uri.startswith("#") else None
        if target is None:
            raise failure(XADES_ERROR, "a SignedInfo reference is not a same-document reference")
        expected = reference.findtext(q(DS, "DigestValue")) or ""
        algorithm_ref = _algorithm(reference, "DigestMethod")
        if _digest(algorithm_ref, c14n(target)) != expected.strip():
            raise failure(XADES_ERROR, "a SignedInfo reference digest does not match")
        types.append(reference.get("Type"))
    if sorted(str(t) for t in types) != sorted([MANIFEST_TYPE, PROPERTIES_TYPE]):
        raise failure(XADES_ERROR, "SignedInfo must reference the Manifest and the XAdES 1.1.1 SignedProperties")
    value = base64.b64decode("".join((root.findtext(q(DS, "SignatureValue")) or "").split()))
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise failure(XADES_ERROR, "only RSA signatures are supported")
    try:
        key.verify(value, c14n(signed_info), padding.PKCS1v15(), _SIGNATURES[str(algorithm)]())
    except InvalidSignature as exc:
        raise failure(XADES_ERROR, "the SignatureValue does not verify with the KeyInfo certificate") from exc


def _check_manifest(root: etree._Element, signed_info: etree._Element, lot: Lot) -> None:
    manifest_ref = next(r for r in signed_info.findall(q(DS, "Reference")) if r.get("Type") == MANIFEST_TYPE)
    manifest = _by_id(root, str(manifest_ref.get("URI"))[1:])
    expected = {f"urn:oid:{lot.unique_id(lot.submission_set)}": "AA=="}
    for entry, data in lot.documents:
        transformed = entry.attributes.get("mimeType", "").endswith("xml")
        expected[f"urn:oid:{lot.unique_id(entry)}"] = (
            _xml_digest(data)
            if transformed
            else base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode()
        )
    seen: dict[str, str] = {}
    for reference in manifest.findall(q(DS, "Reference")):
        uri = str(reference.get("URI") or "")
        if uri in seen:
            raise failure(XADES_ERROR, "the Manifest references a document twice")
        seen[uri] = (reference.findtext(q(DS, "DigestValue")) or "").strip()
    if set(seen) != set(expected):
        raise failure(XADES_ERROR, "the Manifest does not list exactly the submission set and its documents")
    for uri, digest in expected.items():
        if seen[uri] != digest:
            raise failure(XADES_ERROR, "a Manifest digest does not match its document")


def _xml_digest(data: bytes) -> str:
    """SHA-1 of the C14N-with-comments form of the whole document (XML-DSig: an external reference is
    parsed into the document's node-set), so processing instructions and comments around the root
    element count, as in the ANS examples' CDA prolog."""
    try:
        document = parse_xml(data)
    except ValueError as exc:
        raise failure(XADES_ERROR, "an XML document of the lot is not well-formed") from exc
    canonical = etree.tostring(document.getroottree(), method="c14n", with_comments=True)
    return base64.b64encode(hashlib.sha1(canonical, usedforsecurity=False).digest()).decode()


def _check_properties(root: etree._Element, cert: x509.Certificate) -> None:
    sig_id = f"#{root.get('Id')}"
    qualifying = root.find(f"{q(DS, 'Object')}/{q(XADES, 'QualifyingProperties')}")
    if qualifying is None or qualifying.get("Target") != sig_id:
        raise failure(XADES_ERROR, "QualifyingProperties (XAdES 1.1.1) must target the signature")
    signing = qualifying.find(f".//{q(XADES, 'SigningCertificate')}/{q(XADES, 'Cert')}")
    if signing is None:
        raise failure(XADES_ERROR, "SigningCertificate/Cert is missing")
    digest = signing.find(f"{q(XADES, 'CertDigest')}/{q(DS, 'DigestMethod')}")
    value = signing.findtext(f"{q(XADES, 'CertDigest')}/{q(DS, 'DigestValue')}") or ""
    if digest is None or _digest(digest.get("Algorithm"), cert.public_bytes(Encoding.DER)) != value.strip():
        raise failure(XADES_ERROR, "CertDigest is not the digest of the KeyInfo certificate")
    issuer = signing.findtext(f"{q(XADES, 'IssuerSerial')}/{q(DS, 'X509IssuerName')}") or ""
    serial = signing.findtext(f"{q(XADES, 'IssuerSerial')}/{q(DS, 'X509SerialNumber')}") or ""
    if not certs.dn_matches(issuer, cert.issuer) or serial.strip() != str(cert.serial_number):
        raise failure(XADES_ERROR, "IssuerSerial does not name the KeyInfo certificate")
    try:
        datetime.fromisoformat((qualifying.findtext(f".//{q(XADES, 'SigningTime')}") or "").replace("Z", "+00:00"))
    except ValueError as exc:
        raise failure(XADES_ERROR, "SigningTime is not an xs:dateTime") from exc
    purposes = [
        p
        for p in root.iter()
        if isinstance(p.tag, str)
        and etree.QName(p).localname == "SignatureProperty"
        and p.get("Id") == "purposeOfSignature"
    ]
    if len(purposes) != 1 or purposes[0].get("Target") != sig_id or (purposes[0].text or "").strip() != PURPOSE:
        raise failure(XADES_ERROR, f"purposeOfSignature must be {PURPOSE} targeting the signature")
