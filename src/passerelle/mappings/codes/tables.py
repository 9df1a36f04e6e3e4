"""Loaders for the code tables (package data) and for per-sender local → LOINC tables (CSV text)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from passerelle.errors import MappingError

_PACKAGE = "passerelle.mappings.codes"
_LOINC_RE = re.compile(r"^[0-9]{1,7}-[0-9]$")


@cache
def _table(name: str) -> tuple[dict[str, str], ...]:
    text = resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8")
    return tuple(dict(row) for row in csv.DictReader(io.StringIO(text)))


def interpretation_display(code: str) -> str | None:
    """French display of an HL7 ObservationInterpretation code (JDV_HL7_ObservationInterpretation-CISIS)."""
    return next((r["display"] for r in _table("interpretation.csv") if r["code"] == code), None)


def specimen_type_display(code: str) -> str | None:
    """French display of an HL7 table 0487 specimen type (BLD, SER, UR...)."""
    return next((r["display"] for r in _table("specimen_types.csv") if r["code"] == code), None)


def ucum_unit(local: str) -> str | None:
    """UCUM spelling of a unit as labs commonly write it (``g/l`` → ``g/L``, ``G/L`` → ``10*9/L``)."""
    rows = _table("ucum_units.csv")
    exact = next((r["ucum"] for r in rows if r["local"] == local), None)
    if exact is not None:
        return exact
    folded = local.casefold()
    matches = {r["ucum"] for r in rows if r["local"].casefold() == folded}
    # Only a case-insensitive match that is unambiguous (G/L is 10*9/L, g/l is g/L: never guess).
    return matches.pop() if len(matches) == 1 else None


def unit_display(ucum: str) -> str:
    """How a French lab report prints a UCUM unit (``10*9/L`` → ``G/L``, ``umol/L`` → ``µmol/L``)."""
    return next((r["display"] for r in _table("ucum_display.csv") if r["ucum"] == ucum), ucum)


@dataclass(frozen=True)
class LabChapter:
    code: str  # LOINC chapter code (18719-5...)
    display: str


def lab_chapter(diagnostic_service: str = "", loinc: str = "") -> LabChapter | None:
    """The report chapter from HL7 table 0074 (OBR-24: CH, HM...) or from a LOINC chapter code."""
    for row in _table("lab_chapters.csv"):
        if (diagnostic_service and row["diagnostic_service"] == diagnostic_service.upper()) or (
            loinc and row["loinc"] == loinc
        ):
            return LabChapter(code=row["loinc"], display=row["display"])
    return None


@dataclass(frozen=True)
class LoincEntry:
    local_code: str
    loinc: str
    display: str
    unit: str = ""  # UCUM unit to use when the sender's unit is not UCUM
    chapter: str = ""  # LOINC chapter code (18719-5...) overriding OBR-24


@dataclass(frozen=True)
class LoincTable:
    """One sender's local code → LOINC table."""

    sender: str
    entries: dict[str, LoincEntry] = field(default_factory=dict)

    def get(self, local_code: str) -> LoincEntry | None:
        return self.entries.get(local_code)


LOINC_CSV_COLUMNS = ("local_code", "loinc", "display", "unit", "chapter")
_FILE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def loinc_table_file_name(sender: str) -> str:
    """File name of a sender's table in ``config/loinc/`` (``SIL-DEMO^LABO-DEMO`` → ``SIL-DEMO_LABO-DEMO.csv``)."""
    return _FILE_UNSAFE.sub("_", sender) + ".csv"


def parse_loinc_csv(text: str, sender: str) -> LoincTable:
    """Parse a ``config/loinc/<sender>.csv`` table; refuses bad LOINC codes and duplicates by line number."""
    reader = csv.DictReader(io.StringIO(text))
    missing = {"local_code", "loinc", "display"} - set(reader.fieldnames or ())
    if missing:
        raise MappingError(f"LOINC table {sender!r}: missing column(s) {', '.join(sorted(missing))}")
    entries: dict[str, LoincEntry] = {}
    for line, row in enumerate(reader, start=2):
        local = (row.get("local_code") or "").strip()
        if not local or local.startswith("#"):
            continue
        loinc = (row.get("loinc") or "").strip()
        display = (row.get("display") or "").strip()
        if not _LOINC_RE.match(loinc):
            raise MappingError(f"LOINC table {sender!r} line {line}: {loinc!r} is not a LOINC code")
        if not display:
            raise MappingError(f"LOINC table {sender!r} line {line}: display is empty")
        if local in entries:
            raise MappingError(f"LOINC table {sender!r} line {line}: local code {local!r} listed twice")
        chapter = (row.get("chapter") or "").strip()
        if chapter and not _LOINC_RE.match(chapter):
            raise MappingError(f"LOINC table {sender!r} line {line}: chapter {chapter!r} is not a LOINC code")
        entries[local] = LoincEntry(
            local_code=local, loinc=loinc, display=display, unit=(row.get("unit") or "").strip(), chapter=chapter
        )
    return LoincTable(sender=sender, entries=entries)
