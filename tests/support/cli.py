"""The ``passerelle`` command in a child process (``python -m passerelle``), output captured."""

from __future__ import annotations

import subprocess
import sys


def passerelle(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``passerelle ARGS``; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", "passerelle", *args], capture_output=True, text=True, timeout=timeout)


def passerelle_bytes(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run ``passerelle ARGS``; stdout and stderr as bytes (raw messages, documents)."""
    return subprocess.run([sys.executable, "-m", "passerelle", *args], capture_output=True, timeout=timeout)


def config_problems(stderr: str) -> list[str]:
    """The ``configuration error: …`` lines of a run, without that prefix."""
    return [line.removeprefix("configuration error: ") for line in stderr.splitlines() if "configuration error" in line]
