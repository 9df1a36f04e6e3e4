"""Connection hygiene and storage bounds of the MLLP listener on the real gateway (issue 11 items 5 and
6; ADR 0024): real sockets, the real SQLite journal, the real sandbox over HTTP, default limits.

* 200 idle connections (from 20 loopback source addresses, 10 each: the default per-source cap is 20)
  fill the default table of 200; a real sender then connects, gets its AA and its document is
  delivered while the idle sockets are still open: the listener closed the one idle the longest.
* A stream of rejected frames does not grow the journal with their size: 50 junk frames of 900 KiB
  (no readable header) keep 1 KiB each, HL7 messages of 900 KiB refused with a readable header keep
  64 KiB each (docs/journal.md, "Storage bounds"), and 50 frames over the frame limit keep only
  their first segment.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from passerelle.connector.cli.send import send_files
from passerelle.mappings.samples.messages import generate_samples
from passerelle.queue.model import Query, State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import running_gateway, sandbox_pushes, wait_settled
from tests.support.mllp_peer import exchange

KIB = 1024


async def open_idle(port: int, count: int, per_source: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``count`` connections that never send, ``per_source`` from each of 127.0.0.2, 127.0.0.3, ..."""
    conns = []
    for i in range(count):
        source = f"127.0.0.{2 + i // per_source}"
        conns.append(await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)))
    return conns


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(0.2):
            return await reader.read(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_200_idle_connections_do_not_lock_out_a_sender(tmp_path: Path) -> None:
    [sample] = generate_samples(1, seed=21, now=datetime.now(UTC).replace(microsecond=0))
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir) as (gw, _):
            assert gw.mllp is not None
            assert gw.settings.mllp.max_connections == 200  # the defaults, as shipped
            assert gw.settings.mllp.max_connections_per_source == 20
            idle = await open_idle(gw.mllp.port, 200, per_source=10)
            try:
                async with asyncio.timeout(30):
                    while gw.mllp.connection_count < 200:
                        await asyncio.sleep(0.01)

                async with asyncio.timeout(60):  # generous: no timing is asserted
                    [ack] = await send_files("127.0.0.1", gw.mllp.port, [("sender", sample.raw)])
                assert (ack.code, ack.control_id) == ("AA", sample.control_id)

                states = list(await asyncio.gather(*(closed_by_server(r) for r, _ in idle)))
                assert states.count(True) == 1 and states[0]  # the one idle the longest: the first opened
                assert gw.mllp.connection_count == 199  # the sender has gone; the other idle ones stay
                [row] = await wait_settled(gw, 1)
                assert row.state is State.DELIVERED
                assert len(await sandbox_pushes(sandbox.admin, sample.patient.ins)) == 1
                sample_value = gw.metrics.registry.get_sample_value
                assert sample_value("passerelle_mllp_connections_total", {"outcome": "closed_evicted"}) == 1.0
                assert sample_value("passerelle_mllp_connections_total", {"outcome": "refused_max_connections"}) is None
            finally:
                for _, writer in idle:
                    writer.close()


def journal_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("journal.sqlite3*"))


async def test_rejected_frames_do_not_grow_the_journal_with_their_size(tmp_path: Path) -> None:
    junk = [(b"%02d this is not HL7 " % i * 50_000)[: 900 * KIB] for i in range(50)]
    msh = b"MSH|^~\\&|SIL|LABO|GW|GHT|20260101000000||ORU^R01^ORU_R01|BIG%03d|P|2.5\r"
    oversized = [msh % i + b"OBX|" + b"x" * (900 * KIB) for i in range(50)]
    bad = b"MSH|^~\\&|SIL|LABO|GW|GHT|20260101000000||ORU^R01^ORU_R01|BAD%03d|P|9.9\r"  # unknown version
    readable = [bad % i + b"OBX|" + b"x" * (900 * KIB) for i in range(3)]
    data_dir = tmp_path / "gw"
    async with running_gateway(data_dir, "http://127.0.0.1:9/fhir"):
        pass  # the journal file, empty; sizes are taken with the gateway stopped (WAL checkpointed)
    empty = journal_bytes(data_dir)
    async with running_gateway(data_dir, "http://127.0.0.1:9/fhir") as (gw, _):  # 16 MiB frames
        assert gw.mllp is not None
        replies = await exchange(gw.mllp.port, junk, timeout=60)
        assert all(b"MSA|AE||" in r for r in replies) and len(replies) == 50
        rows = await gw.journal.find(Query(limit=100))
        assert len(rows) == 50 and {r.state for r in rows} == {State.REJECTED}
        assert all(r.size == 900 * KIB and r.truncated and len(r.raw) == KIB for r in rows)
    after_junk = journal_bytes(data_dir)
    # 1 KiB kept per frame (50 KiB for 50), plus row and page overhead; 45 MiB were sent.
    assert after_junk - empty < 300 * KIB, after_junk - empty

    async with running_gateway(data_dir, "http://127.0.0.1:9/fhir", **{"mllp.max_frame_bytes": 512 * KIB}) as (gw, _):
        assert gw.mllp is not None
        replies = await exchange(gw.mllp.port, oversized, timeout=60)
        assert all(b"MSA|AE|BIG" in r and b"over the size limit" in r for r in replies)
        rows = [r for r in await gw.journal.find(Query(limit=200)) if r.message_id.startswith("BIG")]
        assert len(rows) == 50 and all(len(r.raw) < 100 for r in rows)
    after_oversized = journal_bytes(data_dir)
    assert after_oversized - after_junk < 300 * KIB  # the first segment of each: a few KiB in all

    async with running_gateway(data_dir, "http://127.0.0.1:9/fhir") as (gw, _):  # a readable header: 64 KiB kept
        assert gw.mllp is not None
        replies = await exchange(gw.mllp.port, readable, timeout=60)
        assert all(b"MSA|AR|BAD" in r or b"MSA|AE|BAD" in r for r in replies) and len(replies) == 3
        rows = [r for r in await gw.journal.find(Query(limit=300)) if r.message_id.startswith("BAD")]
        assert len(rows) == 3 and all(r.size > 900 * KIB and len(r.raw) == 64 * KIB for r in rows)
    print(
        f"journal growth: {after_junk - empty} bytes for 50 junk frames of 900 KiB, "
        f"{after_oversized - after_junk} bytes for 50 oversized frames of 900 KiB"
    )
