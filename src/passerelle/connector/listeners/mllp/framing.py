"""MLLP framing over an :class:`asyncio.StreamReader`, kept apart from the socket loop.

A frame is ``VT payload FS CR`` (VT = 0x0B, FS = 0x1C, CR = 0x0D). :class:`MllpFramer` reads the
stream in chunks and yields one event per frame, in stream order:

* :class:`Frame` — a complete payload (without VT / FS CR), never larger than ``max_frame_bytes``;
* :class:`TooLarge` — a frame whose payload exceeded ``max_frame_bytes``; the bytes past the limit
  were read and thrown away up to the end block, only the MSH prefix (the first segment, at most
  ``msh_capture_bytes``) was kept so that the intake can reject it with an AR when MSH is readable;
* :class:`FrameRejected` — a broken frame that was discarded (``reason`` is one of
  :data:`REJECT_REASONS`); nothing of it must be acknowledged.

Rules (docs/mllp.md, "Framing rules" and "Why these rules"), decided here once:

* bytes outside a frame (before a VT) are junk: discarded and counted in :attr:`MllpFramer.junk_bytes`;
  a single LF right after ``FS CR`` is part of the trailer (``FS CR LF``) and is not junk. More than
  ``max_junk_bytes`` of junk since the last good frame raises :class:`JunkLimitError`;
* ``FS CR`` ends a frame. ``FS`` followed by another byte ends nothing: the frame is rejected
  (``bad_end``) and the framer resynchronises on the next VT. With ``accept_fs_without_cr`` (off by
  default) a lone ``FS`` ends the frame, and a CR (and LF) after it is skipped when present;
* a VT inside a frame restarts the frame there: the bytes before it are rejected (``nested_start``).
  ER7 never contains VT, so an inner VT means the sender gave up a frame and started a new one (this
  also covers ``VT payload CR`` without ``FS`` followed by a good frame);
* the stream ending inside a frame rejects it (``partial``) and ends the stream: a partial frame is
  never delivered;
* the per-frame deadline (VT to ``FS CR``) and the idle deadline (no frame started) are enforced
  around each read and raise :class:`FrameTimeoutError` / :class:`IdleTimeoutError`; while ``hold()``
  says so (a frame still waits for its reply), the idle deadline is pushed back instead.

Memory per connection is bounded by ``read_chunk_bytes`` + ``max_frame_bytes``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from passerelle.errors import FramingError
from passerelle.mappings.hl7v2.mllp import CR, FS, VT

LF: Final = 0x0A

#: Reasons a frame is rejected by the framer (low-cardinality metric label values).
REJECT_REASONS: Final = ("bad_end", "nested_start", "partial")


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes


@dataclass(frozen=True, slots=True)
class TooLarge:
    """A frame over the size limit. ``size`` is the full payload size seen; ``msh_prefix`` its first
    segment (at most ``msh_capture_bytes``), empty if the payload did not start with ``MSH``."""

    size: int
    msh_prefix: bytes


@dataclass(frozen=True, slots=True)
class FrameRejected:
    reason: str
    size: int


Event = Frame | TooLarge | FrameRejected


class JunkLimitError(FramingError):
    """Too many bytes outside any frame: the peer does not speak MLLP."""

    reason = "junk_limit"


class FrameTimeoutError(FramingError):
    """A frame was started but not finished before the per-frame deadline (slowloris)."""

    reason = "frame_timeout"


class IdleTimeoutError(FramingError):
    """No frame started within the idle timeout."""

    reason = "idle_timeout"


@dataclass(frozen=True, slots=True)
class FramingLimits:
    max_frame_bytes: int = 16 * 1024 * 1024
    max_junk_bytes: int = 64 * 1024
    accept_fs_without_cr: bool = False
    read_chunk_bytes: int = 65536
    msh_capture_bytes: int = 4096
    #: Seconds from VT to the end block; ``None`` = no deadline.
    frame_timeout: float | None = None
    #: Seconds without a frame starting; ``None`` = no deadline.
    idle_timeout: float | None = None


_IDLE, _IN_FRAME, _AFTER_FS = range(3)


class MllpFramer:
    """Turns a byte stream into MLLP frame events. See the module docstring for the rules.

    :meth:`next_event` returns the next event, or ``None`` at a clean end of stream. It raises only
    :class:`passerelle.errors.FramingError` subclasses (plus whatever the reader itself raises on a
    broken connection, e.g. :class:`ConnectionError`).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        limits: FramingLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_junk: Callable[[int], None] | None = None,
        hold: Callable[[], bool] | None = None,
    ) -> None:
        self._on_junk = on_junk
        self._hold = hold
        self._reader = reader
        self._limits = limits or FramingLimits()
        self._clock = clock
        self._buf = bytearray()
        self._pos = 0
        self._state = _IDLE
        self._parts: list[bytes] = []
        self._size = 0  # payload bytes seen in the current frame (including discarded ones)
        self._prefix = b""  # MSH capture once the frame went over the limit
        self._oversized = False
        self._skip = b""  # trailer bytes tolerated after an end block (LF after FS CR; CR LF after a lone FS)
        self._eof = False
        self._pending: deque[Event] = deque()
        self._frame_deadline = 0.0
        self._idle_deadline = self._new_idle_deadline()
        self._junk_since_frame = 0
        #: Total junk bytes discarded on this stream (monotonic counter).
        self.junk_bytes = 0

    @property
    def in_frame(self) -> bool:
        """True while a frame has been started and not finished."""
        return self._state != _IDLE

    def touch(self) -> None:
        """Restart the idle deadline (the server calls it after writing replies)."""
        self._idle_deadline = self._new_idle_deadline()

    def _new_idle_deadline(self) -> float:
        t = self._limits.idle_timeout
        return self._clock() + t if t is not None else 0.0

    async def next_event(self) -> Event | None:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._pos < len(self._buf):
                self._scan()
                continue
            if self._eof:
                return self._at_eof()
            await self._fill()

    # --- reading ---------------------------------------------------------------------------------

    async def _fill(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        timeout = self._remaining()
        try:
            if timeout is None:
                chunk = await self._reader.read(self._limits.read_chunk_bytes)
            else:
                async with asyncio.timeout(timeout):
                    chunk = await self._reader.read(self._limits.read_chunk_bytes)
        except TimeoutError:
            # The read was cancelled before taking any byte: waiting again loses nothing. It is the
            # thing to do while a frame waits for its reply, and when the deadline moved meanwhile
            # (``touch()`` after a reply, while this read's timeout was already running).
            if self._state == _IDLE and self._hold is not None and self._hold():
                self.touch()
                return
            if self._state == _IDLE and self._clock() < self._idle_deadline:
                return
            if self._state == _IDLE:
                raise IdleTimeoutError("no frame started before the idle timeout") from None
            raise FrameTimeoutError(f"frame not finished before the deadline ({self._size} bytes received)") from None
        if not chunk:
            self._eof = True
        else:
            self._buf += chunk

    def _remaining(self) -> float | None:
        if self._state == _IDLE:
            if self._limits.idle_timeout is None:
                return None
            return max(0.0, self._idle_deadline - self._clock())
        if self._limits.frame_timeout is None:
            return None
        return max(0.0, self._frame_deadline - self._clock())

    def _at_eof(self) -> Event | None:
        if self._state == _IDLE:
            return None
        size = self._size
        self._reset_frame()
        self._state = _IDLE
        return FrameRejected("partial", size)

    # --- scanning --------------------------------------------------------------------------------

    def _scan(self) -> None:
        """Consume buffered bytes from ``_pos``; queue events in ``_pending``."""
        buf = self._buf
        end = len(buf)
        while self._pos < end and not self._pending:
            state = self._state
            if state == _IDLE:
                self._scan_idle(buf, end)
            elif state == _IN_FRAME:
                self._scan_frame(buf, end)
            else:  # byte after FS
                byte = buf[self._pos]
                if byte == CR:
                    self._pos += 1
                    self._state = _IDLE
                    self._skip = b"\n"
                    self._pending.append(self._finish())
                else:
                    # FS + other byte: reject and resync; do not consume it (it may be a VT).
                    size = self._size
                    self._reset_frame()
                    self._state = _IDLE
                    self._pending.append(FrameRejected("bad_end", size))

    def _scan_idle(self, buf: bytearray, end: int) -> None:
        pos = self._pos
        while self._skip and pos < end:
            if buf[pos] != self._skip[0]:
                self._skip = b""
                break
            pos += 1
            self._skip = self._skip[1:]
        self._pos = pos
        if pos >= end:
            return
        i = buf.find(VT, pos)
        stop = end if i < 0 else i
        self._count_junk(stop - pos)
        if i < 0:
            self._pos = end
            return
        self._pos = i + 1
        self._start_frame()

    def _count_junk(self, n: int) -> None:
        if n <= 0:
            return
        self.junk_bytes += n
        if self._on_junk is not None:
            self._on_junk(n)
        self._junk_since_frame += n
        if self._junk_since_frame > self._limits.max_junk_bytes:
            raise JunkLimitError(f"{self._junk_since_frame} bytes outside any MLLP frame")

    def _start_frame(self) -> None:
        self._skip = b""
        self._state = _IN_FRAME
        self._reset_frame()
        t = self._limits.frame_timeout
        self._frame_deadline = self._clock() + t if t is not None else 0.0

    def _scan_frame(self, buf: bytearray, end: int) -> None:
        pos = self._pos
        j = buf.find(FS, pos)
        stop = end if j < 0 else j
        v = buf.find(VT, pos, stop)
        if v >= 0:
            self._take(buf, pos, v)
            size = self._size
            self._pos = v + 1
            self._pending.append(FrameRejected("nested_start", size))
            self._start_frame()
            return
        self._take(buf, pos, stop)
        if j < 0:
            self._pos = end
        else:
            self._pos = j + 1
            if self._limits.accept_fs_without_cr:
                # A lone FS ends the frame now: a sender that omits CR waits for its ACK.
                self._state = _IDLE
                self._skip = b"\r\n"
                self._pending.append(self._finish())
            else:
                self._state = _AFTER_FS

    def _take(self, buf: bytearray, start: int, stop: int) -> None:
        n = stop - start
        if n <= 0:
            return
        limit = self._limits.max_frame_bytes
        if not self._oversized and self._size + n > limit:
            self._oversized = True
            cap = self._limits.msh_capture_bytes
            kept = bytearray()
            for part in self._parts:
                kept += part[: cap - len(kept)]
            kept += buf[start : start + max(0, min(n, cap - len(kept)))]
            self._prefix = _msh_prefix(bytes(kept), cap)
            self._parts = []
        elif not self._oversized:
            self._parts.append(bytes(buf[start:stop]))
        self._size += n

    def _finish(self) -> Event:
        size = self._size
        self._junk_since_frame = 0
        self._idle_deadline = self._new_idle_deadline()
        if self._oversized:
            prefix = self._prefix
            self._reset_frame()
            return TooLarge(size, prefix)
        payload = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._reset_frame()
        return Frame(payload)

    def _reset_frame(self) -> None:
        self._parts = []
        self._size = 0
        self._prefix = b""
        self._oversized = False


def _msh_prefix(data: bytes, cap: int) -> bytes:
    """The first segment of ``data`` if it is an MSH segment (cut at CR or LF), else ``b""``."""
    if not data.startswith(b"MSH"):
        return b""
    data = data[:cap]
    for sep in (b"\r", b"\n"):
        k = data.find(sep)
        if k >= 0:
            data = data[:k]
    return data
