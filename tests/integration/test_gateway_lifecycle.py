"""The gateway's life with real parts: a failed start releases every port and task and exits non-zero
with one line; a background task that dies turns the gateway "not ready" (/readyz 503 with the reason),
is logged and counted, and ``run`` then stops the service with exit code 1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from passerelle.connector.app import build_gateway
from passerelle.connector.lifecycle import StartupError
from passerelle.connector.settings import load_settings

NOWHERE = "http://127.0.0.1:9/fhir"  # never reached: nothing is delivered in these tests


def _settings(data_dir: Path, **overrides: object):  # type: ignore[no-untyped-def]
    values = {"environment": "test", "data_dir": data_dir, "mllp.port": 0, "http.port": 0, "space.url": NOWHERE}
    return load_settings(None, overrides={**values, **overrides})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port someone else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


async def test_failure_starting_the_third_listener_stops_the_others(tmp_path: Path, busy_port: int) -> None:
    mllp, dicom = _free_port(), _free_port()
    settings = _settings(
        tmp_path, **{"mllp.port": mllp, "dicom.enabled": True, "dicom.port": dicom, "http.port": busy_port}
    )
    gateway = build_gateway(settings)
    before = asyncio.all_tasks()
    with pytest.raises(StartupError) as exc:
        await gateway.start()
    assert str(exc.value) == f"http listener: Address already in use (127.0.0.1:{busy_port})"
    # the first two listeners, the worker and the journal were stopped again: ports free, no task left
    assert _can_bind(mllp) and _can_bind(dicom)
    assert gateway.worker.task is None
    assert asyncio.all_tasks() <= before
    assert gateway.supervisor.readiness() == "stopped"
    assert not (tmp_path / "run" / "ports.json").exists()
    await gateway.stop()  # idempotent after a failed start


def test_the_process_exits_non_zero_with_one_line(tmp_path: Path, busy_port: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "passerelle", "run", "--data-dir", str(tmp_path), "--mllp-port", "0",
         "--http-port", str(busy_port), "--space-url", NOWHERE],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PASSERELLE__DICOM__ENABLED": "true",
                                                         "PASSERELLE__DICOM__PORT": "0"},
    )  # fmt: skip
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    plain = [line for line in proc.stderr.splitlines() if not line.startswith("{")]
    assert plain == [f"passerelle: cannot start: http listener: Address already in use (127.0.0.1:{busy_port})"]
    logged = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert all(entry["level"] in ("INFO", "WARNING") for entry in logged), logged  # the unwinding is calm
    assert any(entry["msg"] == "dicom scp: stopped" for entry in logged)


async def test_a_dead_journal_task_turns_the_gateway_not_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = build_gateway(_settings(tmp_path))
    await gateway.start()
    try:
        base = f"http://127.0.0.1:{gateway.http.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert (await client.get("/readyz")).json() == {"status": "ready"}
            [committer] = gateway.journal.background_tasks()
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            await asyncio.sleep(0)
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"status": "not ready", "reason": "journal stopped unexpectedly (cancelled)"}
            metrics = (await client.get("/metrics")).text
        assert 'passerelle_worker_errors_total{stage="supervisor"} 1.0' in metrics
        assert any(
            r.levelno == logging.ERROR and r.getMessage() == "journal stopped unexpectedly (cancelled)"
            for r in caplog.records
        )
        assert gateway.stop_requested.is_set()  # run() stops the service on this
    finally:
        await gateway.stop()


async def test_run_stops_the_service_when_a_task_dies(tmp_path: Path) -> None:
    gateway = build_gateway(_settings(tmp_path))
    running = asyncio.create_task(gateway.run())
    for _ in range(500):
        if gateway.ready or running.done():
            break
        await asyncio.sleep(0.01)
    assert gateway.ready
    http, mllp = gateway.http.port, gateway.mllp.port if gateway.mllp else 0
    assert gateway.worker.task is not None
    gateway.worker.task.cancel()  # the dispatch worker dies
    assert await asyncio.wait_for(running, 30) == 1
    assert _can_bind(http) and _can_bind(mllp)
    assert gateway.supervisor.failure == "dispatch worker stopped unexpectedly (cancelled)"
