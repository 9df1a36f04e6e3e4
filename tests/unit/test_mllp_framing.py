"""MLLP framer over a StreamReader fed with feed_data(): every B-MLLP framing row (docs/bad-input.md)."""

from __future__ import annotations

import asyncio

import pytest

from passerelle.connector.listeners.mllp.framing import (
    Frame,
    FrameRejected,
    FrameTimeoutError,
    FramingLimits,
    IdleTimeoutError,
    JunkLimitError,
    MllpFramer,
    TooLarge,
)
from passerelle.mappings.hl7v2.mllp import frame
from tests.support.mllp_peer import CR, FS, VT


def msg(n: int, body: bytes = b"") -> bytes:
    return b"MSH|^~\\&|LAB|FAC|GW|FAC|20260101000000||ORU^R01|MSG%05d|P|2.5\rPID|1||X\r" % n + body


def test_the_envelope_is_vt_payload_fs_cr() -> None:
    assert frame(b"MSH|x") == VT + b"MSH|x" + FS + CR == b"\x0bMSH|x\x1c\r"


async def collect(data: list[bytes], limits: FramingLimits | None = None, eof: bool = True) -> list[object]:
    reader = asyncio.StreamReader()
    for chunk in data:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    framer = MllpFramer(reader, limits)
    events: list[object] = []
    while (ev := await framer.next_event()) is not None:
        events.append(ev)
    return events


async def test_one_frame() -> None:
    assert await collect([frame(msg(1))]) == [Frame(msg(1))]


async def test_fs_cr_lf_terminator_and_nul_between_frames_are_tolerated() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(VT + msg(1) + FS + CR + b"\n" + b"\x00\x00\r\n" + frame(msg(2)) + b"\n")
    reader.feed_eof()
    framer = MllpFramer(reader)
    assert await framer.next_event() == Frame(msg(1))
    assert await framer.next_event() == Frame(msg(2))
    assert await framer.next_event() is None
    assert framer.junk_bytes == 4  # NUL NUL CR LF; the LF after FS CR is part of the trailer


async def test_junk_before_vt_is_discarded_and_counted() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"GET / HTTP/1.1\r\n\r\n" + frame(msg(1)))
    reader.feed_eof()
    framer = MllpFramer(reader)
    assert await framer.next_event() == Frame(msg(1))
    assert framer.junk_bytes == 18


async def test_junk_limit_closes() -> None:
    with pytest.raises(JunkLimitError):
        await collect([b"\x16\x03\x01" + b"x" * 2000], FramingLimits(max_junk_bytes=1024))


async def test_junk_counter_resets_after_a_good_frame() -> None:
    junk = b"\x00" * 600
    events = await collect([junk + frame(msg(1)) + junk + frame(msg(2))], FramingLimits(max_junk_bytes=1024))
    assert events == [Frame(msg(1)), Frame(msg(2))]


async def test_fifty_frames_in_one_write_in_order() -> None:
    data = b"".join(frame(msg(i)) for i in range(50))
    assert await collect([data]) == [Frame(msg(i)) for i in range(50)]


async def test_frames_split_into_single_bytes() -> None:
    data = frame(msg(1)) + b"\n" + frame(msg(2))
    assert await collect([bytes([b]) for b in data]) == [Frame(msg(1)), Frame(msg(2))]


@pytest.mark.parametrize("cut", range(1, 40))
async def test_frames_split_at_every_boundary(cut: int) -> None:
    data = frame(b"MSH|a") + b"\n" + frame(b"MSH|bb") + frame(b"MSH|ccc") + b"\x00" + frame(b"")
    data = data[:40]
    events = await collect([data[:cut], data[cut:]])
    assert events == await collect([data])


async def test_partial_frame_at_eof_is_never_delivered() -> None:
    events = await collect([frame(msg(1)) + VT + msg(2)])
    assert events == [Frame(msg(1)), FrameRejected("partial", len(msg(2)))]


async def test_fs_at_eof_without_cr_is_partial_by_default() -> None:
    events = await collect([VT + msg(1) + FS])
    assert events == [FrameRejected("partial", len(msg(1)))]


async def test_fs_followed_by_other_byte_rejects_and_resyncs() -> None:
    events = await collect([VT + msg(1) + FS + b"X" + frame(msg(2))])
    assert events == [FrameRejected("bad_end", len(msg(1))), Frame(msg(2))]


async def test_fs_followed_by_vt_rejects_and_keeps_next_frame() -> None:
    events = await collect([VT + msg(1) + FS + frame(msg(2))])
    assert events == [FrameRejected("bad_end", len(msg(1))), Frame(msg(2))]


async def test_accept_fs_without_cr_option() -> None:
    limits = FramingLimits(accept_fs_without_cr=True)
    events = await collect([VT + msg(1) + FS + VT + msg(2) + FS + CR + b"\n" + VT + msg(3) + FS], limits)
    assert events == [Frame(msg(1)), Frame(msg(2)), Frame(msg(3))]


async def test_accept_fs_without_cr_answers_without_waiting_for_next_byte() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(VT + msg(1) + FS)  # no EOF: the sender waits for its ACK
    framer = MllpFramer(reader, FramingLimits(accept_fs_without_cr=True))
    assert await asyncio.wait_for(framer.next_event(), 1) == Frame(msg(1))


async def test_nested_vt_restarts_the_frame() -> None:
    events = await collect([VT + b"MSH|broken" + VT + msg(2) + FS + CR])
    assert events == [FrameRejected("nested_start", 10), Frame(msg(2))]


async def test_frame_without_fs_then_next_frame_is_not_delivered() -> None:
    # VT payload CR (no FS) then next VT: the broken one is discarded, the good one delivered.
    events = await collect([VT + msg(1) + frame(msg(2))])
    assert events == [FrameRejected("nested_start", len(msg(1))), Frame(msg(2))]


async def test_empty_frame_is_delivered_as_empty_payload() -> None:
    assert await collect([VT + FS + CR]) == [Frame(b"")]


async def test_frame_at_limit_passes_and_limit_plus_one_is_too_large() -> None:
    limits = FramingLimits(max_frame_bytes=2048)
    body = msg(1)
    at_limit = body + b"A" * (2048 - len(body))
    over = at_limit + b"A"
    events = await collect([frame(at_limit) + frame(over) + frame(msg(3))], limits)
    assert events[0] == Frame(at_limit)
    assert isinstance(events[1], TooLarge)
    assert events[1].size == 2049
    assert events[1].msh_prefix == msg(1).split(b"\r")[0]
    assert events[2] == Frame(msg(3))


async def test_too_large_without_msh_has_empty_prefix() -> None:
    events = await collect([frame(b"X" * 5000)], FramingLimits(max_frame_bytes=1024))
    assert events == [TooLarge(5000, b"")]


async def test_huge_stream_without_fs_keeps_memory_bounded() -> None:
    """64 MiB without an end block through a 1 KiB limit: the framer never holds more than a chunk."""
    reader = asyncio.StreamReader()
    framer = MllpFramer(reader, FramingLimits(max_frame_bytes=1024))
    chunk = b"A" * 65536
    reader.feed_data(VT + msg(1))

    async def feed() -> None:
        for _ in range(1024):
            reader.feed_data(chunk)
            await asyncio.sleep(0)
        reader.feed_data(FS + CR)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    ev = await framer.next_event()
    await feeder
    assert isinstance(ev, TooLarge)
    assert ev.size == len(msg(1)) + 64 * 1024 * 1024
    assert len(framer._buf) <= 65536 + 2
    assert framer._parts == []


async def test_frame_deadline_slowloris() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(VT + b"MSH|")
    framer = MllpFramer(reader, FramingLimits(frame_timeout=0.05))
    with pytest.raises(FrameTimeoutError):
        await framer.next_event()


async def test_idle_timeout() -> None:
    reader = asyncio.StreamReader()
    framer = MllpFramer(reader, FramingLimits(idle_timeout=0.05))
    with pytest.raises(IdleTimeoutError):
        await framer.next_event()


async def test_idle_deadline_waits_while_held() -> None:
    """While ``hold()`` says a frame waits for its reply, the idle deadline is pushed back."""
    reader = asyncio.StreamReader()
    asked: list[bool] = []

    def hold() -> bool:
        asked.append(len(asked) < 3)  # held three times, then released
        return asked[-1]

    framer = MllpFramer(reader, FramingLimits(idle_timeout=0.02), hold=hold)
    with pytest.raises(IdleTimeoutError):
        await framer.next_event()
    assert asked == [True, True, True, False]


async def test_idle_deadline_moved_while_a_read_waits() -> None:
    """``touch()`` (a reply written) during a read already waiting: that read's timeout is no close."""
    now = [0.0]
    reader = asyncio.StreamReader()
    framer = MllpFramer(reader, FramingLimits(idle_timeout=0.05), clock=lambda: now[0])
    waiting = asyncio.create_task(framer.next_event())
    await asyncio.sleep(0.01)
    now[0] = 0.04
    framer.touch()  # deadline 0.09 (fake clock); the pending read times out at 0.05 real seconds
    await asyncio.sleep(0.08)
    reader.feed_data(frame(msg(1)))
    assert await waiting == Frame(msg(1))


async def test_junk_does_not_extend_the_idle_deadline() -> None:
    reader = asyncio.StreamReader()
    framer = MllpFramer(reader, FramingLimits(idle_timeout=0.2))

    async def trickle() -> None:
        for _ in range(100):
            reader.feed_data(b"\x00")
            await asyncio.sleep(0.01)

    task = asyncio.create_task(trickle())
    with pytest.raises(IdleTimeoutError):
        await framer.next_event()
    task.cancel()
