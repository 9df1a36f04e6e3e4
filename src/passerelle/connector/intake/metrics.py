"""The metrics port every intake reports to (CDA over HTTP, DICOM SCP and folders): one event per
input, with low-cardinality labels only. The HL7v2 intake's port adds charset warnings to it."""

from __future__ import annotations

from typing import Protocol


class IntakeMetrics(Protocol):
    def message(self, kind: str, outcome: str, reason: str) -> None:
        """``outcome``: accepted, duplicate, conflict, rejected or storage_error; ``reason`` a fixed code."""
        ...


class NullMetrics:
    def message(self, kind: str, outcome: str, reason: str) -> None:
        return None
