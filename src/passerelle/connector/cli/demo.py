"""``passerelle demo``: the whole path on embedded defaults, in one process, for a person to watch.

Sandbox patient space (its own thread and SQLite file) → gateway (MLLP listener, journal, worker, HTTP
API) → synthetic lab reports sent over a real MLLP connection → wait until each is listed in the sandbox
for its patient → summary. Nothing outside the repository is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
import typer

from passerelle.connector.app import Gateway, build_gateway
from passerelle.connector.cli.dmp import demo_overrides, write_demo_pki
from passerelle.connector.cli.send import send_files
from passerelle.connector.files import private_dir, write_private
from passerelle.connector.lifecycle import StartupError
from passerelle.connector.settings import load_settings
from passerelle.mappings.samples.messages import Sample, generate_samples
from passerelle.queue.model import Query, State
from passerelle.sandbox.bundle import TEST_INS_SYSTEM
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox

WAIT_S = 30.0


async def run_demo(*, count: int = 5, keep: bool = False, data_dir: Path | None = None, transport: str = "mhd") -> int:
    """Run the demo; 0 when every report ends delivered and listed in the sandbox, 1 otherwise, 2 on a
    bad option. ``transport`` ``dmp``: a dev PKI in ``<data dir>/pki`` whose CA the sandbox's DMP
    services trust, the gateway speaking SOAP to ``/si-dmp-server/v2/services`` over loopback http."""
    if transport not in ("mhd", "dmp"):
        typer.echo(f"unknown transport {transport!r} (mhd or dmp)", err=True)
        return 2
    with contextlib.ExitStack() as stack:
        root = data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="passerelle-demo-")))
        pki = write_demo_pki(root) if transport == "dmp" else None
        sandbox_config = SandboxConfig(data_dir=root / "sandbox", dmp_ca_file=pki.ca if pki else None)
        async with running_sandbox(sandbox_config) as sandbox_url:
            dmp = demo_overrides(pki, str(sandbox_url)) if pki else {}
            settings = load_settings(
                None,
                overrides={
                    "environment": "test",
                    "data_dir": root / "gateway",
                    "mllp.port": 2575 if keep else 0,
                    "http.port": 8080 if keep else 0,
                    "space.url": f"{sandbox_url}/fhir",
                    "worker.poll_interval_s": 0.1,
                    "http.tokens": [{"name": "demo", "role": "operate", "token_file": _demo_token(root)}],
                    **dmp,
                },
            )
            gateway = build_gateway(settings)
            try:
                await gateway.start()
            except StartupError as exc:
                typer.echo(f"the gateway did not start: {exc}", err=True)
                return 1
            assert gateway.mllp is not None  # enabled by default
            http_port, mllp_port = gateway.http.port, gateway.mllp.port
            typer.echo(f"sandbox patient space  {sandbox_url}/")
            typer.echo(f"gateway MLLP           127.0.0.1:{mllp_port}")
            typer.echo(f"gateway HTTP           http://127.0.0.1:{http_port}/  (/metrics, /v1/messages)")
            try:
                ok = await _exchange(gateway, str(sandbox_url), mllp_port, count, transport)
                if keep and ok:
                    typer.echo("")
                    typer.echo(f"Open {sandbox_url}/ for the patients' spaces, http://127.0.0.1:{http_port}/metrics")
                    typer.echo(f"Console: http://127.0.0.1:{http_port}/ (operate token in {_demo_token_path(root)})")
                    typer.echo("Stack running; press Ctrl-C to stop.")
                    return await gateway.run()
                return 0 if ok else 1
            finally:
                await gateway.stop()


def _demo_token_path(root: Path) -> Path:
    return root / "tokens" / "demo.token"


def _demo_token(root: Path) -> Path:
    """A fresh operate token for the demo's console and API (file 0600; never printed)."""
    path = _demo_token_path(root)
    private_dir(path.parent)
    write_private(path, (secrets.token_urlsafe(32) + "\n").encode())
    return path


async def _in_space(client: httpx.AsyncClient, sample: Sample, transport: str) -> bool:
    """Listed in the patient's space (FHIR search); over DMP, also received through the SOAP services."""
    resp = await client.get(
        "/fhir/DocumentReference",
        params={"patient.identifier": f"{TEST_INS_SYSTEM}|{sample.patient.ins}"},
        headers={"X-Actor": "professional:demo"},
    )
    if resp.status_code != 200 or f"urn:oid:{sample.document_id}" not in resp.text:
        return False
    if transport == "mhd":
        return True
    pushes = await client.get("/admin/pushes", params={"ins": sample.patient.ins})
    return pushes.status_code == 200 and any(
        p["transport"] == transport and p["outcome"] == "accepted" and sample.document_id in p["unique_ids"]
        for p in pushes.json()
    )


async def _exchange(gateway: Gateway, sandbox_url: str, mllp_port: int, count: int, transport: str) -> bool:
    now = datetime.now(UTC).replace(microsecond=0)
    samples = generate_samples(count, random.SystemRandom().randrange(1, 1_000_000), now)
    results = await send_files("127.0.0.1", mllp_port, [(s.name, s.raw) for s in samples])
    typer.echo("")
    for sample, res in zip(samples, results, strict=False):
        typer.echo(f"sent {sample.control_id}  ACK {res.code}")
    acked = {s.control_id for s, r in zip(samples, results, strict=False) if r.code == "AA"}
    found: dict[str, bool] = {}
    deadline = asyncio.get_running_loop().time() + WAIT_S
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=5.0) as client:
        while len(found) < len(acked) and asyncio.get_running_loop().time() < deadline:
            for s in samples:
                if s.control_id in acked and s.control_id not in found and await _in_space(client, s, transport):
                    found[s.control_id] = True
            if len(found) < len(acked):
                await asyncio.sleep(0.3)
    rows = {r.message_id: r for r in await gateway.journal.find(Query(limit=1000))}
    typer.echo("")
    typer.echo(
        f"{'message':14} {'ACK':4} {'patient (test INS)':20} {'document type':24} {'delivery':10} in sandbox ({transport})"
    )
    ok = len(results) == len(samples)
    for sample, res in zip(samples, results, strict=False):
        row = rows.get(sample.control_id)
        state = row.state.value if row else "-"
        listed = "yes" if found.get(sample.control_id) else "no"
        ok = ok and res.code == "AA" and listed == "yes" and state == State.DELIVERED.value
        typer.echo(
            f"{sample.control_id:14} {res.code:4} {sample.patient.ins:20} {'11502-2 CR biologie':24} {state:10} {listed}"
        )
    typer.echo("")
    if transport == "dmp":
        typer.echo(f"each patient's page, {sandbox_url}/patients/<INS>, lists its pushes with transport dmp")
    typer.echo("demo OK: every report acknowledged and delivered" if ok else "demo FAILED: see the table above")
    return ok
