"""End-to-end benchmark: does delivery keep up with intake?

Each scenario starts a space and the gateway (``passerelle run``, default settings) in their own
processes, sends synthetic reports (volet ORU^R01 with an embedded CDA, about 9.6 KB, several per
patient) over 8 MLLP connections, and waits until the space has stored every document. It counts
what the space stored and in what order per patient, and reports:

* accepted msg/s: reports / time from the first report sent to the last ACK received;
* delivered docs/s: documents / time from the first report sent to the last document stored (the
  backlog left when intake ends is included);
* ACK latency p50/p99; the gateway's CPU time per delivered document (its process CPU time, intake
  included, over the run, divided by the documents) and the space's; the gateway's peak RSS.

Scenarios: the sandbox as the space; the sandbox injecting 250 ms of latency on every call; the
minimal space of :mod:`benchmarks.space_ceiling` (the gateway's own ceiling, apart from a space's
cost) beside a bare client pushing ready-made bundles to it (what one core can push); and a backlog
of 100,000 documents drained while the gateway's memory is sampled (:mod:`benchmarks.pipeline_backlog`).

Run: ``python -m benchmarks.pipeline_bench [--quick] [--only NAME] [--no-write]`` (``make bench``
runs it through :mod:`benchmarks.run`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.pipeline_backlog import Backlog, run_backlog
from benchmarks.pipeline_load import Report, make_reports, order_problems, percentile, send_all
from benchmarks.pipeline_procs import Child, read_only, start_ceiling, start_gateway, start_sandbox
from benchmarks.results import RESULTS, publish
from benchmarks.space_ceiling import push_ceiling

BEGIN, STOP = "<!-- pipeline-bench:begin -->", "<!-- pipeline-bench:end -->"
CONNECTIONS = 8


@dataclass(frozen=True)
class Scenario:
    name: str
    space: str  # sandbox | ceiling
    latency_ms: int = 0
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    scenario: Scenario
    reports: int
    accepted_per_s: float
    ack_p50_ms: float
    ack_p99_ms: float
    delivered_per_s: float
    gateway_cpu_ms_per_doc: float
    space_cpu_ms_per_doc: float
    rss_mb_peak: float
    missing: int
    duplicated: int
    disorder: int
    refused: int

    @property
    def ratio(self) -> float:
        return self.delivered_per_s / self.accepted_per_s if self.accepted_per_s else 0.0

    @property
    def exact(self) -> bool:
        return not (self.missing or self.duplicated or self.disorder or self.refused)


SCENARIOS = (
    Scenario("sandbox", "sandbox"),
    Scenario("sandbox-250ms", "sandbox", latency_ms=250),
    Scenario("ceiling", "ceiling"),
)


# --- one scenario ---------------------------------------------------------------------------------


async def _stored(space: Child, kind: str, data_dir: Path) -> tuple[list[str], float]:
    """(unique ids in the order the space stored them, time of the last store)."""
    if kind == "sandbox":
        with contextlib.closing(read_only(data_dir / "sandbox.sqlite3")) as db:
            rows = db.execute("SELECT unique_id, created_at FROM documents ORDER BY rowid").fetchall()
        last = max((datetime.fromisoformat(r[1].replace("Z", "+00:00")).timestamp() for r in rows), default=0.0)
        return [r[0] for r in rows], last
    async with httpx.AsyncClient(timeout=60) as client:
        keys = (await client.get(f"http://127.0.0.1:{space.ports['http']}/keys")).json()
        stats = (await client.get(f"http://127.0.0.1:{space.ports['http']}/stats")).json()
    return list(keys), float(stats["last"])


async def _count(space: Child, kind: str, data_dir: Path) -> int:
    if kind == "sandbox":
        with contextlib.suppress(Exception), contextlib.closing(read_only(data_dir / "sandbox.sqlite3")) as db:
            return int(db.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
        return 0
    async with httpx.AsyncClient(timeout=30) as client:
        return int((await client.get(f"http://127.0.0.1:{space.ports['http']}/stats")).json()["pushes"])


async def _wait_stored(space: Child, kind: str, data_dir: Path, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = await _count(space, kind, data_dir)
        if seen >= count:
            break
        await asyncio.sleep(0.2)
    return seen


async def run_scenario(sc: Scenario, warmup: list[Report], reports: list[Report], tmp: Path) -> Result:
    space_dir = tmp / f"{sc.name}-space"
    space = await (start_sandbox(space_dir) if sc.space == "sandbox" else start_ceiling(space_dir))
    try:
        base = f"http://127.0.0.1:{space.ports['http']}"
        if sc.latency_ms:
            async with httpx.AsyncClient(timeout=10) as client:
                (await client.put(f"{base}/admin/faults", json={"latency_ms": sc.latency_ms})).raise_for_status()
        gateway = await start_gateway(tmp / f"{sc.name}-gateway", f"{base}/fhir", sc.env)
        try:
            await send_all(gateway.ports["mllp"], warmup)
            await _wait_stored(space, sc.space, space_dir, len(warmup), 120)
            return await _measure(sc, space, gateway, space_dir, warmup, reports)
        finally:
            gateway.stop()
    finally:
        space.stop()


async def _measure(
    sc: Scenario, space: Child, gateway: Child, space_dir: Path, warmup: list[Report], reports: list[Report]
) -> Result:
    cpu0, space_cpu0 = gateway.cpu(), space.cpu()
    peak = gateway.rss()
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, gateway.rss())
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    profilers = _profilers(sc, gateway, space)
    intake = await send_all(gateway.ports["mllp"], reports)
    await _wait_stored(space, sc.space, space_dir, len(warmup) + len(reports), 1200)
    cpu, space_cpu = gateway.cpu() - cpu0, space.cpu() - space_cpu0
    done.set()
    await sampler
    for proc in profilers:
        proc.send_signal(2)
        proc.wait()
    stored, last = await _stored(space, sc.space, space_dir)
    missing, duplicated, disorder = order_problems(reports, stored)
    n = len(reports)
    return Result(
        sc, n, n / intake.seconds,
        percentile(intake.latencies, 0.5) * 1000, percentile(intake.latencies, 0.99) * 1000,
        n / max(1e-9, last - intake.started), cpu / n * 1000, space_cpu / n * 1000, peak / 2**20,
        missing, duplicated, disorder, intake.refused,
    )  # fmt: skip


def _profilers(sc: Scenario, gateway: Child, space: Child) -> list[subprocess.Popen[bytes]]:
    """Development aid: ``PIPELINE_PYSPY=<py-spy binary>`` records both processes (collapsed stacks)."""
    spy = os.environ.get("PIPELINE_PYSPY")
    if not spy:
        return []
    out = []
    for child in (gateway, space):
        target = f"{tempfile.gettempdir()}/profile-{sc.name}-{child.name}.txt"
        args = [
            spy,
            "record",
            "--pid",
            str(child.pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--nonblocking",
            "-o",
            target,
        ]
        out.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return out


async def push_rate(tmp: Path, reports: list[Report], connections: int = CONNECTIONS) -> float:
    """What one core can push: a bare asyncio client posting the gateway's own bundles for these
    reports (built beforehand) to the minimal space, ``connections`` requests in flight."""
    from passerelle.adapters.mhd import SpaceSettings
    from passerelle.mappings.document import Provenance
    from passerelle.mappings.hl7v2.documents import map_hl7_documents
    from passerelle.mappings.mhd.bundle import SubmissionInfo, build_provide_bundle

    settings = SpaceSettings()
    now = datetime.now(UTC)
    bodies = []
    for i, report in enumerate(reports):
        prov = Provenance(channel="mllp", sender="bench", message_id=str(i), journal_id=i)
        [doc] = map_hl7_documents(report.frame[1:-2], sender_charset=None, test_environment=True, now=now,
                                  provenance=prov)  # fmt: skip
        submission = SubmissionInfo(
            source_id=settings.source_id, submission_time=doc.creation_time, content_type=settings.content_type
        )
        bodies.append(json.dumps(build_provide_bundle([doc], submission), separators=(",", ":")).encode())
    space = await start_ceiling(tmp / "push-ceiling")
    try:
        return await push_ceiling(space.ports["http"], bodies, connections)
    finally:
        space.stop()


# --- all of it ------------------------------------------------------------------------------------


@dataclass
class Run:
    results: list[Result]
    push_per_s: float | None
    backlog: Backlog | None
    load: str
    started: datetime


def median_result(runs: list[Result]) -> Result:
    """The run with the median delivery rate: one real run, not a mix of several."""
    return sorted(runs, key=lambda r: r.delivered_per_s)[len(runs) // 2]


async def bench(count: int, patients: int, backlog: int, only: list[str] | None, repeats: int = 1) -> Run:
    started = datetime.now(UTC)
    before = os.getloadavg()[0]
    reports = make_reports(count, patients, CONNECTIONS)
    warmup = make_reports(min(200, count), min(40, patients), CONNECTIONS, seed=7)
    results: list[Result] = []
    push, drained = None, None
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        for sc in SCENARIOS:
            if not only or sc.name in only:
                runs = []
                for i in range(repeats):
                    runs.append(await run_scenario(sc, warmup, reports, Path(tmp) / f"run{i}"))
                    print_result(runs[-1])
                results.append(median_result(runs))
        if not only or "push" in only:
            push = await push_rate(Path(tmp), reports[: min(len(reports), 3000)])
            print(f"  bare push to the minimal space: {push:,.0f} req/s", flush=True)
        if backlog and (not only or "backlog" in only):
            drained = await run_backlog(Path(tmp), backlog, max(1, backlog // 5), {})
            print(f"  backlog: {drained}", flush=True)
    return Run(results, push, drained, f"{before:.1f} / {os.getloadavg()[0]:.1f}", started)


def print_result(r: Result) -> None:
    print(
        f"  {r.scenario.name:14s} accepted {r.accepted_per_s:7.0f}/s (ACK p50 {r.ack_p50_ms:.1f} p99 "
        f"{r.ack_p99_ms:.1f} ms)  delivered {r.delivered_per_s:7.0f}/s  gateway CPU {r.gateway_cpu_ms_per_doc:.2f} "
        f"ms/doc  space CPU {r.space_cpu_ms_per_doc:.2f} ms/doc  RSS peak {r.rss_mb_peak:.0f} MB  "
        f"missing {r.missing} dup {r.duplicated} disorder {r.disorder} refused {r.refused}",
        flush=True,
    )


def render(run: Run, count: int, patients: int, repeats: int) -> str:
    lines = [
        BEGIN,
        "## End to end: delivery against intake",
        "",
        f"Measured {run.started:%Y-%m-%d %H:%M} UTC on this machine ({os.cpu_count()} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()}) by `python -m benchmarks.pipeline_bench`; 1-minute load average "
        f"before/after: {run.load} (other work was running on the machine). Gateway, space and senders each in "
        f"their own process; `passerelle run` with default settings (SQLite journal, `worker.concurrency` 128). "
        f"{count:,} reports (volet ORU^R01 with an embedded CDA, about 9.6 KB) for {patients:,} patients, "
        f"{CONNECTIONS} MLLP connections each waiting for every ACK; a patient's reports share a connection. "
        f"Each scenario row: the run with the median delivery rate of {repeats}.",
        "",
        "| scenario | accepted msg/s | delivered docs/s | delivered / accepted | ACK p50 / p99 ms "
        "| gateway CPU ms/doc | space CPU ms/doc | gateway RSS peak MB | stored exactly once, in order |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in run.results:
        check = "yes" if r.exact else f"**no**: {r.missing} missing, {r.duplicated} twice, {r.disorder} out of order"
        lines.append(
            f"| {r.scenario.name} | {r.accepted_per_s:,.0f} | {r.delivered_per_s:,.0f} | {r.ratio:.2f} | "
            f"{r.ack_p50_ms:.1f} / {r.ack_p99_ms:.1f} | {r.gateway_cpu_ms_per_doc:.2f} | {r.space_cpu_ms_per_doc:.2f} | "
            f"{r.rss_mb_peak:.0f} | {check} |"
        )
    if run.push_per_s is not None:
        lines.append(f"| bare push (no gateway) | — | {run.push_per_s:,.0f} | — | — | — | — | — | — |")
    lines += ["", *_legend(run), STOP]
    return "\n".join(lines) + "\n"


def _legend(run: Run) -> list[str]:
    out = [
        "* **sandbox**: the sandbox as the space; **sandbox-250ms**: the same, the sandbox waiting 250 ms before "
        "answering every call; **ceiling**: the minimal space of `benchmarks/space_ceiling.py` (answers a valid "
        "transaction response, stores nothing); **bare push**: a bare asyncio client posting the gateway's own "
        "bundles for the same reports to that minimal space over 8 keep-alive connections (what one core can push).",
        "* delivered docs/s counts from the first report sent to the last document stored, so the backlog left "
        "when intake ends is included; gateway CPU is its process CPU time during the run (intake included) "
        "divided by the documents.",
    ]
    b = run.backlog
    if b is not None:
        out.append(
            f"* **backlog**: {b.documents:,} documents appended by the HL7 intake to the gateway's journal "
            f"({b.fill_seconds:.0f} s), then drained by `passerelle run` into the minimal space at "
            f"{b.drained_per_s:,.0f} docs/s ({b.gateway_cpu_ms_per_doc:.2f} ms CPU/doc, {b.missing} missing): "
            f"resident memory {b.rss_mb_start:.0f} MB after the first 5 %, peak {b.rss_mb_peak:.0f} MB "
            f"(+{b.rss_growth * 100:.0f} %), {b.rss_mb_end:.0f} MB at the end. The journal holds "
            f"{b.journal_bytes_per_message:,.0f} bytes per message while they wait (database + WAL; a message is "
            f"about 9.6 KB) and {b.journal_bytes_after:,.0f} once delivered (payloads stay until retention purges them)."
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_bench")
    parser.add_argument("--quick", action="store_true", help="1,000 reports, a 5,000-document backlog (smoke run)")
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--patients", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each end-to-end scenario (median)")
    parser.add_argument("--backlog", type=int, default=100_000, help="documents of the backlog drain (0: skip)")
    parser.add_argument("--only", action="append", help="sandbox, sandbox-250ms, ceiling, push or backlog")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args(argv)
    count, patients, backlog = (1_000, 200, 5_000) if args.quick else (args.reports, args.patients, args.backlog)
    repeats = 1 if args.quick else args.repeats
    t0 = time.perf_counter()
    run = asyncio.run(bench(count, patients, backlog, args.only, repeats))
    section = render(run, count, patients, repeats)
    publish(section, BEGIN, STOP, write=not args.no_write)
    if not args.no_write:
        print(f"wrote {RESULTS} ({time.perf_counter() - t0:.0f} s)")
    return 0 if all(r.exact for r in run.results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
