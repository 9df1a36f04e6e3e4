"""Reading a DICOM Structured Report for an IMG-CR-IMG document (docs/interop-reference.md, "Imaging").

A narrative SR (Basic Text, Enhanced or Comprehensive; TID 2000 style: headings holding TEXT items) is
read once into a :class:`Report`: its text sorted into the sections the volet has (clinical context,
request, procedure, findings, conclusion), the modalities and the anatomic region of the referenced
images, and the study evidence. What the volet requires and the SR cannot give is refused with a
:class:`MappingError` naming it (no conclusion, no modality, no anatomic region, unverified or partial
report, measurement-only TID 1500 report). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from passerelle.errors import MappingError
from passerelle.mappings.dicom.common import required_uid, text

MEASUREMENT_REPORT = ("126000", "DCM")

# Heading concept codes of SR reports (TID 2000 / CID 7001 and their LOINC equivalents) by target section.
_CONCLUSION = {("121076", "DCM"), ("121072", "DCM"), ("121073", "DCM"), ("19005-8", "LN"), ("121077", "DCM")}
_FINDINGS = {("121070", "DCM"), ("121071", "DCM"), ("59776-5", "LN"), ("18782-3", "LN"), ("121069", "DCM")}
_CLINICAL = {("121060", "DCM"), ("121062", "DCM"), ("121109", "DCM"), ("55752-0", "LN"), ("11329-0", "LN")}
_REQUEST = {("121062", "DCM"), ("121109", "DCM"), ("55115-0", "LN")}
_PROCEDURE = {("121064", "DCM"), ("121065", "DCM"), ("55111-9", "LN")}
_SITE_CONCEPTS = {("363698007", "SCT"), ("G-C0E3", "SRT"), ("123014", "DCM"), ("39111-0", "LN")}

#: Imaging modality of the referenced images, by SOP class (JDV_ModaliteAcquisition_CISIS codes).
MODALITY_BY_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.2": "MG",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "MG",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "MG",
    "1.2.840.10008.5.1.4.1.1.1.3": "IO",
    "1.2.840.10008.5.1.4.1.1.1.3.1": "IO",
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.2.1": "CT",
    "1.2.840.10008.5.1.4.1.1.2.2": "CT",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.4.1": "MR",
    "1.2.840.10008.5.1.4.1.1.4.4": "MR",
    "1.2.840.10008.5.1.4.1.1.3.1": "US",
    "1.2.840.10008.5.1.4.1.1.6.1": "US",
    "1.2.840.10008.5.1.4.1.1.6.2": "US",
    "1.2.840.10008.5.1.4.1.1.20": "NM",
    "1.2.840.10008.5.1.4.1.1.128": "PT",
    "1.2.840.10008.5.1.4.1.1.130": "PT",
    "1.2.840.10008.5.1.4.1.1.12.1": "XA",
    "1.2.840.10008.5.1.4.1.1.12.1.1": "XA",
    "1.2.840.10008.5.1.4.1.1.12.2": "RF",
    "1.2.840.10008.5.1.4.1.1.12.2.1": "RF",
}
MODALITY_DISPLAY = {
    "CR": "Radiographie assistée par ordinateur",
    "CT": "Tomodensitométrie",
    "DX": "Radiographie numérique",
    "IO": "Radiographie intrabuccale",
    "MG": "Mammographie",
    "MR": "Résonance magnétique",
    "NM": "Médecine nucléaire",
    "PT": "TEP : Tomographie par émission de positons",
    "RF": "Radio-fluoroscopie",
    "US": "Échographie",
    "XA": "Angiographie X-Ray",
}
#: Body Part Examined (PS3.16 CID 4031 defined terms) → SNOMED CT concept of JDV_LocalisationAnatomique_CISIS.
_REGION_BY_BODY_PART = {
    "HEAD": ("302548004", "tête entière"),
    "BRAIN": ("258335003", "encéphale entier"),
    "SKULL": ("731717004", "crâne entier"),
    "NECK": ("302550007", "cou entier"),
    "CSPINE": ("361684008", "colonne vertébrale cervicale entière"),
    "TSPINE": ("243931006", "colonne thoracique entière"),
    "LSPINE": ("361686005", "colonne vertébrale lombaire entière"),
    "SPINE": ("44300000", "colonne vertébrale entière"),
    "CHEST": ("302551006", "thorax entier"),
    "THORAX": ("302551006", "thorax entier"),
    "LUNG": ("181216001", "poumon entier"),
    "HEART": ("302509004", "cœur entier"),
    "BREAST": ("181131000", "sein entier"),
    "ABDOMEN": ("302553009", "abdomen entier"),
    "LIVER": ("181268008", "foie entier"),
    "KIDNEY": ("181414000", "rein entier"),
    "PELVIS": ("229765004", "pelvis entier"),
    "SHOULDER": ("361103004", "région entière de l'épaule"),
    "ELBOW": ("76248009", "région entière du coude"),
    "WRIST": ("361289009", "région entière du poignet"),
    "HAND": ("302539009", "main entière"),
    "HIP": ("302543008", "région entière de la hanche"),
    "KNEE": ("361291001", "région entière du genou"),
    "LEG": ("362793004", "partie inférieure entière de la jambe, du genou à la cheville"),
    "ANKLE": ("361292008", "région entière de la cheville"),
    "FOOT": ("302545001", "pied entier"),
    "WHOLEBODY": ("38266002", "corps entier"),
}
_REGION_CODES = {code: display for code, display in _REGION_BY_BODY_PART.values()}


@dataclass
class _Section:
    code: tuple[str, str]
    title: str
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class Series:
    uid: str
    instances: list[tuple[str, str]]  # (SOP class, SOP instance)

    @property
    def modality(self) -> str:
        """The modality of the series' first instance of a known SOP class ("" when none)."""
        return next((m for cls, _ in self.instances if (m := MODALITY_BY_SOP_CLASS.get(cls))), "")


@dataclass
class Report:
    """What an SR says, read once (:func:`read_report`), before the patient is resolved."""

    clinical: list[str]
    request: list[str]
    procedure: list[str]
    findings: list[str]
    conclusion: list[str]
    modalities: list[str]
    region: tuple[str, str]
    study_uid: str
    series: list[Series]


def _concept(item: Dataset) -> tuple[str, str, str]:
    names = item.get("ConceptNameCodeSequence") or ()
    if not names:
        return "", "", ""
    c = names[0]
    return text(c, "CodeValue"), text(c, "CodingSchemeDesignator"), text(c, "CodeMeaning")


def _item_text(item: Dataset) -> str:
    kind = text(item, "ValueType")
    if kind == "TEXT":
        return str(item.get("TextValue", "") or "").strip()
    if kind == "CODE":
        codes = item.get("ConceptCodeSequence") or ()
        label = _concept(item)[2]
        value = text(codes[0], "CodeMeaning") if codes else ""
        return f"{label} : {value}" if label and value else value
    return ""


def _walk(items: Iterable[Dataset], heading: tuple[str, str, str], out: list[_Section], depth: int = 0) -> None:
    if depth > 16:
        raise MappingError("SR content tree nested too deeply", location="0040,A730")
    for item in items:
        if text(item, "ValueType") == "CONTAINER":
            code = _concept(item)
            out.append(_Section((code[0], code[1]), code[2]))
            _walk(item.get("ContentSequence") or (), code, out, depth + 1)
            continue
        value = _item_text(item)
        if not value:
            continue
        if not out or out[-1].code != (heading[0], heading[1]):
            out.append(_Section((heading[0], heading[1]), heading[2]))
        out[-1].paragraphs.append(value)


def _coded_site(item: Dataset) -> tuple[str, str] | None:
    """A CODE item naming the target site with a SNOMED CT region the volet knows."""
    code, scheme, _ = _concept(item)
    if text(item, "ValueType") != "CODE" or (code, scheme) not in _SITE_CONCEPTS:
        return None
    for value in item.get("ConceptCodeSequence") or ():
        sct = text(value, "CodeValue")
        if text(value, "CodingSchemeDesignator") in ("SCT", "SRT") and sct in _REGION_CODES:
            return sct, _REGION_CODES[sct]
    return None


def _region(ds: Dataset) -> tuple[str, str] | None:
    stack = list(ds.get("ContentSequence") or ())
    while stack:
        item = stack.pop()
        stack.extend(item.get("ContentSequence") or ())
        found = _coded_site(item)
        if found is not None:
            return found
    return _REGION_BY_BODY_PART.get(text(ds, "BodyPartExamined").upper())


def _evidence(ds: Dataset) -> tuple[str, list[Series]]:
    studies: dict[str, list[Series]] = {}
    for seq in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in ds.get(seq) or ():
            uid = required_uid(study, "StudyInstanceUID")
            studies.setdefault(uid, []).extend(_series(study))
    own = required_uid(ds, "StudyInstanceUID")
    if len(studies) > 1:
        raise MappingError(
            f"SR evidence references {len(studies)} studies; one report, one study", location="0040,A375"
        )
    if studies and own not in studies:
        own = next(iter(studies))
    return own, studies.get(own, [])


def _series(study: Dataset) -> list[Series]:
    return [
        Series(
            required_uid(series, "SeriesInstanceUID"),
            [
                (text(r, "ReferencedSOPClassUID"), text(r, "ReferencedSOPInstanceUID"))
                for r in series.get("ReferencedSOPSequence") or ()
            ],
        )
        for series in study.get("ReferencedSeriesSequence") or ()
    ]


def report_series_key(ds: Dataset) -> str:
    """Journal series key of an SR report: one current report per study (``report:<Study UID>``)."""
    return f"report:{_evidence(ds)[0]}"


def _check_publishable(ds: Dataset) -> None:
    """Refuse what can never become an IMG-CR-IMG: not a container, measurements only, partial, unverified."""
    if text(ds, "ValueType") != "CONTAINER":
        raise MappingError("SR root is not a CONTAINER", location="0040,A040")
    code, scheme, _ = _concept(ds)
    templates = {text(t, "TemplateIdentifier") for t in ds.get("ContentTemplateSequence") or ()}
    if (code, scheme) == MEASUREMENT_REPORT or "1500" in templates:
        raise MappingError("measurement-only TID 1500 report cannot become IMG-CR-IMG", location="0040,A043")
    if text(ds, "CompletionFlag").upper() == "PARTIAL":
        raise MappingError("SR is partial (Completion Flag PARTIAL); only final reports are published")
    if text(ds, "VerificationFlag").upper() != "VERIFIED" or not ds.get("VerifyingObserverSequence"):
        raise MappingError("SR is not verified; IMG-CR-IMG needs the radiologist who validated it")


def _bucket(section: _Section) -> str:
    """The volet section a heading's text goes to (findings when the heading is none of the others)."""
    for key, codes in (
        ("conclusion", _CONCLUSION),
        ("request", _REQUEST),
        ("clinical", _CLINICAL),
        ("procedure", _PROCEDURE),
    ):
        if section.code in codes:
            return key
    return "findings"


def _sorted_text(ds: Dataset) -> dict[str, list[str]]:
    sections: list[_Section] = []
    _walk(ds.get("ContentSequence") or (), ("", "", ""), sections)
    if not any(s.paragraphs for s in sections):
        raise MappingError("SR has no text content", location="0040,A730")
    buckets: dict[str, list[str]] = {k: [] for k in ("clinical", "request", "procedure", "findings", "conclusion")}
    for s in sections:
        key = _bucket(s)
        # an unknown heading keeps its title in front of its text, so the reader knows what it was
        label = s.title if key == "findings" and s.code not in _FINDINGS and s.title else ""
        buckets[key].extend(f"{label} : {p}" if label else p for p in s.paragraphs)
    if not buckets["conclusion"]:
        raise MappingError("SR has no conclusion or impression section (IMG-CR-IMG requires one)")
    return buckets


def read_report(ds: Dataset) -> Report:
    """Read the narrative of an SR, or refuse it with the reason (no patient data in the message)."""
    _check_publishable(ds)
    buckets = _sorted_text(ds)
    study_uid, series = _evidence(ds)
    modalities = sorted({m for s in series for cls, _ in s.instances if (m := MODALITY_BY_SOP_CLASS.get(cls))})
    if not modalities:
        raise MappingError("SR references no image of a known modality (IMG-CR-IMG needs the modality)")
    region = _region(ds)
    if region is None:
        raise MappingError("SR has no coded anatomic region (IMG-CR-IMG needs a targetSiteCode)")
    return Report(
        clinical=buckets["clinical"],
        request=buckets["request"],
        procedure=buckets["procedure"],
        findings=buckets["findings"],
        conclusion=buckets["conclusion"],
        modalities=modalities,
        region=region,
        study_uid=study_uid,
        series=series,
    )
