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
    assert httpx.get(f"{base}/v1/messages", timeout=5).json() == []
    # The admin API refuses replays when no admin token is configured.
    assert httpx.post(f"{base}/v1/messages/1/replay", timeout=5).status_code == 403
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(30) == 0
    log = (gw.data_dir / "gateway.log").read_text()
    assert '"gateway stopped"' in log  # the lifespan shutdown ran: listeners, worker, clients, journal closed
