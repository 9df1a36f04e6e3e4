"""The value sets the sandbox knows (DMP/CI-SIS codes, summed up with their sources in docs/sandbox.md).

Each XDS classification scheme maps to the coding schemes it accepts and, per coding scheme, the
codes (or ``None`` for a pattern checked in :func:`known_code`). A code outside these is refused the
way the platform refuses a code outside its value sets.
"""

from __future__ import annotations

import re

from passerelle.sandbox.dmp import ebrim
from passerelle.sandbox.store import VISIBILITY_CODES, VISIBILITY_SYSTEM_OID

#: JDV_J07 XdsTypeCode CI-SIS (rev. 2024-09-27): LOINC codes, then the ANS local codes (TRE_A05)
TYPE_LOINC = frozenset(
    [
        "101881-1",
        "11369-6",
        "11488-4",
        "11490-0",
        "11502-2",
        "11505-5",
        "11506-3",
        "15507-7",
        "15508-5",
        "18748-4",
        "18761-7",
        "18776-5",
        "28617-9",
        "28653-4",
        "29274-8",
        "34112-3",
        "34120-6",
        "34133-9",
        "34749-2",
        "34794-8",
        "34842-5",
        "34874-8",
        "34875-5",
        "47420-5",
        "51851-4",
        "51969-4",
        "52040-3",
        "55115-0",
        "56445-0",
        "56446-8",
        "57055-6",
        "57057-2",
        "57075-4",
        "57828-6",
        "57832-8",
        "57833-6",
        "59283-2",
        "59284-0",
        "60280-5",
        "60568-3",
        "60591-5",
        "60593-1",
        "61357-0",
        "67851-6",
        "68599-0",
        "68817-6",
        "70004-7",
        "74207-2",
        "74465-6",
        "75468-9",
        "75482-0",
        "75492-9",
        "75496-0",
        "77436-4",
        "77604-7",
        "78341-5",
        "78489-2",
        "78513-9",
        "78601-2",
        "80565-5",
        "80771-9",
        "80788-3",
        "80820-4",
        "83836-7",
        "83869-8",
        "83901-9",
        "83981-1",
        "85208-7",
        "86531-1",
        "87273-9",
        "88348-8",
        "89233-1",
        "89235-6",
        "89601-9",
        "93024-8",
        "96173-0",
        "96349-6",
        "96874-3",
    ]
)

TYPE_LOCAL = frozenset(
    [
        "ATTEST-ASS-COMPL",
        "ATTEST-DROITS-AM",
        "ATTEST-HEBGT",
        "ATTEST-RESID",
        "AUTORIS-SOINS",
        "BIL_AUTO",
        "CERT_DECL",
        "DISP_AUT",
        "DOCPAT01",
        "DOCPAT02",
        "DOCPAT03",
        "DOCPAT04",
        "DOCPAT05",
        "DOCPAT06",
        "DOCPAT07",
        "DOCPAT08",
        "DOCPAT09",
        "EXPORT_DUI",
        "EXPPAT_1",
        "EXPPAT_2",
        "EXPPAT_3",
        "FEUILLE-DE-STYLE",
        "FICHE-CONTACTS",
        "IMG-KOS",
        "PIECE-IDENTITE",
        "PRESC-AAT",
        "PRESC-BIO",
        "PRESC-INF",
        "PRESC-KINE",
        "PRESC-ORTHOPHO",
        "PRESC-ORTHOPTIE",
        "PRESC-PEDI",
        "PROT_ALD",
        "REMB",
        "SYNTH",
    ]
)

#: JDV_J57 ClassCode DMP (TRE_A03 codes) and the Digital Signature class
CLASS_CODES = frozenset({"10", "11", "31", "42", "43", "44", "45", "52", "60", "90", "95"})
#: JDV_J60 FormatCode DMP
FORMAT_IHE = frozenset(
    {
        "urn:ihe:iti:xds-sd:pdf:2008",
        "urn:ihe:iti:xds-sd:text:2008",
        "urn:ihe:iti-fr:xds-sd:jpeg:2010",
        "urn:ihe:iti-fr:xds-sd:rtf:2010",
        "urn:ihe:iti-fr:xds-sd:tiff:2010",
        "urn:ihe:lab:xd-lab:2008",
        "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013",
        "urn:ihe:palm:apsr:2016",
        "urn:ihe:pcc:ips:2020",
    }
)
FORMAT_ANS = frozenset(
    {
        "urn:ans:ci-sis:trod:2024",
        "urn:ans:ci-sis:img-da:2022",
        "urn:asipSante:modelesHorsProfils:2011",
        "urn:asip:ci-sis:ldl-ses:2017",
        "urn:asip:ci-sis:vsm:2012",
    }
)
#: JDV_J04 practice settings
PRACTICE = frozenset(
    {"AMBULATOIRE", "ETABLISSEMENT", "HAD", "SAD", "MAD", "PALLIATIF", "DEPISTAGE", "ESSMS", "AMO", "SAMU_SMUR"}
)
NON_PS = frozenset({"EXP_PATIENT", "SNR"})
#: JDV_J08 / J58 confidentiality codes (the DMP visibility codes are the store's VISIBILITY_CODES)
HL7_CONFIDENTIALITY = frozenset({"N", "R", "V"})
SIGNATURE_CLASS = "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1"
SIGNATURE_FORMATS = frozenset({"http://www.w3.org/2000/09/xmldsig#", "urn:ihe:iti:dsg:detached:2014"})

Allowed = dict[str, frozenset[str] | re.Pattern[str] | None]

#: classification scheme -> coding scheme -> codes (None: any code of that coding scheme)
VALUE_SETS: dict[str, Allowed] = {
    ebrim.DE_CLASS: {"1.2.250.1.213.1.1.4.1": CLASS_CODES, "URN": frozenset({SIGNATURE_CLASS})},
    ebrim.DE_TYPE: {
        "2.16.840.1.113883.6.1": TYPE_LOINC,
        "1.2.250.1.213.1.1.4.12": TYPE_LOCAL,
        "ASTM": frozenset({"E1762"}),
    },
    ebrim.DE_FORMAT: {
        "1.3.6.1.4.1.19376.1.2.3": FORMAT_IHE,
        "1.2.250.1.213.1.1.4.2.282": FORMAT_ANS,
        "1.2.840.10008.2.6.1": frozenset({"1.2.840.10008.5.1.4.1.1.88.59"}),
        "URN": SIGNATURE_FORMATS,
    },
    ebrim.DE_CONFIDENTIALITY: {
        "2.16.840.1.113883.5.25": HL7_CONFIDENTIALITY,
        VISIBILITY_SYSTEM_OID: VISIBILITY_CODES,
    },
    ebrim.DE_FACILITY: {"1.2.250.1.71.4.2.4": re.compile(r"^SA\d\d$"), "1.2.250.1.213.1.1.4.6": NON_PS},
    ebrim.DE_PRACTICE: {"1.2.250.1.213.1.1.4.9": PRACTICE, "1.2.250.1.213.1.1.4.6": NON_PS},
    # eventCodeList: acts, pathologies, modalities, regions: the coding scheme only is checked
    ebrim.DE_EVENT: {},
    # JDV_J59 content types are two-digit codes of the legacy 1.2.250.1.213.2.2 system
    ebrim.SS_CONTENT_TYPE: {"1.2.250.1.213.2.2": re.compile(r"^\d\d$")},
}
#: the XDS classification schemes a DocumentEntry must carry exactly once
REQUIRED_ONCE = (ebrim.DE_CLASS, ebrim.DE_TYPE, ebrim.DE_FORMAT, ebrim.DE_FACILITY, ebrim.DE_PRACTICE)


def known_code(code: ebrim.Code) -> bool:
    """Is ``code`` in the value set of its classification scheme (event codes: any non-empty code)?"""
    allowed = VALUE_SETS.get(code.scheme)
    if allowed is None:
        return True
    if not allowed:
        return bool(code.code and code.coding_scheme)
    if code.coding_scheme not in allowed:
        return False
    codes = allowed[code.coding_scheme]
    if codes is None:
        return bool(code.code)
    if isinstance(codes, re.Pattern):
        return bool(codes.match(code.code))
    return code.code in codes
