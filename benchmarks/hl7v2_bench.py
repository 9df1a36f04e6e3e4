"""HL7v2 ACK-path benchmark: CPU cost per message of the pure layer, against python-hl7 and hl7apy.

Measures process CPU time with ``timeit`` (best of N repeats), for a ~2 KB volet ORU (small embedded CDA) and a
~60 KB one (45 KB CDA): ``decode_message``; decode + ``read_header`` + ``classify`` (base64 alphabet
only) + ``build_ack``; the same with the embedded CDA decoded and parsed; and, as baselines,
python-hl7 ``hl7.parse`` and hl7apy ``parse_message``. No I/O, no storage: see mllp_bench for that.

Run: ``python -m benchmarks.hl7v2_bench [--quick] [--no-write]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

import hl7
from hl7apy.parser import parse_message

from benchmarks.results import publish
from passerelle.mappings.hl7v2 import build_ack, classify, decode_message, read_header
from passerelle.mappings.samples.messages import build_oru, build_sample_cda, synthetic_patient

BEGIN, STOP = "<!-- hl7v2-bench:begin -->", "<!-- hl7v2-bench:end -->"
NOW = datetime(2026, 11, 22, tzinfo=UTC)


def messages() -> dict[str, bytes]:
    patient = synthetic_patient(random.Random(1))
    small = b'<?xml version="1.0"?><ClinicalDocument xmlns="urn:hl7-org:v3"><id root="2.25.1"/></ClinicalDocument>'
    full = build_sample_cda(now=NOW, patient=patient, document_id="2.25.1", set_id="2.25.2")
    big = full.replace(b"</ClinicalDocument>", b"<!--" + b"x" * 40_000 + b"--></ClinicalDocument>")
    out = {}
    for name, cda in (("oru-2KB", small), ("oru-60KB", big)):
        raw, _ = build_oru(now=NOW, control_id="B1", patient=patient, document_id="2.25.1", set_id="2.25.2", cda=cda)
        out[name] = raw
    return out


def ack_path(raw: bytes, deep: bool) -> None:
    msg = decode_message(raw)
    header = read_header(msg)
    classify(msg, header, test_environment=True, accepted_processing_ids={"P"}, check_documents=deep)
    build_ack(header, now=NOW, control_id="1")


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    # process CPU time, not wall time: the machine is shared, and this is a CPU cost
    return min(timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time)) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hl7v2_bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else 7
    rows = []
    for name, raw in messages().items():
        n = 200 if "2KB" in name else 50
        if args.quick:
            n //= 4
        text = raw.decode()
        cells = [
            best_us(lambda raw=raw: decode_message(raw), n, repeat),
            best_us(lambda raw=raw: ack_path(raw, False), n, repeat),
            best_us(lambda raw=raw: ack_path(raw, True), n, repeat),
            best_us(lambda text=text: hl7.parse(text), max(n // 10, 5), repeat),
            best_us(lambda text=text: parse_message(text, find_groups=True), 3, 2) if "2KB" in name else float("nan"),
        ]
        rows.append((name, len(raw), cells))
    load = os.getloadavg()[0]
    lines = [
        BEGIN,
        "## HL7v2 ACK path (CPU per message, no I/O)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this machine ({os.cpu_count()} CPUs, "
        f"{platform.machine()}, Python {platform.python_version()}), 1-min load average {load:.1f}, "
        "by `python -m benchmarks.hl7v2_bench`. Process CPU time (not wall time), best of several `timeit` repeats, µs per message.",
        "",
        "| message | bytes | decode | decode+MSH+volet+ACK | same + CDA decoded & parsed | python-hl7 parse | hl7apy parse |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, size, cells in rows:
        lines.append(f"| {name} | {size:,} | " + " | ".join("—" if c != c else f"{c:,.0f}" for c in cells) + " |")
    lines += ["", STOP]
    section = "\n".join(lines) + "\n"
    publish(section, BEGIN, STOP, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
