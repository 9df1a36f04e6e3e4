"""The harness skips (never fails, never passes silently) when the corpus, the kit or a tool is missing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import conformance


@pytest.mark.parametrize(
    "call",
    [
        lambda: conformance.validate_xsd(b"<x/>"),
        lambda: conformance.run_schematron(b"<x/>", "IHE"),
        lambda: conformance.run_schematrons(b"<x/>", conformance.CRBIO_2024),
        conformance.kit_fixes,
    ],
)
def test_missing_corpus_skips_with_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Callable[[], object]
) -> None:
    monkeypatch.setenv("PASSERELLE_CORPUS", str(tmp_path / "no-corpus"))
    with pytest.raises(pytest.skip.Exception, match="PASSERELLE_CORPUS") as info:
        call()
    assert str(tmp_path / "no-corpus") in str(info.value)


def test_missing_dciodvfy_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conformance.shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="dicom3tools"):
        conformance.dciodvfy_errors("/nonexistent.dcm")


def test_missing_saxonche_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "saxonche", None)
    with pytest.raises(pytest.skip.Exception, match="saxonche"):
        conformance._Saxon()
