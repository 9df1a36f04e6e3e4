"""``/readyz`` with real sockets (ADR 0023): 503 with the reason when the patient space answers only
configuration errors (a base URL the sandbox does not serve: 404; refused credentials: 401), back to 200
once it answers; when free disk space is under ``readiness.min_free_mb``; when the journal's directory
cannot be written. And the space probe of the DMP transport (a TD0.2) against the independent receiver."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from passerelle.adapters.dmp.client import PROBE_PATIENT, DmpSpace
from passerelle.adapters.space import configuration_error
from passerelle.connector.cli.send import send_files
from passerelle.errors import RemoteTransientError
from passerelle.mappings.samples.messages import generate_samples
from passerelle.queue.model import Query, State
from passerelle.sandbox import SandboxConfig
from passerelle.sandbox.testing import SandboxURL, running_sandbox
from tests.integration.test_dmp_space import stack  # noqa: F401 - the DMP stack fixture, reused
from tests.support.asgi_server import serving_in_thread
from tests.support.dmp_receiver import DmpReceiver
from tests.support.gateway import running_gateway

FAST = {"readiness.check_interval_s": 0.1, "readiness.space_probe_interval_s": 0.1}
NOWHERE = "http://127.0.0.1:9/fhir"


async def wait_ready(client: httpx.AsyncClient, *, ready: bool, timeout: float = 20) -> dict[str, Any]:
    """Poll ``/readyz`` until it says ``ready`` (200) or not (503); its last body."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = await client.get("/readyz")
        if (answer.status_code == 200) is ready or asyncio.get_running_loop().time() > deadline:
            assert (answer.status_code == 200) is ready, answer.json()
            assert answer.status_code in (200, 503)
            body: dict[str, Any] = answer.json()
            return body
        await asyncio.sleep(0.05)


async def test_a_space_base_that_answers_404_turns_readyz_503_and_deliveries_wait(
    tmp_path: Path, sandbox: SandboxURL, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = f"{sandbox}/not-the-fhir-base"  # a path the sandbox does not serve
    caplog.set_level(logging.INFO)
    async with running_gateway(tmp_path / "gw", wrong, **FAST, **{"worker.retry.initial_delay_s": 30}) as (
        gateway,
        base,
    ):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            body = await wait_ready(client, ready=False)
            assert body == {
                "status": "not ready",
                "reason": "patient space configuration error since its last success: "
                "patient space URL not found (HTTP 404 without a FHIR answer)",
            }
            [sample] = generate_samples(1, seed=71, now=datetime.now(UTC).replace(microsecond=0))
            [result] = await send_files("127.0.0.1", gateway.mllp.port, [(sample.name, sample.raw)])  # type: ignore[union-attr]
            assert result.code == "AA"  # intake goes on: the journal keeps the message
            row = await _settled_once(gateway)
            assert row.state is State.RETRY and "HTTP 404" in row.detail  # waits for a fix, never refused
            metrics = (await client.get("/metrics")).text
    assert 'passerelle_space_configuration_errors_total{kind="endpoint"}' in metrics
    assert 'passerelle_not_ready{check="space"} 1.0' in metrics
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and "configuration error" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]  # once, however many probes and deliveries


async def _settled_once(gateway: Any, timeout: float = 20) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        rows = await gateway.journal.find(Query(limit=10))
        if rows and rows[0].state is not State.ACCEPTED:
            return rows[0]
        await asyncio.sleep(0.05)
    raise AssertionError("the row was never tried")


@pytest.fixture
def token_server() -> Iterator[tuple[str, dict[str, str]]]:
    """An OAuth2 token endpoint on a real socket; the token it grants is ``state["token"]``."""
    state = {"token": "stale-token"}
    app = FastAPI()

    @app.post("/token")
    async def token() -> JSONResponse:
        return JSONResponse({"access_token": state["token"], "token_type": "Bearer", "expires_in": 3600})

    with serving_in_thread(app) as port:
        yield f"http://127.0.0.1:{port}/token", state


async def test_a_space_refusing_our_credentials_turns_readyz_503_until_it_answers(
    tmp_path: Path, token_server: tuple[str, dict[str, str]]
) -> None:
    token_url, grants = token_server
    (tmp_path / "space-token").write_text("right-token\n")
    (tmp_path / "client-secret").write_text("s3cret\n")
    config = SandboxConfig(data_dir=tmp_path / "sandbox", require_token_file=tmp_path / "space-token")
    auth = {"space.auth": "oauth2", "space.token_url": token_url, "space.client_id": "passerelle",
            "space.client_secret_file": tmp_path / "client-secret"}  # fmt: skip
    async with (
        running_sandbox(config) as sandbox,
        running_gateway(tmp_path / "gw", sandbox.fhir, **FAST, **auth) as (
            _gateway,
            base,
        ),
    ):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            body = await wait_ready(client, ready=False)
            assert body["reason"] == (
                "patient space configuration error since its last success: "
                "patient space refused our credentials (HTTP 401)"
            )
            grants["token"] = "right-token"  # the operator fixes the space's side
            assert await wait_ready(client, ready=True) == {"status": "ready"}
            metrics = (await client.get("/metrics")).text
    assert 'passerelle_space_configuration_errors_total{kind="credentials"}' in metrics
    assert 'passerelle_space_calls_total{operation="probe",outcome="ok",transport="mhd"}' in metrics
    assert 'passerelle_not_ready{check="space"} 0.0' in metrics


async def test_the_sandbox_serves_its_capability_statement(sandbox: SandboxURL, tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "gw", sandbox.fhir, **FAST) as (gateway, base):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert await wait_ready(client, ready=True) == {"status": "ready"}
        assert await gateway.space.probe() == "CapabilityStatement (FHIR 4.0.1)"  # type: ignore[attr-defined]


async def test_free_disk_space_under_the_threshold_turns_readyz_503(tmp_path: Path) -> None:
    huge = 1024 * 1024 * 1024  # MiB: a petabyte, more than any test machine has free
    async with running_gateway(tmp_path, NOWHERE, **{"readiness.min_free_mb": huge}) as (_gateway, base):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            body = await wait_ready(client, ready=False)
            metrics = (await client.get("/metrics")).text
    assert body["reason"].startswith(f"free disk space under {tmp_path} is ")
    assert body["reason"].endswith(f" MiB, below readiness.min_free_mb ({huge})")
    assert 'passerelle_not_ready{check="disk"} 1.0' in metrics
    assert "passerelle_data_dir_free_bytes " in metrics


async def test_a_journal_directory_that_cannot_be_written_turns_readyz_503_until_it_can(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_gateway(data, NOWHERE, **FAST) as (_gateway, base):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            await wait_ready(client, ready=True)
            data.rename(tmp_path / "elsewhere")  # e.g. a volume unmounted under the running gateway
            try:
                body = await wait_ready(client, ready=False)
            finally:
                (tmp_path / "elsewhere").rename(data)
            assert body["reason"] == (
                "journal not writable: cannot write in the journal's directory (No such file or directory)"
            )
            assert await wait_ready(client, ready=True) == {"status": "ready"}


@pytest.mark.corpus
async def test_the_dmp_probe_is_a_td02_that_names_no_real_patient(stack: tuple[DmpReceiver, DmpSpace]) -> None:  # noqa: F811
    receiver, space = stack
    assert (await space.probe()).startswith("TD0.2 answered")
    assert receiver.transactions() == ["TD0.2"] and receiver.problems == []
    assert PROBE_PATIENT.ins_oid == "1.2.250.1.213.1.4.10"  # the ANS test authority: no real person
    receiver.unknown.add(PROBE_PATIENT.ins)  # "no DMP for this INS" is an answer too: the DMP read us
    assert (await space.probe()).startswith("TD0.2 answered")
    # space.url set to a path the receiver does not serve (the same client, its endpoints moved)
    space.requests.urls = {name: url.replace("/si-dmp-server/", "/wrong/") for name, url in space.requests.urls.items()}
    with pytest.raises(RemoteTransientError) as missing:
        await space.probe()
    assert configuration_error(missing.value) == "endpoint"
