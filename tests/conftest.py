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
