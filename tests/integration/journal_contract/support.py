"""Helpers shared by the journal contract suites."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from passerelle.queue import Inbound, State

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def item(n: int, lane: str = "p1", *, body: bytes | None = None, state: State = State.ACCEPTED) -> Inbound:
    raw = body if body is not None else f"MSH|^~\\&|LAB|FAC|||||ORU^R01|{n}|P|2.5\r".encode()
    return Inbound(
        raw=raw, channel="mllp", sender="LAB^FAC", kind="oru", message_id=str(n), dedup_key=f"LAB^FAC^{n}",
        content_hash=hashlib.sha256(raw).hexdigest(), lane=lane, state=state, ack=f"ACK{n}".encode(),
    )  # fmt: skip


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def days(n: float) -> datetime:
    """``n`` days from now (negative: ago)."""
    return datetime.now(UTC) + timedelta(days=n)
