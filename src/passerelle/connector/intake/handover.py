"""The HL7v2 intake's decoded messages handed to the dispatch worker of the same process (ADR 0026).

Intake decodes and classifies every ORU/MDM message before its ACK; the worker used to decode and
classify the same bytes again when it mapped the row. :class:`DecodedMessages` keeps, for a bounded
number of rows just accepted, what intake read (the message, its header and its classification),
under the row id the journal returned. The worker takes an entry once (it is dropped when taken) and
only when it is the row's own reading: the same bytes (compared in full), read with the same sender
options, classified for the same environment. Anything else (another process wrote the row, a restart,
an entry evicted, a payload that differs) is a miss and the row is decoded from the journal, as
before.

Bounded twice: at most ``capacity`` entries and ``max_bytes`` of payloads, the oldest dropped first
(rows another instance dispatches, or that were never mapped, leave this way).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from passerelle.mappings.hl7v2.decode import Message
from passerelle.mappings.hl7v2.header import Header
from passerelle.mappings.hl7v2.volet import Classified

#: Journal kinds whose rows the worker maps from a decoded message and its classification.
HANDED_KINDS = frozenset({"oru", "mdm"})


@dataclass(frozen=True, slots=True)
class Decoded:
    """What intake read from one accepted message: the options it decoded it with, the message (its
    ``raw`` is the payload read), the header and the classification (for ``test_environment``)."""

    options: object  # the sender's decoding options (``hl7.SenderOptions``), compared by equality
    test_environment: bool
    message: Message
    header: Header
    classified: Classified

    def matches(self, raw: bytes, options: object, test_environment: bool) -> bool:
        """Whether this reading is that of ``raw`` with ``options`` in ``test_environment``."""
        return self.message.raw == raw and self.options == options and self.test_environment == test_environment


class DecodedMessages:
    """Row id → :class:`Decoded`, bounded (see module docstring); ``hits`` and ``misses`` count the takes."""

    def __init__(self, capacity: int = 1024, max_bytes: int = 16 * 1024 * 1024) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._entries: OrderedDict[int, Decoded] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, row_id: int, decoded: Decoded) -> None:
        """Keep ``decoded`` for ``row_id`` (replacing an older entry of that id), dropping the oldest
        entries beyond the bounds; a payload larger than ``max_bytes`` is not kept."""
        size = len(decoded.message.raw)
        if size > self._max_bytes:
            return
        with self._lock:
            self._drop(row_id)
            self._entries[row_id] = decoded
            self._bytes += size
            while len(self._entries) > self._capacity or self._bytes > self._max_bytes:
                self._drop(next(iter(self._entries)))

    def take(self, row_id: int, raw: bytes, options: object, test_environment: bool) -> Decoded | None:
        """The entry of ``row_id`` if it is the reading of ``raw`` with ``options`` (see
        :meth:`Decoded.matches`), else None; the entry is dropped either way."""
        with self._lock:
            decoded = self._drop(row_id)
        if decoded is not None and decoded.matches(raw, options, test_environment):
            self.hits += 1
            return decoded
        self.misses += 1
        return None

    def _drop(self, row_id: int) -> Decoded | None:
        decoded = self._entries.pop(row_id, None)
        if decoded is not None:
            self._bytes -= len(decoded.message.raw)
        return decoded
