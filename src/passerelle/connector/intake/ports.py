"""What the intakes need from outside, as small ports the composition root fills: the journal append
(returns only after the commit), a clock, and the metrics every intake reports to (one event per input,
low-cardinality labels only; adapted to Prometheus in ``passerelle/connector/metrics_bridge.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from passerelle.queue.model import AppendResult, Inbound

#: The journal's append: stores the rows durably and returns once they are committed.
Accept = Callable[[Sequence[Inbound]], Awaitable[list[AppendResult]]]
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class IntakeMetrics(Protocol):
    def message(self, kind: str, outcome: str, reason: str) -> None:
        """``outcome``: a :class:`~passerelle.connector.intake.replies.Outcome` value; ``reason`` a fixed code."""
        ...


class Hl7IntakeMetrics(IntakeMetrics, Protocol):
    """The HL7v2 intake also reports character-set anomalies (warning name, count)."""

    def decode_warning(self, warning: str, count: int) -> None: ...


class NullMetrics:
    def message(self, kind: str, outcome: str, reason: str) -> None:
        return None

    def decode_warning(self, warning: str, count: int) -> None:
        return None
