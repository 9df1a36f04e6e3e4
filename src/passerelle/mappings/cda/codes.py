"""CDA header codes → XDS metadata codes: the document type list, the class derived from the type,
the format from the body or the model template (docs/interop-reference.md, "XDS metadata").

The tables are package data (``mappings/codes/cda_codes.json``), read once.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from passerelle.errors import MappingError
from passerelle.mappings.document import CLASS_CODE_SYSTEM, FORMAT_IHE_SYSTEM, Code

#: TRE_A06-FormatCodeComplementaire: the code system of the urn:asip:* / urn:ans:* format codes.
FORMAT_ANS_SYSTEM = "1.2.250.1.213.1.1.4.2.282"


@cache
def _tables() -> dict[str, Any]:
    text = resources.files("passerelle.mappings.codes").joinpath("cda_codes.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def document_type(code: str, system: str = "") -> Code:
    """The type code as a :class:`Code` if it is in the DMP type list; else :class:`MappingError`."""
    entry = _tables()["types"].get(code)
    if entry is None or (system and system != entry["system"]):
        raise MappingError(f"document type {code!r} is not in the DMP type list (JDV_J07)", reason="type")
    return Code(code=code, system=entry["system"], display=entry["display"])


def class_for_type(type_code: str) -> Code:
    """classCode derived from typeCode (ASS_X04 reading, see cda_codes.json ``_source``)."""
    tables = _tables()
    entry = tables["types"].get(type_code)
    if entry is None:
        raise MappingError(f"no class for document type {type_code!r}", reason="type")
    klass = entry["class"]
    return Code(code=klass, system=CLASS_CODE_SYSTEM, display=tables["classes"][klass])


def format_code(value: str) -> Code:
    system = FORMAT_IHE_SYSTEM if value.startswith("urn:ihe:") else FORMAT_ANS_SYSTEM
    return Code(code=value, system=system)


def format_for(template_ids: list[str], non_xml_media_type: str | None) -> Code:
    """formatCode: nonXMLBody media type (XDS-SD, ASS_A12), else the model templateId (ASS_A11)."""
    tables = _tables()
    if non_xml_media_type is not None:
        fmt = tables["formats_by_media_type"].get(non_xml_media_type.lower())
        if fmt is None:
            raise MappingError("nonXMLBody media type is not accepted by the DMP", reason="format")
        return format_code(fmt)
    fmt = next((f for tid in template_ids if (f := tables["formats_by_template"].get(tid)) is not None), None)
    return format_code(fmt or tables["default_format"])
