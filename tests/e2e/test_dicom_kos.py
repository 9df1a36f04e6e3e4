"""The DRIM-M KOS of the shared corpus, sent by dcmtk's storescu to the gateway's Storage SCP, ends up
in the sandbox as an imaging manifest with the DMP metadata (docs/interop-reference.md, "Imaging")."""

from __future__ import annotations

import asyncio
import shutil

import httpx
import pydicom
import pytest

from passerelle.connector.listeners.dicom_scp import DicomScp
from passerelle.queue.model import State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import running_gateway, wait_settled

STORESCU = shutil.which("storescu")


@pytest.mark.corpus
@pytest.mark.skipif(STORESCU is None, reason="dcmtk storescu not installed (apt dcmtk; .ci/run installs it)")
async def test_storescu_kos_is_delivered_as_imaging_manifest(corpus_dir, tmp_path) -> None:
    kos = corpus_dir / "dicom/kos/fr-drimbox/ko.dcm"
    ds = pydicom.dcmread(kos)
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir, **{"dicom.enabled": True, "dicom.port": 0}) as (
            gw,
            _,
        ):
            scp = next(x for x in gw.listeners if isinstance(x, DicomScp))
            proc = await asyncio.create_subprocess_exec(
                STORESCU, "-aet", "DRIMBOX", "-aec", "PASSERELLE", "127.0.0.1", str(scp.port), str(kos),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await proc.communicate()
            assert proc.returncode == 0, out.decode(errors="replace")
            [row] = await wait_settled(gw, 1)
            assert row.state is State.DELIVERED, row.detail
            async with httpx.AsyncClient(base_url=sandbox.fhir, timeout=10) as client:
                resp = await client.get(
                    "/DocumentReference",
                    params={"patient.identifier": f"urn:oid:1.2.250.1.213.1.4.10|{ds.PatientID}"},
                    headers={"X-Actor": "professional:test"},
                )
                resp.raise_for_status()
                [entry] = resp.json()["entry"]
                doc = entry["resource"]
                binary = await client.get(doc["content"][0]["attachment"]["url"].removeprefix(sandbox.fhir))
    assert doc["masterIdentifier"]["value"] == f"urn:oid:{ds.SOPInstanceUID}"
    attachment = doc["content"][0]["attachment"]
    assert attachment["contentType"] == "application/dicom"
    assert doc["content"][0]["format"]["code"] == "1.2.840.10008.5.1.4.1.1.88.59"
    assert {c["code"] for c in doc["category"][0]["coding"]} == {"31"}
    assert {c["code"] for c in doc["type"]["coding"]} == {"IMG-KOS"}
    related = {
        r["identifier"]["type"]["coding"][0]["code"]: r["identifier"]["value"] for r in doc["context"]["related"]
    }
    assert related["urn:ihe:iti:xds:2016:studyInstanceUID"] == ds.StudyInstanceUID
    assert binary.status_code == 200
