"""Sender binding over mutual TLS, end to end (issue 11 item 4; ADR 0024): real TLS sockets with trustme
certificates, a real SQLite journal, the real gateway and the real sandbox over HTTP.

A partner holding a valid client certificate sends under another sender's MSH-3/MSH-4 with the MSH-10
the genuine sender will use next: it gets AR naming MSH-3, the refusal is audited and counted, and
nothing enters the duplicate register, so the genuine sender's message with the same MSH-10 gets AA
and is delivered."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme

from passerelle.connector.cli.send import send_files
from passerelle.mappings.samples.messages import generate_samples
from passerelle.queue.audit import AuditQuery
from passerelle.queue.model import Query, State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import running_gateway, sandbox_pushes, wait_settled

GENUINE_CN, INTRUDER_CN = "sil.labo.example", "intruder.partner.example"
GENUINE_SENDER = "SIL-SYNTH^LABO-SYNTH"  # MSH-3.1^MSH-4.1 of the synthetic samples


class Pki:
    def __init__(self, root: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost", common_name="passerelle.test")
        self.server_key, self.server_cert, self.client_ca = root / "server.key", root / "server.pem", root / "ca.pem"
        server.private_key_pem.write_to_path(str(self.server_key))
        self.server_cert.write_bytes(b"".join(p.bytes() for p in server.cert_chain_pems))
        self.ca.cert_pem.write_to_path(str(self.client_ca))
        self.genuine = self.ca.issue_cert(GENUINE_CN, common_name=GENUINE_CN)
        self.intruder = self.ca.issue_cert(INTRUDER_CN, common_name=INTRUDER_CN)

    def client(self, cert: trustme.LeafCert) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        cert.configure_cert(ctx)
        return ctx

    def tls_settings(self) -> dict[str, object]:
        return {
            "enabled": True,
            "cert_file": self.server_cert,
            "key_file": self.server_key,
            "require_client_cert": True,
            "client_ca_file": self.client_ca,
            "allowed_client_subjects": [GENUINE_CN, INTRUDER_CN],
            "bindings": {GENUINE_CN: [GENUINE_SENDER], f"CN={INTRUDER_CN}": ["OTHER-APP^OTHER-LAB"]},
        }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


async def test_impersonation_is_refused_and_does_not_block_the_genuine_sender(tmp_path: Path, pki: Pki) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    [genuine] = generate_samples(1, seed=11, now=now)
    [other] = generate_samples(1, seed=12, now=now)
    # Another message (another patient, another document) under the genuine sender's MSH-3/MSH-4 and
    # the MSH-10 the genuine sender is about to use.
    forged = other.raw.replace(other.control_id.encode(), genuine.control_id.encode())
    assert forged != genuine.raw and b"|SIL-SYNTH|LABO-SYNTH|" in forged

    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir, **{"mllp.tls": pki.tls_settings()}) as (gw, _):
            assert gw.mllp is not None
            port = gw.mllp.port
            [refused] = await send_files("127.0.0.1", port, [("forged", forged)], ssl_context=pki.client(pki.intruder))
            [taken] = await send_files(
                "127.0.0.1", port, [("genuine", genuine.raw)], ssl_context=pki.client(pki.genuine)
            )
            [again] = await send_files("127.0.0.1", port, [("again", genuine.raw)], ssl_context=pki.client(pki.genuine))

            assert (refused.code, refused.control_id) == ("AR", genuine.control_id)
            assert (taken.code, taken.control_id) == ("AA", genuine.control_id)
            assert again.code == "AA"  # a replay of the same bytes: the first ACK again

            rows = {r.state: r for r in await wait_settled(gw, 2)}
            assert set(rows) == {State.REJECTED, State.DELIVERED}
            rejected, delivered = rows[State.REJECTED], rows[State.DELIVERED]
            assert rejected.message_id == delivered.message_id == genuine.control_id
            assert rejected.dedup_key == "" and rejected.detail.startswith("sender_not_allowed: ERR-3 207 MSH^1^3")
            assert delivered.dedup_key == f"{GENUINE_SENDER}^{genuine.control_id}"
            assert len(await gw.journal.find(Query(limit=100))) == 2  # the replay stored nothing

            assert len(await sandbox_pushes(sandbox.admin, genuine.patient.ins)) == 1
            assert await sandbox_pushes(sandbox.admin, other.patient.ins) == []

            trail = await gw.audit_store.query(AuditQuery(limit=100))
            [record] = [r for r in trail if r.reason == "sender_not_allowed"]
            assert record.actor == f"cert:{INTRUDER_CN}" and record.row_id == rejected.id
            assert GENUINE_SENDER in record.detail and genuine.control_id in record.detail
            assert other.patient.ins not in repr(record)
            sample = gw.metrics.registry.get_sample_value
            labels = {"channel": "mllp", "reason": "sender_not_allowed"}
            assert sample("passerelle_intake_rejections_total", labels) == 1.0
            assert sample("passerelle_acks_total", {"code": "AR"}) == 1.0


async def test_a_certificate_without_binding_may_send_nothing(tmp_path: Path, pki: Pki) -> None:
    tls = pki.tls_settings()
    tls["bindings"] = {INTRUDER_CN: ["OTHER-APP^*"]}  # the genuine certificate is allowed in, bound to nothing
    [sample] = generate_samples(1, seed=13, now=datetime.now(UTC).replace(microsecond=0))
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir", **{"mllp.tls": tls}) as (gw, _):
        assert gw.mllp is not None
        [reply] = await send_files("127.0.0.1", gw.mllp.port, [("s", sample.raw)], ssl_context=pki.client(pki.genuine))
        assert reply.code == "AR"
        [row] = await gw.journal.find(Query(limit=10))
        assert row.state is State.REJECTED and row.dedup_key == ""
