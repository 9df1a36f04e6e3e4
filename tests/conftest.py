"""Shared fixtures. The public corpus lives beside the project (../shared/corpus); tests that need it
skip cleanly when it is absent (set PASSERELLE_CORPUS to point elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _corpus_path() -> Path:
    return Path(os.environ.get("PASSERELLE_CORPUS", ROOT.parent / "shared" / "corpus"))


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    path = _corpus_path()
    if not path.is_dir():
        pytest.skip(f"shared corpus not found at {path} (set PASSERELLE_CORPUS)")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


#: Skips CI accepts (`.ci/run` sets PASSERELLE_STRICT_SKIPS=1): it installs every peer and tool, so any
#: other skip means a test that did not run — a missing tool, an unreachable PostgreSQL — and fails.
ALLOWED_SKIPS = ("root can read a file whatever its mode",)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if report.skipped and os.environ.get("PASSERELLE_STRICT_SKIPS") == "1":
        reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
        if not any(allowed in reason for allowed in ALLOWED_SKIPS):
            report.outcome = "failed"
            report.longrepr = f"skipped in a strict run (PASSERELLE_STRICT_SKIPS=1): {reason}"
    return report
