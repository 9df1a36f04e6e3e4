"""Large inputs are decoded in worker threads, never on the event loop (the loop keeps answering other
senders while a 1 MB message is parsed)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

import passerelle.connector.intake.cda as cda_module
import passerelle.connector.intake.dicom as dicom_module
import passerelle.connector.intake.hl7 as hl7_module
from passerelle.connector.intake.cda import CdaIntake, CdaIntakeSettings
from passerelle.connector.intake.dicom import DicomIntake
from passerelle.connector.intake.hl7 import OFFLOAD_BYTES, Hl7Intake, Hl7IntakeSettings
from passerelle.mappings.dicom.common import DicomSite
from passerelle.queue.model import AppendResult, Inbound
from tests.support.dicom_samples import make_kos

NOW = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)


async def accept(items: Sequence[Inbound]) -> list[AppendResult]:
    return [AppendResult(row_id=i + 1) for i in range(len(items))]


def spy(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Record the thread each call of ``module.name`` runs in."""
    threads: list[int] = []
    real = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return threads


async def test_a_large_hl7_message_is_decoded_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = spy(monkeypatch, hl7_module, "decode_message")
    intake = Hl7Intake(accept, Hl7IntakeSettings(), clock=lambda: NOW)
    small = b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01^ORU_R01|1|P|2.5\rPID|||1\r"
    large = small + b"NTE|1||" + b"x" * OFFLOAD_BYTES + b"\r"
    await intake.handle(small, "peer")
    await intake.handle(large, "peer")
    loop_thread = threading.get_ident()
    assert threads[0] == loop_thread  # a few bytes: no thread hop
    assert threads[1] != loop_thread


async def test_cda_validation_runs_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = spy(monkeypatch, cda_module, "validate_cda")
    intake = CdaIntake(accept, CdaIntakeSettings(), channel="http", sender="http", clock=lambda: NOW)
    await intake.receive(b"<not-a-cda/>")
    assert threads and threading.get_ident() not in threads


async def test_dicom_decoding_runs_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = spy(monkeypatch, dicom_module, "prepare")
    intake = DicomIntake(accept, channel="dicom", test_environment=True, site=DicomSite(), max_bytes=1 << 20)
    await intake.receive(make_kos(), sender="PACS")
    assert threads and threading.get_ident() not in threads
