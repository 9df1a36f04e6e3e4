"""The OBR groups of a LAB-3 ORU^R01 → batteries: the battery's LOINC code (from the message or the sender's
table), the report chapter it belongs to, its results (:mod:`passerelle.mappings.lab.results`) and the
specimens they were measured on. Every refusal is a :class:`MappingError` naming the segment and field.
"""

from __future__ import annotations

from datetime import tzinfo

from passerelle.mappings.codes import LoincTable, lab_chapter
from passerelle.mappings.document import Code
from passerelle.mappings.lab.groups import Group
from passerelle.mappings.lab.model import LOINC_SYSTEM, Battery, LabResult, Specimen
from passerelle.mappings.lab.parties import specimen, specimen_from_request
from passerelle.mappings.lab.results import loinc_of, read_result
from passerelle.mappings.lab.segments import Seg


def _battery_code(obr: Seg, table: LoincTable | None) -> Code | None:
    """OBR-4 as LOINC, or None when it is a local panel code with no translation: many panels have no
    LOINC code, and the ANS examples then code the battery with the chapter (see the TSH example)."""
    code, _, loinc = loinc_of(obr, 4)
    if loinc is not None:
        return loinc
    entry = table.get(code) if table is not None and code else None
    return Code(code=entry.loinc, system=LOINC_SYSTEM, display=entry.display) if entry is not None else None


def _chapter(obr: Seg, table: LoincTable | None, results: list[LabResult], battery: Code | None) -> Code:
    """The report chapter: from the sender's table, else the battery's LOINC, else OBR-24."""
    for result in results:
        entry = table.get(result.local_code) if table is not None else None
        if entry is not None and entry.chapter:
            found = lab_chapter(loinc=entry.chapter)
            return Code(code=entry.chapter, system=LOINC_SYSTEM, display=found.display if found else entry.chapter)
    known = lab_chapter(loinc=battery.code) if battery is not None else None
    if known is None:
        section = obr.text(24)
        known = lab_chapter(diagnostic_service=section) if section else None
        if known is None:
            raise obr.error(24, f"diagnostic service section {section or '(empty)'!r} gives no report chapter")
    return Code(code=known.code, system=LOINC_SYSTEM, display=known.display)


def _group_specimens(group: Group, tz: tzinfo, known: list[Specimen], key: str) -> list[Specimen]:
    found = [specimen(spm, tz, len(known) + i + 1) for i, spm in enumerate(group.spm)]
    if not found:
        from_request = specimen_from_request(group.obr, tz, key)
        found = [from_request] if from_request is not None else []
    return found


def read_batteries(
    groups: list[Group], statuses: dict[int, list[str]], key: str, loinc: LoincTable | None, tz: tzinfo
) -> tuple[list[Battery], list[Specimen]]:
    """One battery per group that has results not deleted (``statuses``: OBX-11 per OBR occurrence), and
    the specimens they were measured on; ``key`` is the order key the request-only specimens are named by."""
    specimens: list[Specimen] = []
    batteries: list[Battery] = []
    for group in groups:
        obr = group.obr
        results = [
            read_result(obx, loinc, tz, status, group.comment(obx))
            for obx, status in zip(group.obx, statuses[obr.occurrence], strict=True)
            if status != "D"
        ]
        if not results:
            continue
        found = _group_specimens(group, tz, specimens, key)
        specimens += [s for s in found if all(s.id != known.id for known in specimens)]
        code = _battery_code(obr, loinc)
        chapter = _chapter(obr, loinc, results, code)
        specimen_id = found[0].id if found else ""
        battery = Battery(
            code=code or chapter,
            chapter=chapter,
            specimen_id=specimen_id,
            results=tuple(results),
            label=obr.value(4, 2),
        )
        batteries.append(battery)
    return batteries, specimens
