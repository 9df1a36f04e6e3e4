"""The MLLP envelope, one home for every reader and writer of frames (docs/mllp.md).

A frame is ``VT payload FS CR`` (VT = 0x0B, FS = 0x1C, CR = 0x0D). The listener's framer
(``connector/listeners/mllp/framing.py``), the outbound client (``adapters/mllp_client.py``),
``passerelle send``, ``passerelle map``, the benchmarks and the test peers use these names.
"""

from __future__ import annotations

from typing import Final

VT: Final = 0x0B
FS: Final = 0x1C
CR: Final = 0x0D

START_BLOCK: Final = bytes([VT])
END_BLOCK: Final = bytes([FS, CR])


def frame(payload: bytes) -> bytes:
    """Wrap one payload in an MLLP envelope."""
    return START_BLOCK + payload + END_BLOCK


def reply_payload(data: bytes) -> bytes | None:
    """The payload of a reply read up to its end block (``data`` ends with FS CR): the bytes after its
    last VT, junk before that VT skipped; ``None`` when ``data`` has no VT."""
    start = data.rfind(START_BLOCK)
    if start < 0:
        return None
    return data[start + 1 : -len(END_BLOCK)]
