"""MLLP intake benchmark: what durable, checked ACKs cost against two baselines, on this machine.

Servers (each in its own process, so the load generator does not share its core):

* ``raw``     — a bare asyncio server that reads to ``FS CR`` and answers a fixed ACK: the ceiling;
* ``python-hl7`` — python-hl7's asyncio MLLP server (``hl7.mllp.start_hl7_server``) answering
  ``message.create_ack()``: parses, does not store;
* ``passerelle`` — :class:`passerelle.connector.listeners.mllp.MllpServer` with the real
  :class:`passerelle.connector.intake.hl7.Hl7Intake` and a :class:`passerelle.queue.sqlite.SQLiteJournal`
  (WAL, ``synchronous=FULL``): decode, classify, durable commit, then the ACK.

Load: our own asyncio client on 127.0.0.1, each connection sends one message and waits for its ACK
(how senders behave), for ~2 KB lab results (ORU^R01 with numeric OBX) and ~60 KB messages with an
embedded CDA document, at 1 and 8 connections. Each cell runs ``repeats`` times, bounded by a message
count and a duration; we report the medians of messages/s and ACK latency p50/p99.

Run: ``python -m benchmarks.run`` (or ``python -m benchmarks.mllp_bench [--quick]``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.results import RESULTS, publish
from passerelle.mappings.hl7v2.mllp import END_BLOCK, frame

NOW = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
SERVERS = ("raw", "python-hl7", "transport", "passerelle")
SIZES = ("lab-2KB", "doc-60KB")
CONNECTIONS = ("1", "8", "1w32")
BEGIN, STOP = "<!-- mllp-bench:begin -->", "<!-- mllp-bench:end -->"


# --- messages -----------------------------------------------------------------------------------


def templates() -> dict[str, tuple[bytes, str]]:
    """Message templates and the control id to replace in each (every sent message gets its own)."""
    from passerelle.mappings.samples.messages import build_oru, build_sample_cda, generate_samples, root_only_oid

    [sample] = generate_samples(1, seed=42, now=NOW)
    segs = [s for s in sample.raw.split(b"\r") if s]
    # ~2 KB lab results: no CI-SIS profile in MSH-21, no document, numeric OBX.
    lab = [s for s in segs if not s.startswith(b"OBX")]
    lab[0] = lab[0].replace(b"|||2.1^CISIS_CDA_HL7_V2", b"")
    obr = next(i for i, s in enumerate(lab) if s.startswith(b"OBR"))
    obx = [
        b"OBX|%d|NM|%d-0^Analyte %d^LN||%d.%d|mmol/L^mmol/L^UCUM|3.5-5.1|N|||F|||20261122040000"
        % (i + 1, 1000 + i, i, 4 + i % 3, i % 10)
        for i in range(14)
    ]
    lab_raw = b"\r".join([*lab[: obr + 1], *obx, *lab[obr + 1 :]]) + b"\r"
    # ~60 KB: the same volet ORU with a larger embedded CDA (a long narrative, still well-formed XML).
    rng = random.Random(7)
    cda = build_sample_cda(
        now=NOW, patient=sample.patient, document_id=root_only_oid(rng), set_id=root_only_oid(rng), sender=None
    )
    pad = base64.b64encode(os.urandom(32 * 1024)).decode("ascii")
    cda = cda.replace(b"</ClinicalDocument>", f"<!-- {pad} --></ClinicalDocument>".encode())
    doc_raw, _ = build_oru(
        now=NOW,
        control_id=sample.control_id,
        patient=sample.patient,
        document_id=root_only_oid(rng),
        set_id=root_only_oid(rng),
        cda=cda,
    )
    return {"lab-2KB": (lab_raw, sample.control_id), "doc-60KB": (doc_raw, sample.control_id)}


def make_messages(template: bytes, control_id: str, prefix: str, count: int) -> list[bytes]:
    old = control_id.encode()
    width = len(old)
    out = []
    for i in range(count):
        new = f"{prefix}{i:0{width - len(prefix)}d}".encode()[-width:] if len(prefix) < width else b""
        assert len(new) == width
        out.append(frame(template.replace(old, new)))
    return out


# --- servers (run in a child process) ------------------------------------------------------------


FIXED_ACK = frame(b"MSH|^~\\&|GW|F|LAB|F|20260101||ACK^R01^ACK|1|P|2.5\rMSA|AA|0\r")


async def serve_raw() -> asyncio.AbstractServer:
    async def conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await r.readuntil(END_BLOCK)
                w.write(FIXED_ACK)
                await w.drain()
        w.close()

    return await asyncio.start_server(conn, "127.0.0.1", 0, limit=1 << 20)


async def serve_python_hl7() -> asyncio.AbstractServer:
    from hl7.mllp import start_hl7_server

    async def conn(r, w) -> None:  # type: ignore[no-untyped-def]
        with contextlib.suppress(Exception):  # a baseline: any failure just ends the connection
            while not r.at_eof():
                message = await r.readmessage()
                w.writemessage(message.create_ack())
                await w.drain()
        w.close()

    # The samples declare MSH-18 UNICODE UTF-8; python-hl7 decodes as ASCII unless told.
    return await start_hl7_server(conn, "127.0.0.1", 0, limit=1 << 20, encoding="utf-8")  # type: ignore[no-any-return]


async def serve_passerelle(tmp: Path) -> tuple[object, int, object]:
    from passerelle.connector.intake.hl7 import Hl7Intake, Hl7IntakeSettings
    from passerelle.connector.listeners.mllp import MllpServer, MllpSettings
    from passerelle.queue.sqlite import SQLiteJournal

    journal = SQLiteJournal(tmp / "journal.sqlite3")
    await journal.open()
    intake = Hl7Intake(journal.append, Hl7IntakeSettings(test_environment=True))
    server = MllpServer(MllpSettings(port=0, max_connections_per_source=64), intake, oversize_handler=intake)
    await server.start()
    return server, server.port, journal


class FixedAck:
    """Handler answering a fixed AA echoing nothing: isolates the listener's own cost."""

    async def handle(self, payload: bytes, peer: str, principal: object = None) -> bytes | None:
        return FIXED_ACK[1:-2]

    async def handle_batch(self, items: object, principal: object = None) -> list[bytes | None]:
        return [FIXED_ACK[1:-2] for _ in items]  # type: ignore[attr-defined]


async def serve_transport() -> int:
    from passerelle.connector.listeners.mllp import MllpServer, MllpSettings

    server = MllpServer(MllpSettings(port=0, max_connections_per_source=64), FixedAck())
    await server.start()
    return server.port


async def child(kind: str) -> None:
    import logging

    logging.disable(logging.CRITICAL)  # the benchmark measures the path, not log formatting
    with tempfile.TemporaryDirectory(prefix="mllp-bench-") as tmp:
        if kind == "raw":
            srv = await serve_raw()
            port = srv.sockets[0].getsockname()[1]
        elif kind == "python-hl7":
            srv = await serve_python_hl7()
            port = srv.sockets[0].getsockname()[1]
        elif kind == "transport":
            port = await serve_transport()
        else:
            _server, port, _journal = await serve_passerelle(Path(tmp))
            from passerelle.connector.app import tune_gc

            tune_gc()  # the collector settings of `passerelle run`
        print(port, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # parent closes stdin to stop us


# --- load generator -------------------------------------------------------------------------------


@dataclass
class RunResult:
    messages: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


async def load(port: int, frames: list[bytes], mode: str, max_seconds: float) -> RunResult:
    """``mode``: ``"1"``/``"8"`` connections each waiting for every ACK, or ``"1w32"``: one connection
    keeping up to 32 messages in flight (pipelining; replies must come back in order)."""
    connections, _, window_text = mode.partition("w")
    connections_n, window = int(connections), int(window_text or 1)
    per = len(frames) // connections_n
    latencies: list[float] = []
    deadline = time.perf_counter() + max_seconds
    sent = 0

    async def one(k: int) -> None:
        nonlocal sent
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        mine = frames[k * per : (k + 1) * per]
        in_flight: asyncio.Queue[float] = asyncio.Queue(window)
        done = asyncio.Event()

        async def writer() -> None:
            for f in mine:
                if time.perf_counter() > deadline:
                    break
                await in_flight.put(time.perf_counter())
                w.write(f)
                await w.drain()
            done.set()

        async def reader() -> None:
            nonlocal sent
            while not (done.is_set() and in_flight.empty()):
                if in_flight.empty():
                    await asyncio.sleep(0)
                    continue
                reply = await r.readuntil(END_BLOCK)
                t0 = in_flight.get_nowait()
                latencies.append(time.perf_counter() - t0)
                if b"MSA|A" not in reply:
                    raise RuntimeError("unexpected reply")
                sent += 1

        try:
            await asyncio.gather(writer(), reader())
        finally:
            w.close()

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one(k) for k in range(connections_n))), max_seconds + 30)
    return RunResult(sent, time.perf_counter() - start, latencies)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


@dataclass
class Cell:
    server: str
    size: str
    connections: str
    rate: float
    p50_ms: float
    p99_ms: float
    messages: int


async def start_child(kind: str) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.mllp_bench",
        "--serve",
        kind,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    return proc, int(line)


async def stop_child(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def bench(repeats: int, count: int, max_seconds: float) -> list[Cell]:
    """All servers run at once (idle ones cost nothing); every repeat runs each server back to back, so
    background load on the machine hits all of them alike."""
    tpl = templates()
    cells: list[Cell] = []
    run_no = 0
    children = {kind: await start_child(kind) for kind in SERVERS}
    try:
        for size in SIZES:
            template, ctrl = tpl[size]
            for _kind, (_proc, port) in children.items():  # warm-up: imports, caches, journal file growth
                await load(port, make_messages(template, ctrl, f"W{run_no:03d}", 40), "1", 5)
                run_no += 1
            for conns in CONNECTIONS:
                samples: dict[str, list[RunResult]] = {kind: [] for kind in SERVERS}
                for _ in range(repeats):
                    for kind, (_proc, port) in children.items():
                        frames = make_messages(template, ctrl, f"R{run_no:03d}", count)
                        run_no += 1
                        samples[kind].append(await load(port, frames, conns, max_seconds))
                for kind, runs in samples.items():
                    cell = Cell(
                        kind,
                        size,
                        conns,
                        statistics.median(r.rate for r in runs),
                        statistics.median(pct(r.latencies, 0.50) * 1000 for r in runs),
                        statistics.median(pct(r.latencies, 0.99) * 1000 for r in runs),
                        sum(r.messages for r in runs),
                    )
                    cells.append(cell)
                    print(
                        f"  {kind:11s} {size:9s} conns={conns}: {cell.rate:8.0f} msg/s  "
                        f"p50 {cell.p50_ms:6.2f} ms  p99 {cell.p99_ms:6.2f} ms  ({cell.messages} msgs)",
                        flush=True,
                    )
    finally:
        for proc, _port in children.values():
            await stop_child(proc)
    return cells


def render(
    cells: list[Cell], repeats: int, count: int, max_seconds: float, sizes: dict[str, int], load_avg: str
) -> str:
    by = {(c.server, c.size, c.connections): c for c in cells}
    lines = [
        BEGIN,
        "## MLLP intake",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this machine ({os.cpu_count()} CPUs, "
        f"{platform.machine()}, Python {platform.python_version()}), loopback, by `python -m benchmarks.run`; "
        f"1-minute load average before/after the run: {load_avg} (other work was running on the machine).",
        f"conns 1 and 8: each connection sends one message and waits for its ACK; 1w32: one connection keeps up "
        f"to 32 messages in flight (pipelining). Each cell: median of {repeats} runs of "
        f"up to {count} messages / {max_seconds:.1f} s. Message sizes: "
        + ", ".join(f"{k} = {v:,} bytes" for k, v in sizes.items())
        + ".",
        "",
        "* **a = raw**: bare asyncio server, fixed ACK, no parsing, no storage (ceiling).",
        "* **b = python-hl7**: `hl7.mllp.start_hl7_server`, parses and answers `create_ack()`, no storage.",
        "* **c = passerelle**: `MllpServer` + real `Hl7Intake` (decode, MSH, volet checks, embedded CDA "
        "well-formedness) + `SQLiteJournal` (WAL, `synchronous=FULL`, group commit): the ACK follows a durable commit.",
        "* **t = passerelle transport only**: `MllpServer` with a fixed-ACK handler (what the listener itself costs).",
        "",
        "| message | conns | a msg/s | b msg/s | c msg/s | t msg/s | c/a | c/b | a p50/p99 ms | b p50/p99 ms "
        "| c p50/p99 ms | t p50/p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        for conns in CONNECTIONS:
            a, b, t, c = (by.get((s, size, conns)) for s in SERVERS)
            if not (a and b and c and t):
                continue
            lines.append(
                f"| {size} | {conns} | {a.rate:,.0f} | {b.rate:,.0f} | {c.rate:,.0f} | {t.rate:,.0f} | "
                f"{c.rate / a.rate:.3f} | {c.rate / b.rate:.2f} | "
                f"{a.p50_ms:.2f} / {a.p99_ms:.2f} | {b.p50_ms:.2f} / {b.p99_ms:.2f} | "
                f"{c.p50_ms:.2f} / {c.p99_ms:.2f} | {t.p50_ms:.2f} / {t.p99_ms:.2f} |"
            )
    lines += [
        "",
        "Reading it: c pays for an fsync'd commit per group of messages plus HL7 decoding; with 8 connections "
        "the journal's group commit shares one fsync among the messages waiting, and the listener hands "
        "frames already buffered on a connection to the intake in one batch. Numbers are for this machine "
        "only; compare ratios, not absolute values, across machines.",
        STOP,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mllp_bench")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="1 repeat, fewer messages (smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(child(args.serve))
        return 0
    repeats, count, max_seconds = (1, 300, 2.0) if args.quick else (3, 2000, 2.5)
    print(f"MLLP benchmark: {len(SERVERS)} servers x {len(SIZES)} sizes x {CONNECTIONS} connections, {repeats} runs")
    t0 = time.perf_counter()
    before = os.getloadavg()[0]
    cells = asyncio.run(bench(repeats, count, max_seconds))
    load_avg = f"{before:.1f} / {os.getloadavg()[0]:.1f}"
    sizes = {k: len(v[0]) for k, v in templates().items()}
    section = render(cells, repeats, count, max_seconds, sizes, load_avg)
    publish(section, BEGIN, STOP, write=not args.no_write)
    if not args.no_write:
        print(f"wrote {RESULTS} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
