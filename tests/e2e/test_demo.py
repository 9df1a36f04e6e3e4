"""`passerelle demo` (what `make demo` runs) works end to end on embedded defaults."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_end_to_end(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "passerelle", "demo", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(" AA ") == 5
    assert out.stdout.count("delivered") >= 5
    assert "demo OK" in out.stdout
