"""The metrics port every intake reports to: one event per input, with low-cardinality labels only.

The composition root adapts it to Prometheus (``passerelle/connector/metrics_bridge.py``); tests pass a
recorder; :class:`NullMetrics` records nothing.
"""

from __future__ import annotations

from typing import Protocol


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
