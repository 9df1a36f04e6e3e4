"""C-ECHO (Verification) against the Storage SCP with dcmtk's echoscu: the PACS administrator's first test.

Answered with success; the calling AE title check applies to echo as to store, so an echo from an AE
title not in ``allowed_calling_ae_titles`` is refused at association time.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Sequence

import pytest

from passerelle.connector.listeners.dicom_scp import DicomScp, DicomSettings
from passerelle.queue.model import AppendResult, Inbound
from tests.integration.test_dicom_scp import scp_for

ECHOSCU = shutil.which("echoscu")
pytestmark = pytest.mark.skipif(ECHOSCU is None, reason="dcmtk echoscu not installed (apt dcmtk; .ci/run installs it)")


async def _nothing_stored(items: Sequence[Inbound]) -> list[AppendResult]:
    raise AssertionError("C-ECHO must not store anything")


@pytest.fixture
async def scp() -> AsyncIterator[DicomScp]:
    scp = scp_for(DicomSettings(port=0, allowed_calling_ae_titles=["PACS"]), _nothing_stored)
    await scp.start()
    try:
        yield scp
    finally:
        await scp.stop()


async def _echoscu(port: int, calling: str) -> tuple[int, str]:
    assert ECHOSCU is not None
    proc = await asyncio.create_subprocess_exec(
        ECHOSCU, "-v", "-aet", calling, "-aec", "PASSERELLE", "127.0.0.1", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_echoscu_is_answered_with_success(scp: DicomScp) -> None:
    code, out = await _echoscu(scp.port, "PACS")
    assert code == 0, out
    assert "Received Echo Response (Success)" in out


async def test_echo_from_an_unknown_calling_ae_title_is_refused(scp: DicomScp) -> None:
    code, out = await _echoscu(scp.port, "STRANGER")
    assert code != 0
    assert "Association Rejected" in out
    assert "Received Echo Response" not in out
