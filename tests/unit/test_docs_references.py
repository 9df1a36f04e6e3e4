"""The repository stands on its own: its docs and docstrings cite files inside it, its links resolve, and
the tests docs/bad-input.md names as proof exist.

Three checks:

- no file under src/, docs/, tests/, config/ nor README.md cites the reference notes the project was
  built from (they are not part of the repository); a fact those notes held is cited from
  docs/bad-input.md, docs/interop-reference.md or docs/dmp-transport.md instead, with its public source;
- every relative markdown link ``](...)`` of README.md and docs/**/*.md leads to a file or folder of the
  repository (web links and in-page anchors are not checked);
- every ``file.py::test_name`` of docs/bad-input.md (``::test_name`` alone: the same file as the name
  before it in that table cell) is a test function of that file under tests/, and every test file named
  there exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

# Written in two parts so that this file does not cite them itself.
OUTSIDE_NOTES = (
    "reliability" + ".md",
    "dmp-" + "interop.md",
    "dmp-" + "xds.md",
    "peers" + ".md",
    "shared/" + "reference",
)
SCANNED = ("src", "docs", "tests", "config")
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def text_files(root: Path) -> Iterator[Path]:
    yield root / "README.md"
    for top in SCANNED:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                yield path


def markdown_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def links(text: str) -> Iterator[tuple[int, str]]:
    """Link targets outside fenced code blocks, with their line numbers."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            for match in LINK.finditer(line):
                yield number, match.group(1)


def test_nothing_cites_the_reference_notes_outside_the_repository(repo_root: Path) -> None:
    found = []
    for path in text_files(repo_root):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images and other binary files
        for number, line in enumerate(text.splitlines(), 1):
            found += [f"{path.relative_to(repo_root)}:{number}: {note}" for note in OUTSIDE_NOTES if note in line]
    assert found == []


def test_relative_markdown_links_resolve(repo_root: Path) -> None:
    broken = []
    for page in markdown_files(repo_root):
        for number, target in links(page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(repo_root)}:{number}: {target}")
    assert broken == []


def test_the_link_checker_sees_links_and_skips_code(tmp_path: Path) -> None:
    text = "see [a](a.md) and [b](b.md#x 'no')\n```\n[c](c.md)\n```\n[d](https://example.org) [e](#top)\n"
    assert [t for _, t in links(text)] == ["a.md", "b.md#x", "https://example.org", "#top"]


def cited_tests(doc: str) -> Iterator[tuple[str, str]]:
    """(test file under tests/, test name or "") for every test named in a table of docs/bad-input.md."""
    for line in doc.splitlines():
        if not line.startswith("|"):
            continue
        for cell in line.split(" | "):
            current = ""
            for file, name in re.findall(r"`((?:unit|integration|e2e)/test_\w+\.py)?(?:::(test_\w+))?`", cell):
                current = file or current
                if current:
                    yield current, name


def test_every_test_cited_by_the_bad_input_catalogue_exists(repo_root: Path) -> None:
    doc = (repo_root / "docs" / "bad-input.md").read_text(encoding="utf-8")
    cited = sorted(set(cited_tests(doc)))
    assert len(cited) > 150  # the catalogue names its proofs
    missing = []
    for file, name in cited:
        path = repo_root / "tests" / file
        if not path.is_file():
            missing.append(file)
        elif name and not re.search(rf"^(async )?def {name}\(", path.read_text(encoding="utf-8"), re.M):
            missing.append(f"{file}::{name}")
    assert missing == []


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (
            "`unit/test_a.py::test_x`, `::test_y`; `integration/test_b.py`",
            [("unit/test_a.py", "test_x"), ("unit/test_a.py", "test_y"), ("integration/test_b.py", "")],
        ),
        ("`::test_orphan` `B-HL7-1` `tests/unit/x.py`", []),
    ],
)
def test_the_catalogue_reader_follows_the_file_of_a_cell(cell: str, expected: list[tuple[str, str]]) -> None:
    assert list(cited_tests(f"| id | {cell} |")) == expected
