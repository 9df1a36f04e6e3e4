"""The XAdES 1.1.1 signature of a DMP submission set, built by hand (no library emits this profile).

Layout (IHE DSG-style manifest, the DMP's flavour; docs/dmp-transport.md "XAdES"):
``ds:Signature`` (default namespace ``ds``, ``Id`` = the signature entry's uniqueId) → ``SignedInfo``
(C14N 1.0 with comments, RSA-SHA1) with two references: ``#IHEManifest`` (type Manifest) and
``#S0-SignedProperties`` (type XAdES 1.1.1 SignedProperties), both SHA-1 → ``SignatureValue`` →
``KeyInfo`` (the SIGN certificate) → ``Object``\\ s: ``purposeOfSignature`` (1.2.840.10065.1.12.1.14),
the ``Manifest`` (one ``urn:oid:<submission set uniqueId>`` reference with the conventional digest
``AA==``, then one reference per document: XML digested in its C14N-with-comments form, binary raw),
and the ``QualifyingProperties`` (signing time, signing certificate digest and issuer/serial, implied
policy).

Canonicalisation trap: lxml's ``tostring(sub_element, method="c14n")`` adds spurious ``xmlns=""`` on
descendants of an element whose default namespace comes from an ancestor; every digest here is taken on
a *copy* of the element (its own document, in-scope namespaces declared on it), which is what other
implementations compute. Namespaces are declared only where used, so the copy and the in-tree node-set
agree.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

from passerelle.adapters.dmp.credentials import SigningIdentity
from passerelle.mappings.xds.ns import default_ns

DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.1.1#"
C14N_WITH_COMMENTS = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
MANIFEST_TYPE = "http://www.w3.org/2000/09/xmldsig#Manifest"
SIGNED_PROPERTIES_TYPE = "http://uri.etsi.org/01903/v1.1.1#SignedProperties"
PURPOSE_OF_SIGNATURE = "1.2.840.10065.1.12.1.14"
MANIFEST_ID = "IHEManifest"
SIGNED_PROPERTIES_ID = "S0-SignedProperties"
#: The submission set reference's digest: a single zero byte, a DMP convention (not a hash).
SUBMISSION_SET_DIGEST = "AA=="


@dataclass(frozen=True)
class SignedDocument:
    unique_id: str
    content: bytes
    is_xml: bool


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=False)


def canonical(element: etree._Element, *, with_comments: bool = True) -> bytes:
    """Inclusive C14N 1.0 of ``element`` taken as its own document (see the module docstring)."""
    return etree.tostring(copy.deepcopy(element), method="c14n", exclusive=False, with_comments=with_comments)


def document_digest(doc: SignedDocument) -> str:
    """Manifest digest of one document: SHA-1 of its C14N-with-comments form (XML) or of its bytes."""
    if doc.is_xml:
        tree = etree.ElementTree(etree.fromstring(doc.content, _parser()))
        data = etree.tostring(tree, method="c14n", exclusive=False, with_comments=True)
    else:
        data = doc.content
    return _b64_sha1(data)


def _b64_sha1(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode("ascii")


def _ds(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{DS}}}{tag}", attrs)
    if text is not None:
        element.text = text
    return element


def _reference(parent: etree._Element, uri: str, digest: str, *, kind: str = "", transform: str = "") -> None:
    attrs = {"URI": uri}
    if kind:
        attrs = {"Type": kind, "URI": uri}
    reference = _ds(parent, "Reference", **attrs)
    if transform:
        _ds(_ds(reference, "Transforms"), "Transform", Algorithm=transform)
    _ds(reference, "DigestMethod", Algorithm=SHA1)
    _ds(reference, "DigestValue", digest)


def _manifest(
    signature: etree._Element, submission_unique_id: str, documents: Sequence[SignedDocument]
) -> etree._Element:
    manifest = _ds(_ds(signature, "Object"), "Manifest", Id=MANIFEST_ID)
    _reference(manifest, f"urn:oid:{submission_unique_id}", SUBMISSION_SET_DIGEST)
    for doc in documents:
        transform = C14N_WITH_COMMENTS if doc.is_xml else ""
        _reference(manifest, f"urn:oid:{doc.unique_id}", document_digest(doc), transform=transform)
    return manifest


def _qualifying(
    signature: etree._Element, signature_id: str, identity: SigningIdentity, now: datetime
) -> etree._Element:
    qualifying = etree.SubElement(
        _ds(signature, "Object"),
        f"{{{XADES}}}QualifyingProperties",
        {"Target": f"#{signature_id}"},
        nsmap=default_ns(XADES),
    )

    def x(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
        element = etree.SubElement(parent, f"{{{XADES}}}{tag}", attrs)
        if text is not None:
            element.text = text
        return element

    signed = x(qualifying, "SignedProperties", Id=SIGNED_PROPERTIES_ID)
    properties = x(signed, "SignedSignatureProperties")
    x(properties, "SigningTime", now.isoformat(timespec="milliseconds"))
    cert = x(x(properties, "SigningCertificate"), "Cert")
    digest = x(cert, "CertDigest")
    der = identity.certificate.public_bytes(serialization.Encoding.DER)
    etree.SubElement(digest, f"{{{DS}}}DigestMethod", {"Algorithm": SHA1}, nsmap=default_ns(DS))
    etree.SubElement(digest, f"{{{DS}}}DigestValue", nsmap=default_ns(DS)).text = _b64_sha1(der)
    serial = x(cert, "IssuerSerial")
    name = identity.certificate.issuer.rfc4514_string()
    etree.SubElement(serial, f"{{{DS}}}X509IssuerName", nsmap=default_ns(DS)).text = name
    etree.SubElement(serial, f"{{{DS}}}X509SerialNumber", nsmap=default_ns(DS)).text = str(
        identity.certificate.serial_number
    )
    x(x(properties, "SignaturePolicyIdentifier"), "SignaturePolicyImplied")
    x(signed, "SignedDataObjectProperties")
    return signed


def sign_submission_set(
    submission_unique_id: str,
    signature_id: str,
    documents: Sequence[SignedDocument],
    identity: SigningIdentity,
    now: datetime,
) -> bytes:
    """The signature document (UTF-8 bytes with an XML declaration) for one submission set."""
    signature = etree.Element(f"{{{DS}}}Signature", {"Id": signature_id}, nsmap=default_ns(DS))
    signed_info = _ds(signature, "SignedInfo")
    _ds(signed_info, "CanonicalizationMethod", Algorithm=C14N_WITH_COMMENTS)
    _ds(signed_info, "SignatureMethod", Algorithm=RSA_SHA1)
    value = _ds(signature, "SignatureValue")
    cert_b64 = base64.b64encode(identity.certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")
    _ds(_ds(_ds(signature, "KeyInfo"), "X509Data"), "X509Certificate", cert_b64)
    properties = _ds(_ds(signature, "Object"), "SignatureProperties")
    _ds(properties, "SignatureProperty", PURPOSE_OF_SIGNATURE, Id="purposeOfSignature", Target=f"#{signature_id}")
    manifest = _manifest(signature, submission_unique_id, documents)
    signed_properties = _qualifying(signature, signature_id, identity, now)
    _reference(signed_info, f"#{MANIFEST_ID}", _b64_sha1(canonical(manifest, with_comments=False)), kind=MANIFEST_TYPE)
    _reference(
        signed_info,
        f"#{SIGNED_PROPERTIES_ID}",
        _b64_sha1(canonical(signed_properties, with_comments=False)),
        kind=SIGNED_PROPERTIES_TYPE,
    )
    raw = identity.key.sign(canonical(signed_info), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - the DMP's profile
    value.text = base64.b64encode(raw).decode("ascii")
    return etree.tostring(signature, xml_declaration=True, encoding="UTF-8")
