"""Progress of a long command (a replay, a purge), on stderr so that stdout stays the command's result.

On a terminal one bar is redrawn in place; elsewhere (a log, a pipe, CI) one line is written at each
tenth of the way, so a long run shows it is alive without flooding the log. Short runs (fewer than
``threshold`` items) show nothing. Use it as a context manager and call :meth:`Progress.advance` per
item (it fits ``replay_rows(progress=...)``)::

    with Progress(len(ids), "replay") as bar:
        await replay_rows(..., progress=bar.advance)
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(self, total: int, label: str, *, stream: TextIO | None = None, threshold: int = 20) -> None:
        self.total = max(0, total)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.shown = self.total >= threshold
        self.tty = self.shown and bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self._tenth = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if not self.shown:
            return
        if self.tty:
            filled = WIDTH * self.done // self.total
            self.stream.write(f"\r{self.label} [{'#' * filled}{' ' * (WIDTH - filled)}] {self.done}/{self.total}")
            self.stream.flush()
            return
        tenth = 10 * self.done // self.total
        if tenth > self._tenth:
            self._tenth = tenth
            self.stream.write(f"{self.label}: {self.done}/{self.total} ({10 * tenth}%)\n")
            self.stream.flush()
