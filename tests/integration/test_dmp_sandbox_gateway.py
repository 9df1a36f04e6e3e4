"""The gateway with ``space.transport: dmp`` against the real sandbox's DMP services (no shared code: the
sandbox checks with its own receiver), over real sockets: every input kind ends in the patient's space,
replacement and deletion change the registry, and the space's states and refusals reach the journal."""

from __future__ import annotations

import asyncio
import random
import shutil
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from passerelle.adapters.dmp.client import DmpSpace
from passerelle.adapters.dmp.credentials import tls_context
from passerelle.adapters.dmp.devpki import DEV_HOMOLOGATION_ID, write_dev_pki
from passerelle.adapters.mhd import SpaceSettings
from passerelle.adapters.space import DeliveryOutcome
from passerelle.connector.app import Gateway
from passerelle.connector.cli.main import app as cli
from passerelle.connector.cli.send import send_files
from passerelle.mappings.cda.reader import map_cda_document
from passerelle.mappings.document import Flags, Provenance
from passerelle.mappings.samples.messages import build_oru, build_sample_cda, root_only_oid, synthetic_patient
from passerelle.queue.model import Query, Row, State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.dmp_stack import sandbox_dmp_stack
from tests.support.gateway import post_cda, wait_settled

pytestmark = pytest.mark.corpus

SEGUR = (
    "hl7v2/fr-ans-hl7v2-exemples/Vague_2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1/ORU/"
    "Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"
)
SEGUR_INS = "279035121518989"
KOS = "dicom/kos/fr-drimbox/ko.dcm"


async def admin(url: str, method: str, path: str, **kwargs: Any) -> Any:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        answer = await client.request(method, path, **kwargs)
        answer.raise_for_status()
        return answer.json() if "json" in answer.headers.get("content-type", "") else answer.text


async def show(tmp_path: Path, row: Row) -> str:
    args = ["messages", "show", str(row.id), "--data-dir", str(tmp_path / "gw")]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert result.exit_code == 0, result.output
    return result.output


def lab_report(seed: int, **changes: Any) -> tuple[bytes, str, str]:
    """A synthetic ORU (CR-BIO); returns (message, document id, patient INS)."""
    rng = random.Random(seed)
    patient = synthetic_patient(rng)
    doc_id = root_only_oid(rng)
    fields: dict[str, Any] = {"control_id": f"M{seed}", "document_id": doc_id, "set_id": root_only_oid(rng)}
    fields.update(changes)
    raw, _ = build_oru(now=datetime.now(UTC).replace(microsecond=0), patient=patient, **fields)
    return raw, fields["document_id"], patient.ins


async def test_ans_oru_cda_over_http_and_kos_end_in_the_patients_space(tmp_path: Path, corpus_dir: Path) -> None:
    inbox = tmp_path / "dicom-in"
    inbox.mkdir()
    folder = {"dicom_folder.enabled": True, "dicom_folder.path": inbox, "dicom_folder.settle_s": 0,
              "dicom_folder.poll_interval_s": 0.1}  # fmt: skip
    rng = random.Random(11)
    patient = synthetic_patient(rng)
    cda_id = root_only_oid(rng)
    cda = build_sample_cda(now=datetime.now(UTC).replace(microsecond=0), patient=patient, document_id=cda_id,
                    set_id=root_only_oid(rng), sender=None)  # fmt: skip
    async with sandbox_dmp_stack(tmp_path, **folder) as (sandbox, gateway, base):
        assert gateway.mllp is not None
        [ack] = await send_files("127.0.0.1", gateway.mllp.port, [("segur", (corpus_dir / SEGUR).read_bytes())])
        assert ack.code == "AA"
        await post_cda(base, cda)
        shutil.copy(corpus_dir / KOS, inbox / "ko.dcm")
        rows = await wait_settled(gateway, 3)
        assert [r.state for r in rows] == [State.DELIVERED] * 3, [(r.channel, r.detail) for r in rows]
        pushes = await admin(sandbox, "GET", "/admin/pushes")
        page = await admin(sandbox, "GET", f"/patients/{SEGUR_INS}")
        found = await admin(
            sandbox, "GET", "/fhir/DocumentReference",
            params={"patient.identifier": f"urn:oid:1.2.250.1.213.1.4.10|{patient.ins}"},
            headers={"X-Actor": "professional:test"},
        )  # fmt: skip
        events = [e for r in rows for e in await gateway.journal.events(r.id) if e.kind == "delivered"]
    assert {(p["transport"], p["outcome"]) for p in pushes} == {("dmp", "accepted")} and len(pushes) == 3
    assert "1.2.250.1.213.1.1.9" in page and "<td>dmp</td>" in page
    assert f"urn:oid:{cda_id}" in str(found)
    assert all("ITI-41 Success" in str(e.data.get("answer")) for e in events)


def documents_of(page: str) -> dict[str, str]:
    """uniqueId -> status as the sandbox's administrator table lists them."""
    import re

    table = page.split('id="documents-all"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'data-unique-id="([^"]+)".*?<td>([a-z-]+)</td>\s*<td>', table, re.S)
    return dict(rows)


async def test_corrected_result_replaces_then_cancellation_deletes(tmp_path: Path) -> None:
    """ORU NW, then RO (ITI-18 finds the entryUUID, ITI-41 with RPLC: the old version Deprecated), then
    CA (ITI-18 then ITI-57 to Deleted), as the sandbox's page shows."""
    rng = random.Random(21)
    patient = synthetic_patient(rng)
    now = datetime.now(UTC).replace(microsecond=0)
    first, second, set_id = root_only_oid(rng), root_only_oid(rng), root_only_oid(rng)
    common = {"now": now, "patient": patient, "set_id": set_id}
    v1, _ = build_oru(control_id="V1", document_id=first, **common)
    v2, _ = build_oru(control_id="V2", document_id=second, version=2, order_control="RO", replaces=first, **common)
    cancel, _ = build_oru(control_id="V3", document_id=second, version=2, order_control="CA", replaces=first, **common)
    # ITI-41 answers packaged plain here, multipart/related (like Apache CXF) in the other tests
    async with sandbox_dmp_stack(tmp_path, sandbox={"dmp_answer": "plain"}) as (sandbox, gateway, _base):
        assert gateway.mllp is not None
        for count, message in enumerate((v1, v2), start=1):
            [ack] = await send_files("127.0.0.1", gateway.mllp.port, [(f"v{count}", message)])
            assert ack.code == "AA"
            rows = await wait_settled(gateway, count)
        assert [r.state for r in rows] == [State.DELIVERED] * 2, [r.detail for r in rows]
        replaced = documents_of(await admin(sandbox, "GET", f"/patients/{patient.ins}"))
        [ack] = await send_files("127.0.0.1", gateway.mllp.port, [("v3", cancel)])
        rows = await wait_settled(gateway, 3)
        assert {r.message_id: r.state for r in rows}["V3"] is State.DELIVERED, [r.detail for r in rows]
        deleted = documents_of(await admin(sandbox, "GET", f"/patients/{patient.ins}"))
        traces = await admin(sandbox, "GET", f"/admin/patients/{patient.ins}/traces")
        events = {r.message_id: await gateway.journal.events(r.id) for r in rows}
    assert (replaced[first], replaced[second]) == ("superseded", "current")
    assert (deleted[first], deleted[second]) == ("superseded", "entered-in-error")
    details = [t["detail"] for t in traces]
    assert details.count("ITI-18 1 match(es)") >= 1 and "ITI-57 Deleted" in details
    delivered = {m: next(e for e in ev if e.kind == "delivered").data["answer"] for m, ev in events.items()}
    assert "ITI-41 Success" in str(delivered["V2"]) and "ITI-57 Success" in str(delivered["V3"])


async def send_reports(gateway: Gateway, *reports: tuple[bytes, str, str]) -> None:
    assert gateway.mllp is not None
    acks = await send_files("127.0.0.1", gateway.mllp.port, [(doc_id, raw) for raw, doc_id, _ in reports])
    assert [a.code for a in acks] == ["AA"] * len(reports)


async def test_td02_states_flow_into_the_consent_gate_with_the_authorisation(tmp_path: Path) -> None:
    cases = {  # space state set in the sandbox -> (journal state, consent reason, authorisation recorded)
        "unknown": ({"status": "INEXISTANT"}, State.PARKED, "space_not_active", None),
        "closed": ({"status": "FERME"}, State.REFUSED, "space_closed", "VALIDE"),
        "blocked": ({"status": "ACTIF", "authorisation": "INTERDIT"}, State.REFUSED, "author_blocked", "INTERDIT"),
        "expired": ({"status": "ACTIF", "authorisation": "EXPIRE"}, State.DELIVERED, "allowed", "EXPIRE"),
    }
    reports = {name: lab_report(30 + n, control_id=name) for n, name in enumerate(cases)}
    async with sandbox_dmp_stack(tmp_path) as (sandbox, gateway, _base):
        for name, (space, *_) in cases.items():
            await admin(sandbox, "PUT", f"/admin/patients/{reports[name][2]}", json=space)
        await send_reports(gateway, *reports.values())
        rows = {r.message_id: r for r in await wait_settled(gateway, len(cases))}
        consent = {
            m: next(e for e in await gateway.journal.events(r.id) if e.kind == "consent") for m, r in rows.items()
        }
        traces = await admin(sandbox, "GET", f"/admin/patients/{reports['closed'][2]}/traces")
        pushes = await admin(sandbox, "GET", "/admin/pushes")
    for name, (_, state, reason, authorisation) in cases.items():
        assert rows[name].state is state, (name, rows[name].detail)
        assert consent[name].detail.endswith(reason), (name, consent[name].detail)
        assert consent[name].data.get("authorisation") == authorisation, (name, consent[name].data)
    assert [t["detail"] for t in traces] == ["TD0.2 FERME"]  # asked, then refused before any ITI-41
    assert [(p["unique_ids"], p["outcome"]) for p in pushes] == [([reports["expired"][1]], "accepted")]


async def test_refusals_of_the_space_end_refused_with_their_code(tmp_path: Path) -> None:
    """TD0.2 does not tell opposition, and a space closed or removed after the (cached) TD0.2 is only
    known from ITI-41's answer: each ends refused with the DMP's code in ``messages show``."""
    first = {name: lab_report(40 + n, control_id=f"{name}-1") for n, name in enumerate(("closed", "gone"))}
    opposed = lab_report(45, control_id="opposed")
    async with sandbox_dmp_stack(tmp_path) as (sandbox, gateway, _base):
        await admin(sandbox, "PUT", f"/admin/patients/{opposed[2]}", json={"opposed": True})
        await send_reports(gateway, *first.values(), opposed)
        await wait_settled(gateway, 3)
        await admin(sandbox, "PUT", f"/admin/patients/{first['closed'][2]}", json={"status": "FERME"})
        await admin(sandbox, "PUT", f"/admin/patients/{first['gone'][2]}", json={"status": "INEXISTANT"})
        later = [
            lab_report(40 + n, control_id=f"{name}-2", document_id=f"{first[name][1]}.2")
            for n, name in enumerate(("closed", "gone"))
        ]
        await send_reports(gateway, *later)
        rows = {r.message_id: r for r in await wait_settled(gateway, 5)}
        shown = {m: await show(tmp_path, rows[m]) for m in ("opposed", "closed-2", "gone-2")}
    assert rows["closed-1"].state is State.DELIVERED and rows["gone-1"].state is State.DELIVERED
    for message, code in (
        ("opposed", "DMPPatientOpposed"),
        ("closed-2", "DMPClosed"),
        ("gone-2", "XDSUnknownPatientId"),
    ):
        assert rows[message].state is State.REFUSED, (message, rows[message].detail)
        assert code in rows[message].detail and code in shown[message], (message, shown[message])


async def test_receiver_faults_and_503_are_retried_until_delivered(tmp_path: Path) -> None:
    """On ITI-41 (a patient whose status is cached: a soap:Receiver fault) and on TD0.2 (a new patient:
    HTTP 503), each retried, then delivered once the space answers again."""
    fast = {"worker.retry.initial_delay_s": 0.1, "worker.retry.max_delay_s": 0.2}
    faults = ({"soap_receiver_rate": 1.0}, {"error_rate": 1.0, "error_status": 503})
    expected = (("ITI-41", "Receiver DMPServiceUnavailable"), ("TD0.2", "HTTP 503"))
    async with sandbox_dmp_stack(tmp_path, **fast) as (sandbox, gateway, _base):
        first = lab_report(50, control_id="first")
        await send_reports(gateway, first)
        await wait_settled(gateway, 1)
        for n, fault in enumerate(faults):
            await admin(sandbox, "PUT", "/admin/faults", json=fault)
            report = lab_report(50 + n, control_id=f"F{n}", document_id=f"{first[1]}.{n + 1}")
            await send_reports(gateway, report)
            row = await wait_retried(gateway, f"F{n}", 2)
            await admin(sandbox, "DELETE", "/admin/faults")
            rows = {r.message_id: r for r in await wait_settled(gateway, n + 2)}
            events = await gateway.journal.events(row.id)
            assert rows[f"F{n}"].state is State.DELIVERED, rows[f"F{n}"].detail
            retries = [e.detail for e in events if e.kind == "retry"]
            assert len(retries) >= 2 and all(r.startswith(expected[n][0]) for r in retries), retries
            assert expected[n][1] in retries[0], retries


async def wait_retried(gateway: Gateway, message_id: str, count: int, timeout: float = 30.0) -> Row:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for row in await gateway.journal.find(Query(limit=100)):
            if row.message_id == message_id:
                events = await gateway.journal.events(row.id)
                if sum(e.kind == "retry" for e in events) >= count:
                    return row
        await asyncio.sleep(0.1)
    raise AssertionError(f"{message_id} was not retried {count} times")


async def test_a_resend_after_a_lost_answer_is_stored_once(tmp_path: Path) -> None:
    """The same document sent twice (the first answer lost): the second lot, signed again, is
    recognised by the sandbox as a re-send; one document (and one signature) in the space."""
    pki = write_dev_pki(tmp_path / "pki")
    rng = random.Random(60)
    now = datetime.now(UTC).replace(microsecond=0)
    cda = build_sample_cda(
        now=now, patient=synthetic_patient(rng), document_id=root_only_oid(rng), set_id=root_only_oid(rng)
    )
    doc = map_cda_document(cda, test_environment=True, now=now, provenance=Provenance(channel="test"))
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox", dmp_ca_file=pki.ca)) as url:
        settings = SpaceSettings.model_validate(
            {"url": url.dmp, "transport": "dmp", "test_environment": True,
             "dmp": {"sign_cert_file": pki.sign_cert, "sign_key_file": pki.sign_key, "structure_id": pki.structure_id,
                     "homologation_id": DEV_HOMOLOGATION_ID}}
        )  # fmt: skip
        space = DmpSpace(settings)
        try:
            receipts = [await space.provide(doc), await space.provide(doc)]
        finally:
            await space.aclose()
        pushes = await admin(url, "GET", "/admin/pushes")
        counts = (await admin(url, "GET", f"/admin/patients/{doc.patient.ins}"))["documents"]
    assert [r.outcome for r in receipts] == [DeliveryOutcome.CREATED, DeliveryOutcome.CREATED]
    assert [p["outcome"] for p in pushes] == ["accepted", "duplicate"]
    assert counts == {"current": 2}  # the report and its submission set's signature


async def test_mutual_tls_12_with_the_sandbox(tmp_path: Path) -> None:
    """The sandbox's optional TLS: the dev PKI's server certificate, client certificates from its CA
    required; the gateway over https with its AUTH_CLI certificate, TLS 1.2 and the DMP's suites."""
    pki = write_dev_pki(tmp_path / "pki")
    tls = {"tls_cert_file": pki.server_cert, "tls_key_file": pki.server_key, "tls_client_ca_file": pki.ca}
    rng = random.Random(70)
    patient = synthetic_patient(rng)
    cda = build_sample_cda(now=datetime.now(UTC).replace(microsecond=0), patient=patient, document_id=root_only_oid(rng),
                    set_id=root_only_oid(rng), sender=None)  # fmt: skip
    mtls = {"space.client_cert_file": pki.auth_cert, "space.client_key_file": pki.auth_key, "space.ca_file": pki.ca}
    async with sandbox_dmp_stack(tmp_path, sandbox=tls, pki=pki, **mtls) as (sandbox, gateway, base):
        assert sandbox.startswith("https://127.0.0.1:")
        await post_cda(base, cda)
        [row] = await wait_settled(gateway, 1)
        host, port = sandbox.removeprefix("https://").split(":")
        context = tls_context(gateway.settings.space)
        assert not isinstance(context, bool)
        _reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
        negotiated = writer.get_extra_info("ssl_object")
        version, cipher = negotiated.version(), negotiated.cipher()[0]
        writer.close()
        anonymous = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises((ssl.SSLError, ConnectionError, httpx.HTTPError)):
            async with httpx.AsyncClient(verify=anonymous, timeout=5) as client:
                await client.get(f"{sandbox}/admin/pushes")
        async with httpx.AsyncClient(verify=context, timeout=5) as client:
            pushes = (await client.get(f"{sandbox}/admin/pushes")).json()
    assert row.state is State.DELIVERED, row.detail
    assert version == "TLSv1.2" and cipher.startswith("ECDHE-RSA-"), (version, cipher)
    assert [(p["transport"], p["outcome"]) for p in pushes] == [("dmp", "accepted")]


async def test_masking_a_delivered_report_is_an_iti57_metadata_update(tmp_path: Path) -> None:
    """The same report again with MODIF_CONF_CODE and MASQUE_PS: ITI-18 finds it (with its version),
    ITI-57 registers a new version of its metadata; the sandbox hides it from professionals."""
    report = lab_report(80, control_id="first")
    masked = lab_report(
        80, control_id="masked", document_id=report[1],
        flags=Flags(ack_reception=True, modif_conf_code=True, masque_ps=True),
    )  # fmt: skip
    async with sandbox_dmp_stack(tmp_path) as (sandbox, gateway, _base):
        await send_reports(gateway, report)
        await wait_settled(gateway, 1)
        await send_reports(gateway, masked)
        rows = {r.message_id: r for r in await wait_settled(gateway, 2)}
        page = await admin(sandbox, "GET", f"/patients/{report[2]}")
        traces = [t["detail"] for t in await admin(sandbox, "GET", f"/admin/patients/{report[2]}/traces")]
        delivered = next(e for e in await gateway.journal.events(rows["masked"].id) if e.kind == "delivered")
    assert rows["masked"].state is State.DELIVERED, rows["masked"].detail
    assert "ITI-57 Success" in str(delivered.data["answer"])
    assert "ITI-57 metadata update v2" in traces
    professional = page.split('id="view-professional"', 1)[1].split("</section>", 1)[0]
    assert report[1] not in professional and report[1] in page
