"""Backlog drain of the end-to-end benchmark: does the gateway's memory stay flat while a large
backlog drains, and what does the journal hold per message?

The journal is filled first, as the intake fills it (the real :class:`Hl7Intake` appending to the
gateway's own SQLite file, in batches, several reports per patient), then ``passerelle run`` starts
on that data directory against the minimal space of :mod:`benchmarks.space_ceiling` and drains it
while its resident memory is sampled every second.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.pipeline_procs import Child, file_bytes, start_ceiling, start_gateway


@dataclass
class Backlog:
    documents: int
    fill_seconds: float
    journal_bytes_per_message: float  # database + WAL, all rows pending
    journal_bytes_after: float  # the same once every row is delivered
    drained_per_s: float
    rss_mb_start: float  # after the first 5 % drained (imports, caches and pools warm)
    rss_mb_peak: float
    rss_mb_end: float
    gateway_cpu_ms_per_doc: float
    missing: int

    @property
    def rss_growth(self) -> float:
        """How much the peak rose above the start, as a fraction of the start."""
        return self.rss_mb_peak / self.rss_mb_start - 1 if self.rss_mb_start else 0.0


async def fill(data_dir: Path, count: int, patients: int, seed: int = 99) -> float:
    """Append ``count`` reports to the gateway's journal through the HL7 intake; returns seconds."""
    from passerelle.connector.intake.hl7 import Hl7Intake, Hl7IntakeSettings
    from passerelle.mappings.samples.messages import build_oru, root_only_oid, synthetic_patient
    from passerelle.queue.sqlite import SQLiteJournal

    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    people = [synthetic_patient(rng, i) for i in range(patients)]
    journal = SQLiteJournal(data_dir / "journal.sqlite3")
    await journal.open()
    started = time.perf_counter()
    try:
        intake = Hl7Intake(journal.append, Hl7IntakeSettings(test_environment=True))
        for start in range(0, count, 256):
            batch = []
            for n in range(start, min(count, start + 256)):
                doc_id = root_only_oid(rng)
                raw, _ = build_oru(now=now, control_id=f"K{n:08d}", patient=people[n % patients], document_id=doc_id,
                                   set_id=doc_id)  # fmt: skip
                batch.append((raw, "bench"))
            replies = await intake.handle_batch(batch)
            if any(r is None or b"MSA|AA" not in r for r in replies):
                raise RuntimeError("the intake refused a benchmark report")
    finally:
        await journal.close()
    return time.perf_counter() - started


async def drain(data_dir: Path, space: Child, count: int, env: dict[str, str]) -> tuple[float, list[int], float, int]:
    """Run the gateway until the space got ``count`` pushes; (seconds, RSS samples, CPU s, distinct
    documents the space received)."""
    stats_url = f"http://127.0.0.1:{space.ports['http']}/stats"
    gateway = await start_gateway(data_dir, f"http://127.0.0.1:{space.ports['http']}/fhir", env)
    samples: list[int] = []
    try:
        cpu0, started = gateway.cpu(), time.perf_counter()
        pushes = 0
        async with httpx.AsyncClient(timeout=30) as client:
            deadline = time.monotonic() + 3600
            while pushes < count and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                samples.append(gateway.rss())
                pushes = int((await client.get(stats_url)).json()["pushes"])
            seconds, cpu = time.perf_counter() - started, gateway.cpu() - cpu0
            keys = (await client.get(f"http://127.0.0.1:{space.ports['http']}/keys")).json()
        return seconds, samples, cpu, len(set(keys))
    finally:
        gateway.stop()


async def run_backlog(tmp: Path, count: int, patients: int, env: dict[str, str]) -> Backlog:
    data_dir = tmp / "backlog-gateway"
    data_dir.mkdir(parents=True, exist_ok=True)
    fill_seconds = await fill(data_dir, count, patients)
    before = file_bytes(data_dir / "journal.sqlite3") / count
    space = await start_ceiling(tmp / "backlog-space")
    try:
        seconds, rss, cpu, pushes = await drain(data_dir, space, count, env)
    finally:
        space.stop()
    warm = rss[max(1, len(rss) // 20) :] or rss
    return Backlog(
        documents=count,
        fill_seconds=fill_seconds,
        journal_bytes_per_message=before,
        journal_bytes_after=file_bytes(data_dir / "journal.sqlite3") / count,
        drained_per_s=pushes / seconds,
        rss_mb_start=warm[0] / 2**20,
        rss_mb_peak=max(warm) / 2**20,
        rss_mb_end=warm[-1] / 2**20,
        gateway_cpu_ms_per_doc=cpu / max(1, pushes) * 1000,
        missing=max(0, count - pushes),
    )
