"""Business acknowledgements: a sender that asked for ACK_RECEPTION gets a ZAM^Z01 on its own MLLP
endpoint (python-hl7's asyncio MLLP server plays the sender), Y when delivered, N with the DMP error
code when refused; the outcome is in the message's journey."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import hl7
import httpx
from hl7.mllp import start_hl7_server

from passerelle.connector.admin.browser import journey
from passerelle.connector.cli.send import send_files
from passerelle.mappings.samples.messages import generate_samples
from passerelle.queue.model import State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import running_gateway, wait_settled


async def test_zam_sent_to_the_sender_for_delivery_and_refusal(tmp_path) -> None:
    received: list[hl7.Message] = []

    async def on_connection(reader, writer) -> None:  # the LIS receiving its business acks
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                received.append(message)
                writer.writemessage(message.create_ack())
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass

    lis = await start_hl7_server(on_connection, "127.0.0.1", 0, encoding="utf-8")
    lis_port = lis.sockets[0].getsockname()[1]
    delivered, refused = generate_samples(2, seed=5, now=datetime.now(UTC).replace(microsecond=0))
    try:
        async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
            async with httpx.AsyncClient(base_url=sandbox.admin) as admin:
                r = await admin.put(f"/patients/{refused.patient.ins}", json={"status": "ACTIF", "opposed": True})
                r.raise_for_status()
            overrides = {"business_ack.senders": {"SIL-SYNTH^LABO-SYNTH": {"host": "127.0.0.1", "port": lis_port}}}
            async with running_gateway(tmp_path / "gw", sandbox.fhir, **overrides) as (gw, _):
                acks = await send_files("127.0.0.1", gw.mllp.port, [(s.name, s.raw) for s in (delivered, refused)])
                assert [a.code for a in acks] == ["AA", "AA"]
                rows = {r.message_id: r for r in await wait_settled(gw, 2)}
                assert rows[delivered.control_id].state is State.DELIVERED
                assert rows[refused.control_id].state is State.REFUSED
                for _ in range(100):
                    if len(received) == 2:
                        break
                    await asyncio.sleep(0.1)
                by_original = {str(m.segment("OBX")[4]): m for m in received}
                ok = by_original[delivered.control_id]
                assert str(ok.segment("MSH")[9]) == "ZAM^Z01^ZAM_Z01"
                assert str(ok.segment("OBX")[5][0][0]) == "Y"
                ko = by_original[refused.control_id]
                assert str(ko.segment("OBX")[5][0][0]) == "N"
                assert str(ko.segment("ERR")[5][0][0]) == "patient_opposed"
                for _ in range(50):
                    story = await journey(gw.journal, rows[delivered.control_id].id)
                    if any(e["kind"] == "zam" and "acknowledged AA" in e["detail"] for e in story["events"]):
                        break
                    await asyncio.sleep(0.1)
                assert any(e["kind"] == "zam" and "acknowledged AA" in e["detail"] for e in story["events"])
    finally:
        lis.close()
        await lis.wait_closed()


async def test_shutdown_waits_for_a_pending_zam(tmp_path) -> None:
    """The gateway's stop waits (bounded) for a ZAM^Z01 still in flight to a real MLLP peer: the peer
    holds its ACK until stop is under way, and its answer still reaches the message's journey."""
    from contextlib import AsyncExitStack

    from passerelle.queue.sqlite import SQLiteJournal

    got_zam = asyncio.Event()
    release = asyncio.Event()

    async def slow_lis(reader, writer) -> None:  # receives the ZAM, answers only when released
        try:
            message = await reader.readmessage()
            got_zam.set()
            await release.wait()
            writer.writemessage(message.create_ack())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    lis = await start_hl7_server(slow_lis, "127.0.0.1", 0, encoding="utf-8")
    lis_port = lis.sockets[0].getsockname()[1]
    [sample] = generate_samples(1, seed=9, now=datetime.now(UTC).replace(microsecond=0))
    try:
        async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
            overrides = {"business_ack.senders": {"SIL-SYNTH": {"host": "127.0.0.1", "port": lis_port}}}
            stack = AsyncExitStack()
            gw, _ = await stack.enter_async_context(running_gateway(tmp_path / "gw", sandbox.fhir, **overrides))
            try:
                acks = await send_files("127.0.0.1", gw.mllp.port, [(sample.name, sample.raw)])
                assert [a.code for a in acks] == ["AA"]
                [row] = await wait_settled(gw, 1)
                assert row.state is State.DELIVERED
                await asyncio.wait_for(got_zam.wait(), 30)
            except BaseException:
                await stack.aclose()
                raise
            stopping = asyncio.create_task(stack.aclose())
            await asyncio.wait([stopping], timeout=1.0)  # today's code is long done by now
            release.set()
            await stopping
        journal = SQLiteJournal(tmp_path / "gw" / "journal.sqlite3")
        await journal.open()
        try:
            events = await journal.events(row.id)
        finally:
            await journal.close()
        assert any(e.kind == "zam" and "acknowledged AA" in e.detail for e in events), [
            (e.kind, e.detail) for e in events
        ]
    finally:
        lis.close()
        await lis.wait_closed()
