"""Reading the registry's answers: ``rs:RegistryResponse`` (ITI-41, ITI-57) and
``query:AdhocQueryResponse`` (ITI-18). Input: the SOAP body's first child, already parsed with a
hardened parser; output: plain values. Unknown content is reported, never guessed."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from passerelle.mappings.xds import ns
from passerelle.mappings.xds.rim import q


@dataclass(frozen=True)
class RegistryError:
    code: str
    context: str = ""
    location: str = ""
    severity: str = "Error"  # Error | Warning

    @property
    def is_error(self) -> bool:
        return self.severity != "Warning"


@dataclass(frozen=True)
class RegistryResult:
    """``status`` is ``Success`` / ``PartialSuccess`` / ``Failure`` (the URN's last segment)."""

    status: str
    errors: tuple[RegistryError, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "Success"

    def summary(self) -> str:
        """PHI-free one-liner for the journal: the status and every error code with its severity."""
        codes = ", ".join(f"{e.code}{'' if e.is_error else ' (warning)'}" for e in self.errors)
        return f"{self.status}: {codes}" if codes else self.status


@dataclass(frozen=True)
class Entry:
    """One DocumentEntry of a LeafClass answer (the registry's view of it)."""

    entry_uuid: str
    unique_id: str
    status: str
    hash: str = ""
    size: int | None = None
    element: etree._Element | None = None


class MalformedResponseError(ValueError):
    """The body is not the registry answer the protocol promises."""


_STATUS = {ns.SUCCESS: "Success", ns.FAILURE: "Failure", ns.PARTIAL_SUCCESS: "PartialSuccess"}


def parse_registry_response(element: etree._Element) -> RegistryResult:
    """``rs:RegistryResponse`` (or the response part of an ``AdhocQueryResponse``)."""
    if element.tag not in (f"{{{ns.RS}}}RegistryResponse", f"{{{ns.QUERY}}}AdhocQueryResponse"):
        raise MalformedResponseError(f"unexpected answer element {element.tag.rsplit('}', 1)[-1]}")
    status = _STATUS.get(element.get("status", ""))
    if status is None:
        raise MalformedResponseError("unknown RegistryResponse status")
    errors = tuple(
        RegistryError(
            code=e.get("errorCode", ""),
            context=(e.get("codeContext") or "")[:200],
            location=(e.get("location") or "")[:200],
            severity="Warning" if e.get("severity") == ns.SEVERITY_WARNING else "Error",
        )
        for e in element.iter(f"{{{ns.RS}}}RegistryError")
    )
    return RegistryResult(status, errors)


def parse_query_response(element: etree._Element) -> tuple[RegistryResult, tuple[Entry, ...]]:
    """``query:AdhocQueryResponse``: the result and the DocumentEntries (LeafClass) or ObjectRefs."""
    result = parse_registry_response(element)
    entries: list[Entry] = []
    objects = element.find(q("RegistryObjectList"))
    if objects is not None:
        for extrinsic in objects.iter(q("ExtrinsicObject")):
            entries.append(_entry(extrinsic))
        for ref in objects.iter(q("ObjectRef")):
            entries.append(Entry(entry_uuid=ref.get("id", ""), unique_id="", status=""))
    return result, tuple(entries)


def _entry(extrinsic: etree._Element) -> Entry:
    unique_id = ""
    for ident in extrinsic.iter(q("ExternalIdentifier")):
        if ident.get("identificationScheme") == ns.DE_UNIQUE_ID:
            unique_id = ident.get("value", "")
    slots = {s.get("name"): [v.text or "" for v in s.iter(q("Value"))] for s in extrinsic.findall(q("Slot"))}
    size = (slots.get("size") or [""])[0]
    return Entry(
        entry_uuid=extrinsic.get("id", ""),
        unique_id=unique_id,
        status=extrinsic.get("status", ""),
        hash=(slots.get("hash") or [""])[0].lower(),
        size=int(size) if size.isdigit() else None,
        element=extrinsic,
    )
