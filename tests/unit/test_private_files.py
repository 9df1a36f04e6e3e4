"""connector/files.py: directories 0700, files 0600, whatever the umask; existing directories left alone."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from passerelle.connector.files import make_private, private_dir, write_private


@pytest.fixture(params=[0o000, 0o002, 0o022])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_directories_and_written_files_are_private(tmp_path: Path, umask: int) -> None:
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    deep = private_dir(existing / "a" / "b")
    assert mode(existing) == 0o755  # the operator's
    assert mode(existing / "a") == mode(deep) == 0o700
    target = write_private(deep / "ports.json", b"{}")
    assert mode(target) == 0o600 and target.read_bytes() == b"{}"
    os.chmod(target, 0o644)
    write_private(target, b"[]")  # replaced, not rewritten in place: private again
    assert mode(target) == 0o600 and target.read_bytes() == b"[]"
    assert sorted(p.name for p in deep.iterdir()) == ["ports.json"]


def test_a_file_taken_over_is_made_private(tmp_path: Path, umask: int) -> None:
    moved = tmp_path / "moved.xml"
    moved.write_bytes(b"<x/>")
    os.chmod(moved, 0o755)
    make_private(moved)
    assert mode(moved) == 0o600
