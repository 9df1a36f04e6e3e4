"""ebRIM 3.0 metadata: XML Schema validation and the registry objects as plain values.

The schemas are the package copies in ``schemas/`` (see its README). With ``lenient`` the children of
each registry object are put back in schema order before validation (real senders put a ``Slot``
after a ``Classification``); nothing else is relaxed.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

from lxml import etree

from passerelle.sandbox.dmp.common import RIM, XOP, failure, q

METADATA_ERROR = "XDSRegistryMetadataError"

SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
DOCUMENT_ENTRY_TYPE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_PATIENT = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_FACILITY = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_EVENT = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
DE_PATIENT = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"

_ORDER = {
    name: rank
    for rank, name in enumerate(
        ["Slot", "Name", "Description", "VersionInfo", "Classification", "ExternalIdentifier", "ContentVersionInfo"]
    )
}


@cache
def schema() -> etree.XMLSchema:
    """The XDS.b schema (imports lcm, query, rs, rim): validates any of their global elements."""
    path = files("passerelle.sandbox.dmp").joinpath("schemas/XDS.b_DocumentRepository.xsd")
    return etree.XMLSchema(etree.parse(str(path)))


def validate(element: etree._Element, documents: dict[etree._Element, bytes], *, lenient: bool) -> None:
    """Validate a copy of ``element`` with each ``xop:Include`` replaced by its part in base64."""
    doc = copy.deepcopy(element)
    originals = {id(el): data for el, data in documents.items()}
    for original, copied in list(zip(element.iter(), doc.iter(), strict=True)):
        if id(original) in originals:
            for include in copied.findall(q(XOP, "Include")):
                copied.remove(include)
            copied.text = base64.b64encode(originals[id(original)]).decode("ascii")
    if lenient:
        _schema_order(doc)
    checker = schema()
    if not checker.validate(doc):
        first = checker.error_log.last_error  # type: ignore[attr-defined]
        raise failure(METADATA_ERROR, f"XML Schema: line {first.line}: {first.type_name}")


def _schema_order(root: etree._Element) -> None:
    for element in root.iter(q(RIM, "ExtrinsicObject"), q(RIM, "RegistryPackage"), q(RIM, "Classification")):
        children = list(element)
        ranked = sorted(children, key=lambda c: _ORDER.get(etree.QName(c).localname, len(_ORDER)))
        for child in children:
            element.remove(child)
        element.extend(ranked)


@dataclass(frozen=True)
class Code:
    scheme: str
    code: str
    coding_scheme: str


@dataclass
class RegistryObject:
    """An ExtrinsicObject or RegistryPackage: slots, classifications, external identifiers."""

    id: str
    tag: str
    element: etree._Element
    attributes: dict[str, str]
    slots: dict[str, list[str]] = field(default_factory=dict)
    codes: list[Code] = field(default_factory=list)
    authors: list[dict[str, list[str]]] = field(default_factory=list)
    external: dict[str, str] = field(default_factory=dict)
    node: str | None = None

    def slot(self, name: str) -> str | None:
        values = self.slots.get(name) or []
        return values[0] if values else None

    def codes_of(self, scheme: str) -> list[Code]:
        return [c for c in self.codes if c.scheme == scheme]

    @property
    def title(self) -> str:
        found = self.element.find(f"{q(RIM, 'Name')}/{q(RIM, 'LocalizedString')}")
        return str(found.get("value") or "") if found is not None else ""


@dataclass
class Association:
    id: str
    type: str
    source: str
    target: str
    slots: dict[str, list[str]]


@dataclass
class Metadata:
    packages: list[RegistryObject]
    entries: list[RegistryObject]
    associations: list[Association]
    others: list[str]


def _slots(element: etree._Element) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for slot in element.findall(q(RIM, "Slot")):
        values = [(v.text or "").strip() for v in slot.iter(q(RIM, "Value"))]
        result.setdefault(str(slot.get("name") or ""), []).extend(values)
    return result


def _object(element: etree._Element) -> RegistryObject:
    obj = RegistryObject(
        id=str(element.get("id") or ""),
        tag=etree.QName(element).localname,
        element=element,
        attributes={str(k): str(v) for k, v in element.attrib.items()},
        slots=_slots(element),
    )
    for classification in element.findall(q(RIM, "Classification")):
        scheme = str(classification.get("classificationScheme") or "")
        if classification.get("classificationNode"):
            obj.node = str(classification.get("classificationNode"))
        elif scheme in (SS_AUTHOR, DE_AUTHOR):
            obj.authors.append(_slots(classification))
        else:
            coding = _slots(classification).get("codingScheme") or [""]
            obj.codes.append(Code(scheme, str(classification.get("nodeRepresentation") or ""), coding[0]))
    for ident in element.findall(q(RIM, "ExternalIdentifier")):
        obj.external[str(ident.get("identificationScheme") or "")] = str(ident.get("value") or "")
    return obj


def read_objects(registry_object_list: etree._Element | None) -> Metadata:
    """The objects of a ``RegistryObjectList`` (classifications given at top level are attached)."""
    if registry_object_list is None:
        raise failure(METADATA_ERROR, "SubmitObjectsRequest has no RegistryObjectList")
    metadata = Metadata([], [], [], [])
    for element in registry_object_list.iterchildren(etree.Element):
        local = etree.QName(element).localname
        if local == "RegistryPackage":
            metadata.packages.append(_object(element))
        elif local == "ExtrinsicObject":
            metadata.entries.append(_object(element))
        elif local == "Association":
            metadata.associations.append(
                Association(
                    id=str(element.get("id") or ""),
                    type=str(element.get("associationType") or ""),
                    source=str(element.get("sourceObject") or ""),
                    target=str(element.get("targetObject") or ""),
                    slots=_slots(element),
                )
            )
        elif local == "Classification" and element.get("classificationNode") == SUBMISSION_SET_NODE:
            target = element.get("classifiedObject")
            for package in metadata.packages:
                if package.id == target:
                    package.node = SUBMISSION_SET_NODE
        else:
            metadata.others.append(local)
    return metadata
