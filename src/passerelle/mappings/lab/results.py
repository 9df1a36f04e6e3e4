"""One OBX of a LAB-3 ORU^R01 → :class:`LabResult`: LOINC code (from the message or the sender's
table), UCUM unit, reference range, CI-SIS interpretation flags, status and typed value.

Every refusal is a :class:`MappingError` naming the OBX occurrence and field, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import tzinfo
from decimal import Decimal

from passerelle.mappings.codes import LoincTable, interpretation_display, ucum_unit
from passerelle.mappings.document import Code
from passerelle.mappings.lab.model import LOINC_SYSTEM, LabResult, ReferenceRange, ResultStatus, ValueKind
from passerelle.mappings.lab.segments import Seg

LOINC_SYSTEMS = frozenset({"LN", "LOINC", "2.16.840.1.113883.6.1"})
_UCUM_SYSTEMS = frozenset({"UCUM", "2.16.840.1.113883.6.8"})
_NUMBER_RE = re.compile(r"^[+-]?\d+(?:[.,]\d+)?$")
_RANGE_RE = re.compile(r"^\s*([+-]?\d+(?:[.,]\d+)?)\s*-\s*([+-]?\d+(?:[.,]\d+)?)\s*$")
_BOUND_RE = re.compile(r"^\s*(<=|>=|<|>)\s*([+-]?\d+(?:[.,]\d+)?)\s*$")
_CODED_SYSTEMS = {"SCT": "2.16.840.1.113883.6.96", "LN": LOINC_SYSTEM, "LOINC": LOINC_SYSTEM}
#: OBX-11 values a CR-BIO is made of: final, corrected, cancelled (X), deleted (D).
RESULT_STATUSES = frozenset({"F", "C", "X", "D"})
_STATUS = {"C": ResultStatus.CORRECTED, "X": ResultStatus.CANCELLED}

Fields = dict[str, object]


def _decimal(text: str) -> Decimal:
    return Decimal(text.replace(",", "."))


def loinc_of(seg: Seg, n: int) -> tuple[str, str, Code | None]:
    """(code, label, LOINC code when either CWE triplet of field ``n`` is LOINC)."""
    code, label, system = seg.value(n, 1), seg.value(n, 2), seg.value(n, 3).upper()
    alt_code, alt_label, alt_system = seg.value(n, 4), seg.value(n, 5), seg.value(n, 6).upper()
    if system in LOINC_SYSTEMS and code:
        return code, label, Code(code=code, system=LOINC_SYSTEM, display=label or code)
    if alt_system in LOINC_SYSTEMS and alt_code:
        return code, label, Code(code=alt_code, system=LOINC_SYSTEM, display=alt_label or label or alt_code)
    return code, label, None


def _translate(obx: Seg, table: LoincTable | None) -> tuple[Code, str, str]:
    """OBX-3 → (LOINC code, local code, sender label)."""
    local_code, label, loinc = loinc_of(obx, 3)
    if not local_code and not obx.value(3, 4):
        raise obx.error(3, "observation identifier is empty")
    if loinc is not None:
        return loinc, local_code, label
    entry = table.get(local_code) if table is not None else None
    if entry is None:
        where = f"table of sender {table.sender!r}" if table is not None else "no LOINC table configured"
        raise obx.error(3, f"local code {local_code!r} has no LOINC translation ({where})")
    return Code(code=entry.loinc, system=LOINC_SYSTEM, display=entry.display), local_code, label


def _unit(obx: Seg, table: LoincTable | None, local_code: str) -> str:
    unit, system = obx.value(6, 1), obx.value(6, 3).upper()
    if not unit or system in _UCUM_SYSTEMS:
        return unit
    translated = ucum_unit(unit)
    if translated:
        return translated
    entry = table.get(local_code) if table is not None else None
    if entry is not None and entry.unit:
        return entry.unit
    raise obx.error(6, f"unit {unit!r} is not UCUM and has no known UCUM equivalent")


def _range(obx: Seg, unit: str) -> ReferenceRange | None:
    text = obx.text(7)
    if not text:
        return None
    m = _RANGE_RE.match(text)
    if m:
        return ReferenceRange(low=_decimal(m.group(1)), high=_decimal(m.group(2)), unit=unit)
    m = _BOUND_RE.match(text)
    if m is None:
        return ReferenceRange(text=text)
    bound = _decimal(m.group(2))
    if m.group(1).startswith("<"):
        return ReferenceRange(high=bound, unit=unit)
    return ReferenceRange(low=bound, unit=unit)


def _flags(obx: Seg) -> tuple[str, ...]:
    flags = [flag for rep in obx.reps(8) if (flag := obx.part(rep).upper())]
    unknown = next((flag for flag in flags if interpretation_display(flag) is None), None)
    if unknown is not None:
        raise obx.error(8, f"abnormal flag {unknown!r} has no CI-SIS interpretation code")
    return tuple(flags)


def result_status(obx: Seg) -> str:
    """OBX-11, refused unless final, corrected, cancelled or deleted."""
    status = obx.text(11).upper()
    if status not in RESULT_STATUSES:
        raise obx.error(
            11,
            f"result status {status or '(empty)'!r}: only final (F), corrected (C), cancelled (X) "
            "or deleted (D) results make a CR-BIO",
        )
    return status


def read_result(obx: Seg, table: LoincTable | None, tz: tzinfo, status: str, comment: str) -> LabResult:
    """The result of one OBX whose status was already read (:func:`result_status`)."""
    code, local_code, label = _translate(obx, table)
    fields: Fields = {
        "code": code,
        "local_code": local_code,
        "label": label,
        "observed": obx.time(14, tz),
        "interpretation": _flags(obx),
        "comment": comment,
        "status": _STATUS.get(status, ResultStatus.FINAL),
    }
    if status == "X":
        return LabResult.model_validate({**fields, "kind": ValueKind.TEXT})
    value_type = obx.text(2).upper()
    reader = _VALUE_READERS.get(value_type)
    if reader is None:
        raise obx.error(2, f"value type {value_type or '(empty)'!r} is not supported (NM, SN, CWE/CE, ST/TX/FT)")
    fields.update(reader(obx, table, local_code))
    return LabResult.model_validate(fields)


def _numeric(obx: Seg, table: LoincTable | None, local_code: str) -> Fields:
    """NM: a number with its unit."""
    unit = _unit(obx, table, local_code) or "1"
    text = obx.text(5)
    if not _NUMBER_RE.match(text):
        raise obx.error(5, "NM value is not a number")
    return {"kind": ValueKind.QUANTITY, "number": _decimal(text), "unit": unit, "reference_range": _range(obx, unit)}


def _structured_numeric(obx: Seg, table: LoincTable | None, local_code: str) -> Fields:
    """SN: ``<comparator>^<number>``; with a comparator it is an interval (``<5`` → high bound 5)."""
    unit = _unit(obx, table, local_code) or "1"
    comparator, number = obx.value(5, 1), obx.value(5, 2)
    if not _NUMBER_RE.match(number) or obx.value(5, 3):
        raise obx.error(5, "SN value must be <comparator>^<number> (ratios and ranges are not supported)")
    fields: Fields = {"number": _decimal(number), "unit": unit, "reference_range": _range(obx, unit)}
    if comparator in {"", "="}:
        return {**fields, "kind": ValueKind.QUANTITY}
    if comparator not in {"<", "<=", ">", ">="}:
        raise obx.error(5, f"SN comparator {comparator!r} is not one of < <= > >=")
    return {**fields, "kind": ValueKind.INTERVAL, "comparator": comparator}


def _coded(obx: Seg, table: LoincTable | None, local_code: str) -> Fields:
    """CWE/CE/CNE: a code with its system (SCT, LN or an OID)."""
    code, display, system_name = obx.value(5, 1), obx.value(5, 2), obx.value(5, 3)
    if not code:
        raise obx.error(5, "coded value is empty")
    system = _CODED_SYSTEMS.get(system_name.upper(), system_name)
    if not system:
        raise obx.error(5, "coded value has no coding system (CWE-3)")
    coded = Code(code=code, system=system, display=display)
    return {"kind": ValueKind.CODED, "coded": coded, "reference_range": _range(obx, "")}


def _text(obx: Seg, table: LoincTable | None, local_code: str) -> Fields:
    """ST/TX/FT: every repetition of OBX-5, joined."""
    text = " ".join(obx.texts(5)).strip()
    if not text:
        raise obx.error(5, "text value is empty")
    return {"kind": ValueKind.TEXT, "text": text, "reference_range": _range(obx, "")}


_VALUE_READERS: dict[str, Callable[[Seg, LoincTable | None, str], Fields]] = {
    "NM": _numeric,
    "SN": _structured_numeric,
    "CWE": _coded,
    "CE": _coded,
    "CNE": _coded,
    "ST": _text,
    "TX": _text,
    "FT": _text,
}
