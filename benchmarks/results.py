"""benchmarks/RESULTS.md: each benchmark owns one section between its own begin/end markers."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(section: str, begin: str, end: str, results: Path = RESULTS) -> None:
    """Put ``section`` (from ``begin`` to ``end``, markers included) in place of the previous one, or
    append it when the file has none yet."""
    body = section.rstrip("\n")
    text = results.read_text(encoding="utf-8") if results.exists() else "# Benchmark results\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    results.write_text(text, encoding="utf-8")


def publish(section: str, begin: str, end: str, *, write: bool) -> None:
    """Print ``section``; with ``write``, also put it in RESULTS.md (:func:`write_section`)."""
    print(section)
    if write:
        write_section(section, begin, end)
