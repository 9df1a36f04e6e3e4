"""Interoperability: third-party MLLP clients against our listener on 127.0.0.1:0.

* python-hl7's asyncio MLLP client (``hl7.mllp.open_hl7_connection``) and its ``mllp_send`` script;
* the npm ``node-hl7-client`` (pinned in tests/peers/package-lock.json; ``make node-deps`` installs it).
  The node tests skip only when ``node`` is not installed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import hl7
import pytest
import trustme
from hl7.mllp import open_hl7_connection

from passerelle.connector.listeners.mllp import MllpServer, MllpSettings, frame
from tests.integration.test_mllp_server import FakeIntake, msg

PEERS = Path(__file__).resolve().parent.parent / "peers"


@pytest.fixture
async def server() -> AsyncIterator[MllpServer]:
    srv = MllpServer(MllpSettings(port=0), FakeIntake())
    await srv.start()
    yield srv
    await srv.stop(1)


def to_text(payload: bytes) -> str:
    return payload.decode("ascii")


async def test_python_hl7_client_sequential(server: MllpServer) -> None:
    reader, writer = await open_hl7_connection("127.0.0.1", server.port)
    try:
        for i in range(20):
            writer.writemessage(hl7.parse(to_text(msg(f"PY{i}"))))
            await writer.drain()
            async with asyncio.timeout(5):
                ack = await reader.readmessage()
            assert str(ack.segment("MSA")[1]) == "AA"
            assert str(ack.segment("MSA")[2]) == f"PY{i}"
    finally:
        writer.close()


async def test_python_hl7_client_pipelined(server: MllpServer) -> None:
    reader, writer = await open_hl7_connection("127.0.0.1", server.port)
    try:
        for i in range(50):
            writer.writemessage(hl7.parse(to_text(msg(f"PP{i}"))))
        await writer.drain()
        got = []
        async with asyncio.timeout(10):
            for _ in range(50):
                ack = await reader.readmessage()
                got.append((str(ack.segment("MSA")[1]), str(ack.segment("MSA")[2])))
        assert got == [("AA", f"PP{i}") for i in range(50)]
    finally:
        writer.close()


async def test_mllp_send_console_script(server: MllpServer, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "mllp_send"
    if not script.exists():
        pytest.fail(f"{script} missing: python-hl7 is pinned in requirements/dev.lock")
    f = tmp_path / "m.hl7"
    f.write_bytes(frame(msg("CLI1")) + frame(msg("CLI2")))  # mllp_send reads a framed stream
    proc = await asyncio.create_subprocess_exec(
        str(script), "-p", str(server.port), "-f", str(f), "127.0.0.1", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    text = out.decode().replace("\r", "\n")
    assert "MSA|AA|CLI1" in text
    assert "MSA|AA|CLI2" in text


# --- npm peer ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.skip("node is not installed: the npm HL7 client interoperability test needs it (apt-get install nodejs)")
    if not (PEERS / "node_modules" / "node-hl7-client").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("tests/peers/node_modules missing and npm not found: run `make node-deps`")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=PEERS, check=True, timeout=300
        )  # what `make node-deps` does
    return exe


async def run_node(node: str, port: int, count: int, ca: Path | None = None) -> dict[str, object]:
    args = [node, str(PEERS / "hl7_send.cjs"), "127.0.0.1", str(port), str(count)]
    if ca is not None:
        args.append(str(ca))
    proc = await asyncio.create_subprocess_exec(*args, cwd=PEERS, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    assert proc.returncode == 0, result
    return result


async def test_node_hl7_client(server: MllpServer, node: str) -> None:
    result = await run_node(node, server.port, 25)
    assert result["acks"] == [["AA", f"NODE-{i}"] for i in range(25)]


async def test_node_hl7_client_over_tls(node: str, tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    (tmp_path / "c.pem").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    settings = MllpSettings.model_validate(
        {"port": 0, "tls": {"enabled": True, "cert_file": tmp_path / "c.pem", "key_file": tmp_path / "k.pem"}}
    )
    srv = MllpServer(settings, FakeIntake())
    await srv.start()
    try:
        result = await run_node(node, srv.port, 5, tmp_path / "ca.pem")
        assert result["acks"] == [["AA", f"NODE-{i}"] for i in range(5)]
    finally:
        await srv.stop(1)
