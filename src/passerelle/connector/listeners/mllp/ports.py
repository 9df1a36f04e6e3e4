"""What the MLLP listener needs from outside, as small ports the composition root fills: the intake
(:class:`MllpHandler`, optionally :class:`OversizeHandler`) and a metrics sink (:class:`MllpMetrics`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from passerelle.connector.intake.binding import Principal


class MllpHandler(Protocol):
    """What the listener needs from the intake (``passerelle.connector.intake.hl7.Hl7Intake``).

    Both return the reply payload without MLLP framing, or ``None`` to send nothing for that frame.
    A positive reply must mean "committed durably". Exceptions are treated as "no reply possible":
    the connection is closed without answering the frames of that call. ``principal`` is the
    connection's certificate and the senders it may use (``None`` when the listener binds nothing).
    """

    async def handle(self, payload: bytes, peer: str, principal: Principal | None = None) -> bytes | None: ...

    async def handle_batch(
        self, items: Sequence[tuple[bytes, str]], principal: Principal | None = None
    ) -> list[bytes | None]: ...


class OversizeHandler(Protocol):
    """Optional: builds the reply for a frame over the size limit (``msh_prefix`` is its first
    segment, ``b""`` when it did not start with MSH). ``None`` = close the connection."""

    async def handle_oversize(self, msh_prefix: bytes, size: int, peer: str) -> bytes | None: ...


class MllpMetrics(Protocol):
    """Counters and one histogram the listener reports; label values come from small fixed sets."""

    def connection_opened(self) -> None: ...

    def connection_closed(self, reason: str) -> None: ...

    def connection_refused(self, reason: str) -> None: ...

    def frame_received(self, size: int) -> None: ...

    def frame_rejected(self, reason: str) -> None: ...

    def junk_bytes(self, count: int) -> None: ...

    def reply_sent(self, latency_seconds: float) -> None: ...


class NullMetrics:
    """Metrics sink that records nothing (any report is accepted and dropped)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return _ignore


def _ignore(*args: object) -> None:
    return None
