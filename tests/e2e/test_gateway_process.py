"""The gateway process: health, readiness and metrics over HTTP, and a clean stop on SIGTERM."""

from __future__ import annotations

import signal

import httpx


def test_health_metrics_and_clean_sigterm(sandbox, gateway_factory) -> None:
    gw = gateway_factory(sandbox.fhir)
    base = f"http://127.0.0.1:{gw.http_port}"
    assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = httpx.get(f"{base}/metrics", timeout=5)
    assert metrics.status_code == 200
    for name in ("passerelle_messages_received_total", "passerelle_acks_total", "passerelle_documents_total",
                 "passerelle_journal_messages", "passerelle_oldest_undelivered_age_seconds"):  # fmt: skip
        assert f"# TYPE {name.removesuffix('_total')}" in metrics.text
    # No token configured: the API is closed (fail closed), not open.
    listed = httpx.get(f"{base}/v1/messages", timeout=5)
    assert listed.status_code == 401 and listed.headers["www-authenticate"].startswith("Bearer")
    assert httpx.post(f"{base}/v1/messages/1/replay", timeout=5).status_code == 401
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(30) == 0
    log = (gw.data_dir / "gateway.log").read_text()
    assert '"gateway stopped"' in log  # the lifespan shutdown ran: listeners, worker, clients, journal closed


def test_logs_metrics_error_bodies_and_audit_text_carry_no_patient_data_nor_secrets(
    sandbox, gateway_factory, tmp_path
) -> None:
    """Deliveries, intake refusals (MLLP and HTTP), API errors and an admin action, at DEBUG: no log line,
    no /metrics label, no HTTP error body and no audit record's free text (reason, detail, actor) carries
    the patients' names, birth dates, INS or IPP, nor the admin token (issue 11, item 11)."""
    import asyncio
    import json
    from datetime import UTC, datetime

    from passerelle.connector.cli.send import send_files
    from passerelle.mappings.samples.messages import generate_samples
    from passerelle.queue.audit import AuditQuery
    from passerelle.queue.audit_sqlite import SQLiteAuditStore
    from tests.e2e.conftest import documents_for
    from tests.support.waiting import poll_sync

    samples = generate_samples(4, seed=31, now=datetime.now(UTC).replace(microsecond=0))
    token = "canary-admin-token-5f1e2d"
    (tmp_path / "admin-token").write_text(token + "\n")
    gw = gateway_factory(
        sandbox.fhir,
        {"PASSERELLE__LOG_LEVEL": "DEBUG", "PASSERELLE__HTTP__ADMIN_TOKEN_FILE": str(tmp_path / "admin-token")},
    )
    broken = samples[0].raw.replace(b"|P|2.5|", b"|P|9.9|")  # refused at intake: the refusal path logs too
    sent = [(s.name, s.raw) for s in samples[:3]] + [("bad", broken)]
    results = asyncio.run(send_files("127.0.0.1", gw.mllp_port, sent))
    assert [r.code for r in results] == ["AA", "AA", "AA", "AR"]
    base = f"http://127.0.0.1:{gw.http_port}"
    cda = samples[3].cda
    ins = samples[3].patient.ins.encode()
    errors = [
        httpx.post(f"{base}/v1/documents", content=cda[: len(cda) // 2], headers={"Content-Type": "application/xml"}),
        httpx.post(f"{base}/v1/documents", content=cda.replace(ins, ins[:-1] + b"X"),
                   headers={"Content-Type": "application/xml"}),  # an INS that is not one
        httpx.post(f"{base}/v1/documents", content=cda, headers={"Content-Type": "text/plain"}),
        httpx.get(f"{base}/v1/messages", params={"limit": samples[3].patient.ins}),
        httpx.get(f"{base}/v1/messages", params={"since": samples[3].patient.birth_date + samples[3].patient.family}),
        httpx.get(f"{base}/v1/messages/999999"),
        httpx.post(f"{base}/v1/replay", json={"dry_run": False, "confirm": True, "patient_id": samples[1].patient.ins},
                   headers={"Authorization": "Bearer not-the-token"}),
        httpx.post(f"{base}/v1/replay", json={"patient_id": samples[1].patient.ins, "limit": "many"},
                   headers={"Authorization": f"Bearer {token}"}),
    ]  # fmt: skip
    assert all(400 <= e.status_code < 500 for e in errors), [e.status_code for e in errors]
    replayed = httpx.post(f"{base}/v1/messages/1/replay", headers={"Authorization": f"Bearer {token}"})
    assert replayed.status_code == 200  # an audited admin action (nothing to replay: delivered)
    poll_sync(lambda: all(documents_for(sandbox, s.patient.ins) for s in samples[:3]), bool, 30)
    metrics = httpx.get(f"{base}/metrics").text
    gw.stop()
    log = (gw.data_dir / "gateway.log").read_text()
    assert "row settled" in log and '"level": "DEBUG"' in log  # the log does describe the work, in detail...
    store = SQLiteAuditStore(gw.data_dir / "journal.sqlite3")
    records = asyncio.run(_audit_records(store, AuditQuery(limit=1000)))
    assert {r.action.value for r in records} >= {"delivery", "consent-decision"}
    free_text = "\n".join(f"{r.reason}\t{r.detail}\t{r.actor}" for r in records)
    places = {"log": log, "metrics": metrics, "audit free text": free_text,
              "error bodies": "\n".join(e.text + json.dumps(dict(e.headers)) for e in errors)}  # fmt: skip
    for s in samples:  # ...with identifiers of rows and messages only
        for value in (s.patient.ins, s.patient.family, s.patient.given, s.patient.birth_date, s.patient.ipp):
            for where, text in places.items():
                assert value not in text, f"patient data in the {where}: {value[:3]}..."
    for where, text in places.items():
        assert token not in text, f"the admin token in the {where}"


async def _audit_records(store, query):
    await store.open()
    try:
        return await store.query(query)
    finally:
        await store.close()
