"""The documents a journal row makes, for the replay preview, the console's downloads and
``passerelle messages show --document``: the gateway's own row mapper, run without side effects.

The journal keeps the message, not the documents sent: a document is made again from the message by
the mapping of today, over a read-only view of the reference tables (:class:`ReadOnlyReferences`), so
looking at a message never changes the consent registry or a document series. A row's own series entry
is hidden, so a lab order or a study comes out with the version it had when the row was first mapped
(unless a later row replaced the entry that came before it: the journal keeps only the latest).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from passerelle.connector.admin.browser import Preview
from passerelle.mappings.document import Document
from passerelle.queue.model import RegistryEntry, Row, SeriesEntry
from passerelle.queue.ports import ReferenceStore

#: The documents of a row, or (a row that makes none, e.g. a consent feed) what handling it does.
Rendered = list[Document] | str
#: Makes the documents of one row (built by the composition root around the row mapper).
Renderer = Callable[[Row], Awaitable[Rendered]]


class ReadOnlyReferences:
    """A :class:`~passerelle.queue.ports.ReferenceStore` whose writes are dropped; the series entry
    written by row ``row_id`` itself is not seen."""

    def __init__(self, store: ReferenceStore, row_id: int) -> None:
        self.store = store
        self.row_id = row_id

    async def registry_get(self, ins: str) -> RegistryEntry | None:
        return await self.store.registry_get(ins)

    async def registry_put(self, entry: RegistryEntry) -> None:
        return None

    async def series_get(self, series_key: str) -> SeriesEntry | None:
        entry = await self.store.series_get(series_key)
        return None if entry is not None and entry.row_id == self.row_id else entry

    async def series_put(self, entry: SeriesEntry, now: datetime) -> None:
        return None

    async def patient_map_get(self, sender: str, local_id: str) -> tuple[str, str] | None:
        return await self.store.patient_map_get(sender, local_id)

    async def patient_map_put(self, sender: str, local_id: str, ins: str, ins_oid: str) -> None:
        return None


def as_rendered(mapped: object) -> Rendered:
    """The row mapper's answer (a document, several, or a ``Handled``) as :data:`Rendered`."""
    if isinstance(mapped, Document):
        return [mapped]
    if isinstance(mapped, list) and all(isinstance(d, Document) for d in mapped):
        return list(mapped)
    return str(getattr(mapped, "detail", ""))


def preview_of(render: Renderer) -> Preview:
    """The replay preview: the metadata of what a replay would send (never the content)."""

    async def preview(row: Row) -> dict[str, Any]:
        rendered = await render(row)
        if isinstance(rendered, str):
            return {"handled": rendered}
        return {"documents": [d.metadata() for d in rendered]}

    return preview


def document_file(doc: Document) -> tuple[str, str]:
    """A download's file name and media type for a document's content."""
    media = doc.mime_type or "application/octet-stream"
    extension = {"text/xml": "xml", "application/xml": "xml", "application/dicom": "dcm", "application/pdf": "pdf"}
    return f"document-{doc.unique_id}.{extension.get(media, 'bin')}", media
