"""End-to-end fixtures: the real sandbox over HTTP and the gateway as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from passerelle.mappings.samples.messages import Sample
from passerelle.sandbox.bundle import TEST_INS_SYSTEM
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import SandboxURL, running_sandbox_sync
from tests.support.waiting import poll_sync


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxURL]:
    with running_sandbox_sync(SandboxConfig(data_dir=tmp_path / "sandbox")) as url:
        yield url


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    mllp_port: int
    http_port: int

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_gateway(data_dir: Path, space_url: str, extra_env: dict[str, str] | None = None) -> GatewayProcess:
    """``passerelle run`` as a child process on free ports; returns once both listeners are bound."""
    ports_file = data_dir / "run" / "ports.json"
    ports_file.parent.mkdir(parents=True, exist_ok=True)
    ports_file.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PASSERELLE__WORKER__POLL_INTERVAL_S": "0.05",
        **(extra_env or {}),
    }
    log = (data_dir / "gateway.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "passerelle", "run", "--data-dir", str(data_dir), "--mllp-port", "0",
         "--http-port", "0", "--space-url", space_url],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}; see {data_dir / 'gateway.log'}")
        if ports_file.exists():
            ports = json.loads(ports_file.read_text())
            if ports.get("http") and ports.get("mllp") and ports.get("pid") == proc.pid:
                return GatewayProcess(proc, data_dir, ports["mllp"], ports["http"])
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("gateway did not start in 30 s")


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[object]:
    started: list[GatewayProcess] = []

    def factory(space_url: str, extra_env: dict[str, str] | None = None) -> GatewayProcess:
        gw = start_gateway(tmp_path / "gateway", space_url, extra_env)
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        gw.stop()


def documents_for(sandbox_url: str, ins: str, *, actor: str = "professional:test") -> list[dict[str, object]]:
    resp = httpx.get(
        f"{sandbox_url}/fhir/DocumentReference",
        params={"patient.identifier": f"{TEST_INS_SYSTEM}|{ins}", "_count": 100},
        headers={"X-Actor": actor},
        timeout=10,
    )
    resp.raise_for_status()
    return [e["resource"] for e in resp.json().get("entry", [])]


def wait_all_delivered(sandbox_url: str, samples: Sequence[Sample], timeout: float = 90.0) -> None:
    """Wait until every sample's patient has a document in the space; fails naming how many never came."""
    missing = list(samples)

    def still_missing() -> list[Sample]:
        missing[:] = [s for s in missing if not documents_for(sandbox_url, s.patient.ins)]
        return missing

    poll_sync(still_missing, lambda left: not left, timeout, interval=0.3)
    assert not missing, f"{len(missing)} acknowledged messages were never delivered"
