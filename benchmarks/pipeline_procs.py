"""The processes of the end-to-end benchmark (:mod:`benchmarks.pipeline_bench`) and how they are watched.

Each part runs in its own process, as on a site: the sandbox (``passerelle sandbox``), the gateway
(``passerelle run``) and, for the ceiling rows, the minimal space of :mod:`benchmarks.space_ceiling`.
CPU time and resident memory are read from ``/proc`` (Linux), so what the gateway costs is measured
apart from the load generator and the space.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """A child process and what the benchmark needs to reach it."""

    name: str
    proc: subprocess.Popen[bytes]
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def _spawn(name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT
    )


async def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not answer in 60 s")


async def start_sandbox(data_dir: Path) -> Child:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = ["-m", "passerelle", "sandbox", "--port", str(port), "--data-dir", str(data_dir)]
    proc = _spawn("sandbox", _profiled(args, data_dir), data_dir / "sandbox.log")
    await _wait_http(f"http://127.0.0.1:{port}/healthz", proc, "the sandbox")
    return Child("sandbox", proc, {"http": port})


async def start_ceiling(data_dir: Path) -> Child:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = _spawn("ceiling", ["-m", "benchmarks.space_ceiling", "--port", str(port)], data_dir / "ceiling.log")
    await _wait_http(f"http://127.0.0.1:{port}/stats", proc, "the minimal space")
    return Child("ceiling", proc, {"http": port})


async def start_gateway(data_dir: Path, space_url: str, env: dict[str, str]) -> Child:
    """``passerelle run`` on free ports; returns once its listeners are bound (``run/ports.json``)."""
    ports_file = data_dir / "run" / "ports.json"
    ports_file.parent.mkdir(parents=True, exist_ok=True)
    ports_file.unlink(missing_ok=True)
    args = ["-m", "passerelle", "run", "--data-dir", str(data_dir), "--mllp-port", "0", "--http-port", "0",
            "--space-url", space_url]  # fmt: skip
    proc = _spawn("gateway", _profiled(args, data_dir), data_dir / "gateway.log", env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}; see {data_dir / 'gateway.log'}")
        if ports_file.exists():
            ports = json.loads(ports_file.read_text())
            if ports.get("pid") == proc.pid and ports.get("mllp"):
                return Child("gateway", proc, {"mllp": ports["mllp"], "http": ports["http"]})
        await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError("the gateway did not start in 60 s")


def _profiled(args: list[str], data_dir: Path) -> list[str]:
    """Development aid: with ``PIPELINE_CPROFILE=<prefix>``, the gateway and the sandbox run under cProfile
    (main thread, CPU time) and write ``<prefix>-<data dir name>.prof`` when they stop (read with pstats)."""
    profile = os.environ.get("PIPELINE_CPROFILE")
    if not profile:
        return args
    return ["-c", _PROFILED.format(out=f"{profile}-{data_dir.name}.prof"), *args[1:]]


_PROFILED = """\
import cProfile, runpy, signal, sys, time
sys.argv[0] = "passerelle"
signal.raise_signal = lambda sig: None  # uvicorn re-raises SIGTERM after its shutdown: end normally instead
profiler = cProfile.Profile(time.thread_time)
try:
    profiler.runcall(runpy.run_module, sys.argv.pop(1), run_name="__main__")
except SystemExit:
    pass
finally:
    profiler.dump_stats({out!r})
"""


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to another process's SQLite file (WAL: reads never block its writer)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def journal_states(path: Path) -> dict[str, int]:
    with contextlib.closing(read_only(path)) as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall())


def file_bytes(path: Path) -> int:
    """A SQLite file with its WAL (what the journal holds on disk)."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
