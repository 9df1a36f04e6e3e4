"""Run every benchmark and update benchmarks/RESULTS.md (each benchmark owns its own section).

``make bench`` takes about a quarter of an hour on a 2-CPU machine, most of it the end-to-end runs
(``pipeline``: each scenario three times with 10,000 reports, then a 100,000-document backlog);
``--quick`` is a smoke run of a few minutes.

``python -m benchmarks.run [--quick] [--only NAME]``
"""

from __future__ import annotations

import argparse
import importlib

#: name -> module exposing ``main(argv) -> int``
BENCHMARKS = {
    "mllp": "benchmarks.mllp_bench",
    "hl7v2": "benchmarks.hl7v2_bench",
    "journal": "benchmarks.journal_bench",
    "pipeline": "benchmarks.pipeline_bench",
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--quick", action="store_true", help="short smoke runs")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    args = parser.parse_args()
    status = 0
    for name in args.only or BENCHMARKS:
        module = importlib.import_module(BENCHMARKS[name])
        status |= module.main(["--quick"] if args.quick else [])
    return status


if __name__ == "__main__":
    raise SystemExit(main())
