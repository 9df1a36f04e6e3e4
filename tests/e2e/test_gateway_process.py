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


def test_logs_carry_no_patient_data(sandbox, gateway_factory) -> None:
    import asyncio
    import time
    from datetime import UTC, datetime

    from passerelle.connector.cli.send import send_files
    from passerelle.mappings.samples.messages import generate_samples
    from tests.e2e.conftest import documents_for

    samples = generate_samples(3, seed=31, now=datetime.now(UTC).replace(microsecond=0))
    gw = gateway_factory(sandbox.fhir, {"PASSERELLE__LOG_LEVEL": "DEBUG"})
    broken = samples[0].raw.replace(b"|P|2.5|", b"|P|9.9|")  # refused at intake: the refusal path logs too
    results = asyncio.run(send_files("127.0.0.1", gw.mllp_port, [(s.name, s.raw) for s in samples] + [("bad", broken)]))
    assert [r.code for r in results] == ["AA", "AA", "AA", "AR"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(documents_for(sandbox, s.patient.ins) for s in samples):
        time.sleep(0.2)
    gw.stop()
    log = (gw.data_dir / "gateway.log").read_text()
    assert "row settled" in log  # the log does describe the work...
    for s in samples:  # ...with identifiers of rows and messages only
        for value in (s.patient.ins, s.patient.family, s.patient.given, s.patient.birth_date, s.patient.ipp):
            assert value not in log, f"patient data in the gateway log: {value[:3]}..."
