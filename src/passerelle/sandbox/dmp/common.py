"""Namespaces, the hardened XML parser and the two kinds of refusal of the DMP services."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.1.1#"
XOP = "http://www.w3.org/2004/08/xop/include"
XDSB = "urn:ihe:iti:xds-b:2007"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

NS = {
    "soap": SOAP12,
    "wsa": WSA,
    "wsse": WSSE,
    "saml2": SAML,
    "ds": DS,
    "xades": XADES,
    "xop": XOP,
    "xdsb": XDSB,
    "rim": RIM,
    "lcm": LCM,
    "rs": RS,
    "query": QUERY,
    "hl7": HL7,
}

STATUS_APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
STATUS_DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
STATUS_ARCHIVED = "urn:asip:ci-sis:2010:StatusType:Archived"
STATUS_DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"


def q(ns: str, local: str) -> str:
    """Clark notation ``{ns}local``."""
    return f"{{{ns}}}{local}"


def parse_xml(data: bytes) -> etree._Element:
    """Parse inbound XML without entities, network access or huge trees; ``ValueError`` when malformed."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise ValueError("not well-formed XML") from exc


class SoapFault(Exception):
    """A SOAP 1.2 fault: ``code`` is ``Sender``, ``Receiver``, ``VersionMismatch`` or ``MustUnderstand``.

    ``subcode`` is the DMP-style code (``DMPInvalidCertificate``...); ``reason`` names what is wrong
    without quoting request values.
    """

    def __init__(self, code: str, subcode: str | None, reason: str) -> None:
        super().__init__(f"{code}/{subcode}: {reason}")
        self.code = code
        self.subcode = subcode
        self.reason = reason


def sender(subcode: str, reason: str) -> SoapFault:
    return SoapFault("Sender", subcode, reason)


@dataclass(frozen=True)
class RegistryError:
    """One ``RegistryError`` of a ``RegistryResponse`` (IHE or DMP ``errorCode``)."""

    code: str
    context: str
    location: str = ""
    severity: str = "Error"


class RegistryFailure(Exception):
    """The request is refused with a ``RegistryResponse`` ``Failure`` carrying these errors."""

    def __init__(self, errors: list[RegistryError]) -> None:
        super().__init__("; ".join(f"{e.code}: {e.context}" for e in errors))
        self.errors = errors


def failure(code: str, context: str, location: str = "") -> RegistryFailure:
    return RegistryFailure([RegistryError(code, context, location)])
