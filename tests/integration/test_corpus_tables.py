"""The generated tables of the docs stay true: docs/corpus-mapping.md (what `passerelle map` makes of the
corpus) and the table of docs/conformance.md (the reply every ANS example message gets, and why) are
recomputed from the code and compared with the committed docs."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus_table() -> ModuleType:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import corpus_table as module
    finally:
        sys.path.pop(0)
    return module


def test_corpus_mapping_doc_matches_the_code(corpus_dir: Path, corpus_table: ModuleType) -> None:
    committed = (ROOT / "docs" / "corpus-mapping.md").read_text(encoding="utf-8")
    assert committed == corpus_table.mapping_table(corpus_dir), "run: .venv/bin/python tools/corpus_table.py"


def test_conformance_reply_table_matches_the_code(corpus_dir: Path, corpus_table: ModuleType) -> None:
    committed = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    table = corpus_table.reply_table(corpus_dir)
    assert corpus_table.with_reply_table(committed, table) == committed, "run: .venv/bin/python tools/corpus_table.py"


def test_the_reply_table_lists_every_example_message(corpus_dir: Path, corpus_table: ModuleType) -> None:
    table = corpus_table.reply_table(corpus_dir)
    examples = corpus_dir / "hl7v2" / "fr-ans-hl7v2-exemples"
    files = [p for p in examples.rglob("*") if p.suffix in (".hl7", ".er7")]
    assert files and all(f"| `{p.relative_to(examples)}` |" in table for p in files)
    assert table.count("\n| `") == len(files)
