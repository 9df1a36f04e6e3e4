"""End-to-end benchmark: does delivery keep up with intake?

Each scenario starts a space (the sandbox, or the minimal space of :mod:`benchmarks.space_ceiling`)
and the gateway (``passerelle run``) in their own processes, sends synthetic reports over 8 MLLP
connections, and waits until the space has stored every document. It counts what the space stored
and in what order per patient, and reports the intake rate (reports / time to the last ACK), the
delivery rate (documents / time from the first report sent to the last document stored: the backlog
included), ACK latencies, and the gateway's CPU time per delivered document (its process CPU time,
intake included, divided by the documents).

Run: ``python -m benchmarks.pipeline_bench [--quick] [--only NAME] [--no-write]`` (``make bench``
runs it through :mod:`benchmarks.run`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from benchmarks.pipeline_load import Report, make_reports, order_problems, percentile, send_all
from benchmarks.pipeline_procs import Child, read_only, start_ceiling, start_gateway, start_sandbox

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
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


async def _stored(space: Child, kind: str, data_dir: Path) -> tuple[list[str], float]:
    """(unique ids in the order the space stored them, time of the last store)."""
    if kind == "sandbox":
        with contextlib.closing(read_only(data_dir / "sandbox.sqlite3")) as db:
            rows = db.execute("SELECT unique_id, created_at FROM documents ORDER BY rowid").fetchall()
        last = max((datetime.fromisoformat(r[1].replace("Z", "+00:00")).timestamp() for r in rows), default=0.0)
        return [r[0] for r in rows], last
    async with httpx.AsyncClient(timeout=30) as client:
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
    total = len(warmup) + len(reports)
    await _wait_stored(space, sc.space, space_dir, total, 600)
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
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(c.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--nonblocking",
                "-o",
                f"/tmp/profile-{sc.name}-{c.name}.txt",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for c in (gateway, space)
    ]


def scenarios() -> list[Scenario]:
    extra = dict(item.split("=", 1) for item in os.environ.get("PIPELINE_ENV", "").split() if item)
    return [Scenario(s.name, s.space, s.latency_ms, {**s.env, **extra}) for s in _scenarios()]


def _scenarios() -> list[Scenario]:
    return [
        Scenario("sandbox", "sandbox"),
        Scenario("sandbox-250ms", "sandbox", latency_ms=250),
        Scenario("ceiling", "ceiling"),
    ]


def print_result(r: Result) -> None:
    print(
        f"  {r.scenario.name:14s} accepted {r.accepted_per_s:7.0f}/s (ACK p50 {r.ack_p50_ms:.1f} p99 "
        f"{r.ack_p99_ms:.1f} ms)  delivered {r.delivered_per_s:7.0f}/s  gateway CPU {r.gateway_cpu_ms_per_doc:.2f} "
        f"ms/doc  space CPU {r.space_cpu_ms_per_doc:.2f} ms/doc  RSS peak {r.rss_mb_peak:.0f} MB  "
        f"missing {r.missing} dup {r.duplicated} disorder {r.disorder} refused {r.refused}",
        flush=True,
    )


async def bench(count: int, patients: int, repeats: int, only: list[str] | None) -> list[Result]:
    reports = make_reports(count, patients, CONNECTIONS)
    warmup = make_reports(min(200, count), min(50, patients), CONNECTIONS, seed=7)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        for sc in scenarios():
            if only and sc.name not in only:
                continue
            runs = []
            for i in range(repeats):
                runs.append(await run_scenario(sc, warmup, reports, Path(tmp) / str(i)))
                print_result(runs[-1])
            results.append(median_result(runs))
    return results


def median_result(runs: list[Result]) -> Result:
    """The run with the median delivery rate (one real run, not a mix of several)."""
    ordered = sorted(runs, key=lambda r: r.delivered_per_s)
    return ordered[len(ordered) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_bench")
    parser.add_argument("--quick", action="store_true", help="1,000 reports, 1 run each (smoke run)")
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--patients", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", action="append")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    count, patients = (1_000, 200) if args.quick else (args.reports, args.patients)
    before = os.getloadavg()[0]
    results = asyncio.run(bench(count, patients, args.repeats, args.only))
    print(f"load average {before:.1f} / {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs, {platform.machine()}")
    for r in results:
        print_result(r)
    return 0 if all(r.missing == 0 and r.disorder == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
