"""Synthetic reports and the MLLP load of the end-to-end benchmark (:mod:`benchmarks.pipeline_bench`).

Reports are volet ORU^R01 messages with an embedded CDA (about 9.6 KB each), several per patient. A
patient's reports always go through the same connection, one at a time (each connection waits for
the ACK before sending its next message, as senders do), so the order the gateway receives a
patient's reports in is the order they were produced; the benchmark then checks that the space
stored them in that order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from passerelle.mappings.hl7v2.mllp import END_BLOCK, frame


@dataclass(frozen=True, slots=True)
class Report:
    connection: int
    patient: str  # INS
    document_id: str  # the document's unique id (root-only OID)
    frame: bytes  # MLLP-framed message


def make_reports(count: int, patients: int, connections: int, seed: int = 2026) -> list[Report]:
    """``count`` reports for ``patients`` patients, interleaved: round r sends every patient's r-th report,
    patients shuffled in each round."""
    from passerelle.mappings.samples.messages import build_oru, root_only_oid, synthetic_patient

    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    people = [synthetic_patient(rng, i) for i in range(patients)]
    order: list[int] = []
    while len(order) < count:
        round_ = list(range(patients))
        rng.shuffle(round_)
        order += round_
    reports = []
    for n, index in enumerate(order[:count]):
        doc_id = root_only_oid(rng)
        raw, _ = build_oru(now=now, control_id=f"E{seed % 100}{n:07d}", patient=people[index], document_id=doc_id,
                           set_id=doc_id)  # fmt: skip
        reports.append(Report(index % connections, people[index].ins, doc_id, frame(raw)))
    return reports


@dataclass
class Intake:
    """What the senders saw: when they started, when the last ACK came, every ACK's latency."""

    started: float  # time.time()
    finished: float
    latencies: list[float]
    refused: int

    @property
    def seconds(self) -> float:
        return self.finished - self.started


async def send_all(port: int, reports: list[Report]) -> Intake:
    by_connection: dict[int, list[bytes]] = defaultdict(list)
    for report in reports:
        by_connection[report.connection].append(report.frame)
    latencies: list[float] = []
    refused = 0

    async def one(frames: list[bytes]) -> None:
        nonlocal refused
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        try:
            for frame in frames:
                sent = time.perf_counter()
                writer.write(frame)
                await writer.drain()
                reply = await reader.readuntil(END_BLOCK)
                latencies.append(time.perf_counter() - sent)
                if b"MSA|AA" not in reply:
                    refused += 1
        finally:
            writer.close()

    started = time.time()
    await asyncio.gather(*(one(frames) for frames in by_connection.values()))
    return Intake(started, time.time(), latencies, refused)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def order_problems(reports: list[Report], stored: list[str]) -> tuple[int, int, int]:
    """(missing, duplicated, patients out of order) comparing the space's stored unique ids, in the order
    it stored them, with what was sent."""
    expected = {r.document_id: r for r in reports}
    seen: dict[str, int] = defaultdict(int)
    per_patient: dict[str, list[str]] = defaultdict(list)
    for key in stored:
        doc_id = key.removeprefix("urn:oid:")
        seen[doc_id] += 1
        if doc_id in expected and seen[doc_id] == 1:
            per_patient[expected[doc_id].patient].append(doc_id)
    missing = sum(1 for d in expected if not seen.get(d))
    duplicated = sum(1 for n in seen.values() if n > 1)
    sent: dict[str, list[str]] = defaultdict(list)
    for r in reports:
        sent[r.patient].append(r.document_id)
    disorder = sum(1 for p, got in per_patient.items() if got != [d for d in sent[p] if d in set(got)])
    return missing, duplicated, disorder
