"""A real PACS in front of Passerelle: Orthanc (Debian package) registers the gateway's Storage SCP as a
DICOM modality, then, asked over its REST API, sends it a C-ECHO and a C-STORE of a KOS manifest; the
gateway journals the manifest and delivers it to the sandbox patient space.

Orthanc runs from a generated configuration: free ports, a temporary storage directory, no plugins,
its own DICOM server off, its REST API answering the loopback address only (RemoteAccessAllowed false).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pydicom
import pytest

from passerelle.connector.listeners.dicom_scp import DicomScp
from passerelle.queue.model import State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.dicom_samples import make_kos
from tests.support.gateway import running_gateway, wait_settled

ORTHANC = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(ORTHANC is None, reason="Orthanc not installed (apt orthanc; .ci/run installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running_orthanc(work: Path, scp_port: int) -> AsyncIterator[httpx.AsyncClient]:
    """Orthanc with Passerelle registered as modality ``passerelle``; yields a client of its REST API."""
    http_port = _free_port()
    config = {
        "Name": "passerelle-test",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "storage"),
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "DicomAet": "ORTHANC",
        "DicomModalities": {"passerelle": ["PASSERELLE", "127.0.0.1", scp_port]},
        "DicomScuTimeout": 20,
        "SaveJobs": False,
        "ExecuteLuaEnabled": False,
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    assert ORTHANC is not None
    log = (work / "orthanc.log").open("wb")
    proc = subprocess.Popen([ORTHANC, str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, cwd=work)
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError(f"Orthanc exited: {(work / 'orthanc.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/system")).status_code == 200:
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("Orthanc did not answer in 30 s")
        yield client
    finally:
        await client.aclose()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def test_orthanc_echoes_and_stores_a_kos_to_passerelle(tmp_path: Path) -> None:
    kos = make_kos()
    sop_uid = pydicom.dcmread(io.BytesIO(kos)).SOPInstanceUID
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir, **{"dicom.enabled": True, "dicom.port": 0}) as (
            gw,
            _,
        ):
            scp = next(x for x in gw.listeners if isinstance(x, DicomScp))
            (tmp_path / "orthanc").mkdir()
            async with running_orthanc(tmp_path / "orthanc", scp.port) as orthanc:
                echo = await orthanc.post("/modalities/passerelle/echo", content="{}")
                assert echo.status_code == 200, echo.text
                uploaded = await orthanc.post("/instances", content=kos)
                assert uploaded.status_code == 200, uploaded.text
                store = await orthanc.post("/modalities/passerelle/store", content=uploaded.json()["ID"])
                assert store.status_code == 200, store.text
                assert store.json().get("FailedInstancesCount", 0) == 0, store.text
            [row] = await wait_settled(gw, 1)
    assert row.channel == "dicom" and row.sender == "ORTHANC"
    assert row.state is State.DELIVERED, row.detail
    assert row.dedup_key == f"dicom:{sop_uid}"
