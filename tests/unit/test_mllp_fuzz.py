"""Property tests of the MLLP framer (docs/bad-input.md S11): whatever the bytes and however they are cut,
no exception outside the declared set, no hang, memory bounded, and well-formed frames come out intact."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passerelle.connector.listeners.mllp.framing import (
    Frame,
    FrameRejected,
    FramingLimits,
    JunkLimitError,
    MllpFramer,
    TooLarge,
)
from passerelle.errors import FramingError
from passerelle.mappings.hl7v2.mllp import frame

LIMITS = FramingLimits(max_frame_bytes=1024, max_junk_bytes=512, read_chunk_bytes=64, msh_capture_bytes=128)

# Bytes biased towards the control characters that matter.
special = st.sampled_from([b"\x0b", b"\x1c", b"\r", b"\n", b"\x00", b"\x1c\r", b"MSH|^~\\&|", b"\x0b\x1c\r"])
noise = st.binary(max_size=64)
streams = st.lists(st.one_of(special, noise), max_size=60).map(b"".join)
cuts = st.lists(st.integers(min_value=1, max_value=200), max_size=30)


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for n in sizes:
        if pos >= len(data):
            break
        out.append(data[pos : pos + n])
        pos += n
    out.append(data[pos:])
    return [c for c in out if c]


async def run(chunks: list[bytes], limits: FramingLimits = LIMITS) -> tuple[list[object], Exception | None]:
    reader = asyncio.StreamReader()
    for c in chunks:
        reader.feed_data(c)
    reader.feed_eof()
    framer = MllpFramer(reader, limits)
    events: list[object] = []
    error: Exception | None = None
    try:
        async with asyncio.timeout(5):  # a hang is a failure
            while (ev := await framer.next_event()) is not None:
                events.append(ev)
                assert len(framer._buf) <= limits.read_chunk_bytes
                assert sum(len(p) for p in framer._parts) <= limits.max_frame_bytes
    except FramingError as exc:
        error = exc
    return events, error


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams, sizes=cuts)
def test_any_bytes_any_cuts(data: bytes, sizes: list[int]) -> None:
    events, error = asyncio.run(run(split(data, sizes)))
    assert error is None or isinstance(error, JunkLimitError)
    for ev in events:
        assert isinstance(ev, Frame | TooLarge | FrameRejected)
        if isinstance(ev, Frame):
            assert b"\x0b" not in ev.payload
            assert len(ev.payload) <= LIMITS.max_frame_bytes
        if isinstance(ev, TooLarge):
            assert len(ev.msh_prefix) <= LIMITS.msh_capture_bytes
    # Cutting the stream differently never changes the outcome.
    whole, whole_error = asyncio.run(run([data]))
    assert whole == events
    assert type(whole_error) is type(error)


payloads = st.binary(max_size=1500).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))


@settings(max_examples=200, deadline=None)
@given(items=st.lists(payloads, min_size=1, max_size=8), sizes=cuts, junk=st.sampled_from([b"", b"\x00", b"\r\n"]))
def test_well_formed_frames_roundtrip(items: list[bytes], sizes: list[int], junk: bytes) -> None:
    data = b"".join(junk + frame(p) for p in items)
    events, error = asyncio.run(run(split(data, sizes)))
    assert error is None
    assert len(events) == len(items)
    for p, ev in zip(items, events, strict=True):
        if len(p) <= LIMITS.max_frame_bytes:
            assert ev == Frame(p)
        else:
            assert isinstance(ev, TooLarge) and ev.size == len(p)
