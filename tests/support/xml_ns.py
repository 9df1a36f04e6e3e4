"""XML namespace URIs the tests read and write (SOAP, WS-Addressing/Security, SAML, XML-DSig, XAdES,
ebRIM/XDS.b, MTOM, HL7 v3/CDA), written here once from the standards, not taken from the gateway."""

from __future__ import annotations

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.1.1#"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
XOP = "http://www.w3.org/2004/08/xop/include"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
HL7 = "urn:hl7-org:v3"
#: IHE laboratory extensions inside a CDA (lab:statusCode...)
LAB = "urn:oid:1.3.6.1.4.1.19376.1.3.2"

#: prefixes for XPath over a CDA document
CDA_NS = {"cda": HL7, "lab": LAB}
