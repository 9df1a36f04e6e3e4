"""Discrete lab results (IHE LAB-3 ORU^R01) over MLLP become a generated CR-BIO document in the sandbox;
a corrected result (OBX-11 = C) replaces it (same set id, version 2, relatesTo replaces)."""

from __future__ import annotations

import base64

import httpx

from passerelle.connector.cli.send import send_files
from passerelle.mappings.codes.tables import loinc_table_file_name
from passerelle.mappings.samples.lab import SAMPLE_INS, SAMPLE_LOINC_CSV, sample_oru
from passerelle.queue.model import State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import AUTH, running_gateway, wait_settled
from tests.support.waiting import poll

LAB = {"finess": "990000017", "name": "Laboratoire de démonstration", "city": "PARIS", "postal_code": "75013"}


async def test_lab_results_become_crbio_and_corrections_replace(tmp_path) -> None:
    loinc = tmp_path / "loinc"
    loinc.mkdir()
    (loinc / loinc_table_file_name("SIL-DEMO^LABO-DEMO")).write_text(SAMPLE_LOINC_CSV, encoding="utf-8")
    overrides = {"lab.loinc_dir": loinc, "lab.senders": {"SIL-DEMO^LABO-DEMO": LAB}}
    first = sample_oru(control_id="LAB0001").encode("iso-8859-1")  # MSH-18 8859/1
    corrected = sample_oru(corrected=True, control_id="LAB0002").encode("iso-8859-1")
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir, **overrides) as (gw, _):
            acks = await send_files("127.0.0.1", gw.mllp.port, [("v1", first)])
            assert [a.code for a in acks] == ["AA"]
            [row] = await wait_settled(gw, 1)
            assert row.state is State.DELIVERED, row.detail
            acks = await send_files("127.0.0.1", gw.mllp.port, [("v2", corrected)])
            assert [a.code for a in acks] == ["AA"]
            rows = await wait_settled(gw, 2)
            assert all(r.state is State.DELIVERED for r in rows), [r.detail for r in rows]
            async with httpx.AsyncClient(base_url=sandbox.fhir, timeout=10) as client:
                resp = await client.get(
                    "/DocumentReference",
                    params={"patient.identifier": f"urn:oid:1.2.250.1.213.1.4.10|{SAMPLE_INS}"},
                    headers={"X-Actor": "professional:test"},
                )
                docs = [e["resource"] for e in resp.json()["entry"]]
                current = [d for d in docs if d["status"] == "current"]
                assert len(current) == 1 and len(docs) == 2
                new = current[0]
                old = next(d for d in docs if d["status"] == "superseded")
                assert new["relatesTo"][0]["code"] == "replaces"
                assert new["content"][0]["format"]["code"] == "urn:ihe:lab:xd-lab:2008"
                binary = await client.get(new["content"][0]["attachment"]["url"].removeprefix(sandbox.fhir))
    cda = (
        binary.content
        if binary.headers.get("content-type", "").endswith("xml")
        else base64.b64decode(binary.json()["data"])
    )
    assert b'<versionNumber value="2"/>' in cda and b"11502-2" in cda
    assert old["masterIdentifier"]["value"] != new["masterIdentifier"]["value"]


async def test_a_code_added_to_the_loinc_table_serves_the_replay_without_a_restart(tmp_path) -> None:
    """config/loinc/README.md: a result whose local code is missing is refused; add the code to the
    table and replay the message. The running gateway must read the changed table; a table that no
    longer parses leaves the last good one in use."""
    loinc = tmp_path / "loinc"
    loinc.mkdir()
    table = loinc / loinc_table_file_name("SIL-DEMO^LABO-DEMO")
    full = SAMPLE_LOINC_CSV.splitlines(keepends=True)
    table.write_text("".join(line for line in full if not line.startswith("GLU,")), encoding="utf-8")
    overrides = {"lab.loinc_dir": loinc, "lab.senders": {"SIL-DEMO^LABO-DEMO": LAB}}
    report = sample_oru(control_id="LAB0100").encode("iso-8859-1")
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir, **overrides) as (gw, base):
            assert [a.code for a in await send_files("127.0.0.1", gw.mllp.port, [("r", report)])] == ["AA"]
            [row] = await wait_settled(gw, 1)
            assert row.state is State.REFUSED and "GLU" in (row.detail or ""), row.detail

            table.write_text("".join(full), encoding="utf-8")  # the operator adds the code
            async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH["operate"]) as client:
                replayed = (await client.post(f"/v1/messages/{row.id}/replay")).json()
            assert replayed["items"][0]["result"] == "replayed"

            async def state() -> State:
                return (await gw.journal.get(row.id)).state

            assert await poll(state, lambda s: s is State.DELIVERED, 30) is State.DELIVERED

            table.write_text("local_code,loinc,display\nGLU,not-a-loinc,x\n", encoding="utf-8")  # a bad edit
            again = sample_oru(corrected=True, control_id="LAB0101").encode("iso-8859-1")
            assert [a.code for a in await send_files("127.0.0.1", gw.mllp.port, [("c", again)])] == ["AA"]
            rows = await wait_settled(gw, 2)
            assert all(r.state is State.DELIVERED for r in rows), [r.detail for r in rows]
