"""IHE LAB-3 style ORU^R01 (discrete OBR/OBX, no embedded document) → :class:`LabReport`.

Read with python-hl7 (``hl7.parse``) after normalising segment separators to CR. Local result codes
are translated to LOINC with the sender's table; units to UCUM; HL7 abnormal flags to the CI-SIS
ObservationInterpretation codes. A correction (OBR-25 or OBX-11 = C) becomes a replacement of the
previous version given in the context; a cancellation (ORC-1 = CA, or every OBX-11 = D) becomes a
deletion of it. Every refusal is a :class:`MappingError` naming the segment and field (its location
is ``SEG^occurrence^field``), never a value that could identify the patient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import hl7

from passerelle.errors import MappingError, UnsupportedMessageError
from passerelle.mappings.codes import LoincTable, interpretation_display, lab_chapter, specimen_type_display, ucum_unit
from passerelle.mappings.document import Action, Code, IdentityStatus, Patient
from passerelle.mappings.identity.rules import Cx, qualify_hl7_patient
from passerelle.mappings.lab.ids import set_id_for, unique_id_for
from passerelle.mappings.lab.model import (
    BIOLOGIST,
    LOINC_SYSTEM,
    SPECIMEN_TYPE_SYSTEM,
    Address,
    Battery,
    Laboratory,
    LabPatient,
    LabReport,
    LabResult,
    Person,
    ReferenceRange,
    ResultStatus,
    Specimen,
    ValueKind,
)

_LOINC_SYSTEMS = {"LN", "LOINC", "2.16.840.1.113883.6.1"}
_UCUM_SYSTEMS = {"UCUM", "2.16.840.1.113883.6.8"}
_DTM_RE = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?$")
_NUMBER_RE = re.compile(r"^[+-]?\d+(?:[.,]\d+)?$")
_RANGE_RE = re.compile(r"^\s*([+-]?\d+(?:[.,]\d+)?)\s*-\s*([+-]?\d+(?:[.,]\d+)?)\s*$")
_BOUND_RE = re.compile(r"^\s*(<=|>=|<|>)\s*([+-]?\d+(?:[.,]\d+)?)\s*$")
_CODED_SYSTEMS = {"SCT": "2.16.840.1.113883.6.96", "LN": LOINC_SYSTEM, "LOINC": LOINC_SYSTEM}


@dataclass(frozen=True)
class PreviousVersion:
    """The version already delivered for this order (looked up by the caller, e.g. in the journal)."""

    set_id: str
    version: int
    unique_id: str


@dataclass(frozen=True)
class OruContext:
    """What the ORU does not carry: configuration of the sender and the state of earlier deliveries."""

    oid_root: str  # root of generated document OIDs (the gateway's or the lab's)
    now: datetime
    laboratory: Laboratory
    loinc: LoincTable | None = None
    sender: str = ""  # defaults to MSH-3^MSH-4; part of the deterministic ids
    previous: PreviousVersion | None = None
    validator: Person | None = None  # used when OBR-32 is empty
    timezone: str = "Europe/Paris"  # for HL7 times without UTC offset
    test_environment: bool = False  # accept the test/demo INS OIDs
    extra: dict[str, str] = field(default_factory=dict)


# --- small readers over python-hl7 containers --------------------------------------------------------


class _Seg:
    def __init__(self, msg: hl7.Message, seg: hl7.Segment, name: str, occurrence: int) -> None:
        self.msg = msg
        self.seg = seg
        self.name = name
        self.occurrence = occurrence
        self.rep_sep = msg.separators[2]
        self.comp_sep = msg.separators[3]
        self.sub_sep = msg.separators[4]

    def loc(self, n: int) -> str:
        return f"{self.name}^{self.occurrence}^{n}"

    def raw(self, n: int) -> str:
        return str(self.seg[n]) if n < len(self.seg) else ""

    def reps(self, n: int) -> list[str]:
        raw = self.raw(n)
        return [r for r in raw.split(self.rep_sep)] if raw else []

    def comps(self, n: int, rep: int = 0) -> list[str]:
        reps = self.reps(n)
        return reps[rep].split(self.comp_sep) if rep < len(reps) else []

    def comp(self, n: int, c: int = 1, rep: int = 0) -> str:
        comps = self.comps(n, rep)
        return self.text(comps[c - 1]) if c <= len(comps) else ""

    def subs(self, value: str) -> list[str]:
        return [self.text(s) for s in value.split(self.sub_sep)]

    def text(self, value: str) -> str:
        return str(self.msg.unescape(value)).strip() if value else ""

    def error(self, n: int, why: str) -> MappingError:
        return MappingError(f"{self.name}-{n}: {why}", location=self.loc(n))


def _parse_message(text: str) -> hl7.Message:
    normalised = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    try:
        return hl7.parse(normalised)
    except Exception as exc:  # python-hl7 raises several exception types on broken input
        raise MappingError("message cannot be read as HL7v2 ER7", location="MSH^1^1") from exc


def _segments(msg: hl7.Message) -> list[_Seg]:
    counts: dict[str, int] = {}
    out = []
    for seg in msg:
        name = str(seg[0])
        counts[name] = counts.get(name, 0) + 1
        out.append(_Seg(msg, seg, name, counts[name]))
    return out


def parse_dtm(value: str, tz: str, *, where: str, location: str) -> datetime:
    """HL7 DTM (``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+-ZZZZ]``) → aware datetime (``tz`` when no offset)."""
    m = _DTM_RE.match(value.strip())
    if not m:
        raise MappingError(f"{where}: not an HL7 date/time", location=location)
    year, month, day, hour, minute, second, offset = m.groups()
    try:
        naive = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError as exc:
        raise MappingError(f"{where}: not a valid date/time", location=location) from exc
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        return naive.replace(tzinfo=timezone(sign * delta))
    return naive.replace(tzinfo=ZoneInfo(tz))


def _decimal(text: str) -> Decimal:
    return Decimal(text.replace(",", "."))


# --- parts of the message ----------------------------------------------------------------------------


def _xcn_person(seg: _Seg, n: int, value: str, *, subcomponents: bool = False, required: bool = True) -> Person | None:
    """XCN (ORC-12, OBR-16) or the CNN of NDL (OBR-32, components as subcomponents) → Person.

    The identifier becomes an IdNat_PS: ``8`` + RPPS, ``0`` + ADELI (XCN-13 says which; an 11-digit
    number without type is taken as an RPPS); an identifier already in IdNat_PS form is kept.
    """
    parts = seg.subs(value) if subcomponents else [seg.text(c) for c in value.split(seg.comp_sep)]
    parts += [""] * 13
    if not parts[0]:
        return None
    if not parts[1]:
        if not required:
            return None
        raise seg.error(n, "practitioner has an identifier but no family name")
    ident, id_type = parts[0], "" if subcomponents else parts[12].upper()
    if id_type == "RPPS" or (not id_type and len(ident) == 11 and ident.isdigit()):
        ident = ident if len(ident) == 12 and ident.startswith("8") else f"8{ident}"
    elif id_type == "ADELI" and len(ident) == 9:
        ident = f"0{ident}"
    return Person(id=ident, family=parts[1], given=parts[2], suffix=parts[4], prefix=parts[5])


def _patient(pid: _Seg, ctx: OruContext) -> LabPatient:
    pid3 = []
    for rep in range(len(pid.reps(3))):
        authority = pid.comps(3, rep)[3] if len(pid.comps(3, rep)) > 3 else ""
        hd = [*pid.subs(authority), "", ""]
        pid3.append(Cx(value=pid.comp(3, 1, rep), namespace=hd[0], oid=hd[1], type_code=pid.comp(3, 5, rep)))
    pid32 = [pid.text(v) for v in pid.reps(32)]
    birth = used = None
    for rep in range(len(pid.reps(5))):
        kind = pid.comp(5, 7, rep).upper()
        if kind == "L" and birth is None:
            birth = rep
        elif kind == "D" and used is None:
            used = rep
    if birth is None:
        raise pid.error(5, "no birth name (name type L)")
    family, first_given, given_list = (pid.comp(5, c, birth) for c in (1, 2, 3))
    birth_date = pid.text(pid.raw(7))[:8]
    sex = pid.text(pid.raw(8)).upper() or "U"
    if sex not in {"M", "F", "U"}:
        sex = "U"
    cda_patient = Patient(family=family, given=first_given, birth_date=birth_date, sex=sex)
    ins = next((cx for cx in pid3 if cx.type_code.upper() == "INS"), None)
    if ins is not None:
        cda_patient = cda_patient.model_copy(update={"ins": ins.value.upper(), "ins_oid": ins.oid})
    qualified = qualify_hl7_patient(pid3, pid32, cda_patient, test_environment=ctx.test_environment)
    local = next((cx for cx in pid3 if cx.type_code.upper() == "PI" and cx.oid), None)
    cog = ""
    address = Address()
    for rep in range(len(pid.reps(11))):
        kind = pid.comp(11, 7, rep).upper()
        if kind == "BDL":
            cog = pid.comp(11, 9, rep)
        elif kind in {"H", ""} and address.empty:
            address = Address(street=pid.comp(11, 1, rep), postal_code=pid.comp(11, 5, rep), city=pid.comp(11, 3, rep))
    if len(birth_date) != 8 or not birth_date.isdigit():
        raise pid.error(7, "birth date missing or not YYYYMMDD")
    return LabPatient(
        ins=qualified.ins,
        ins_oid=qualified.ins_oid,
        identity_status=IdentityStatus.QUALIFIED,
        local_id=local.value if local else "",
        local_id_oid=local.oid if local else "",
        birth_family=family,
        birth_given_names=given_list or first_given,
        first_birth_given=first_given,
        used_family=pid.comp(5, 1, used) if used is not None else "",
        used_given=pid.comp(5, 2, used) if used is not None else "",
        birth_date=birth_date,
        sex=sex,
        birthplace_cog=cog,
        address=address,
    )


def _translate(obx: _Seg, ctx: OruContext) -> tuple[Code, str, str]:
    """OBX-3 → (LOINC code, local code, sender label); the LOINC may come from either CWE triplet."""
    local_code, label, system = obx.comp(3, 1), obx.comp(3, 2), obx.comp(3, 3).upper()
    alt_code, alt_label, alt_system = obx.comp(3, 4), obx.comp(3, 5), obx.comp(3, 6).upper()
    if not local_code and not alt_code:
        raise obx.error(3, "observation identifier is empty")
    if system in _LOINC_SYSTEMS and local_code:
        return Code(code=local_code, system=LOINC_SYSTEM, display=label or local_code), local_code, label
    if alt_system in _LOINC_SYSTEMS and alt_code:
        return Code(code=alt_code, system=LOINC_SYSTEM, display=alt_label or label or alt_code), local_code, label
    entry = ctx.loinc.get(local_code) if ctx.loinc is not None else None
    if entry is None:
        table = f"table of sender {ctx.loinc.sender!r}" if ctx.loinc is not None else "no LOINC table configured"
        raise obx.error(3, f"local code {local_code!r} has no LOINC translation ({table})")
    return Code(code=entry.loinc, system=LOINC_SYSTEM, display=entry.display), local_code, label


def _unit(obx: _Seg, ctx: OruContext, local_code: str) -> str:
    unit, system = obx.comp(6, 1), obx.comp(6, 3).upper()
    if not unit:
        return ""
    if system in _UCUM_SYSTEMS:
        return unit
    translated = ucum_unit(unit)
    if translated:
        return translated
    entry = ctx.loinc.get(local_code) if ctx.loinc is not None else None
    if entry is not None and entry.unit:
        return entry.unit
    raise obx.error(6, f"unit {unit!r} is not UCUM and has no known UCUM equivalent")


def _range(obx: _Seg, unit: str) -> ReferenceRange | None:
    text = obx.text(obx.raw(7))
    if not text:
        return None
    m = _RANGE_RE.match(text)
    if m:
        return ReferenceRange(low=_decimal(m.group(1)), high=_decimal(m.group(2)), unit=unit)
    m = _BOUND_RE.match(text)
    if m:
        bound = _decimal(m.group(2))
        if m.group(1).startswith("<"):
            return ReferenceRange(high=bound, unit=unit)
        return ReferenceRange(low=bound, unit=unit)
    return ReferenceRange(text=text)


def _flags(obx: _Seg) -> tuple[str, ...]:
    flags = []
    for rep in range(len(obx.reps(8))):
        flag = obx.comp(8, 1, rep).upper()
        if not flag:
            continue
        if interpretation_display(flag) is None:
            raise obx.error(8, f"abnormal flag {flag!r} has no CI-SIS interpretation code")
        flags.append(flag)
    return tuple(flags)


def _status(obx: _Seg) -> str:
    status = obx.text(obx.raw(11)).upper()
    if status not in {"F", "C", "X", "D"}:
        raise obx.error(
            11,
            f"result status {status or '(empty)'!r}: only final (F), corrected (C), cancelled (X) "
            "or deleted (D) results make a CR-BIO",
        )
    return status


def _result(obx: _Seg, ctx: OruContext, status: str, comment: str) -> LabResult:
    code, local_code, label = _translate(obx, ctx)
    value_type = obx.text(obx.raw(2)).upper()
    observed_raw = obx.text(obx.raw(14))
    observed = parse_dtm(observed_raw, ctx.timezone, where="OBX-14", location=obx.loc(14)) if observed_raw else None
    fields: dict[str, object] = {
        "code": code,
        "local_code": local_code,
        "label": label,
        "observed": observed,
        "interpretation": _flags(obx),
        "comment": comment,
        "status": {"C": ResultStatus.CORRECTED, "X": ResultStatus.CANCELLED}.get(status, ResultStatus.FINAL),
    }
    if status == "X":
        return LabResult.model_validate({**fields, "kind": ValueKind.TEXT})
    fields.update(_value(obx, ctx, value_type, local_code))
    return LabResult.model_validate(fields)


def _value(obx: _Seg, ctx: OruContext, value_type: str, local_code: str) -> dict[str, object]:
    """The value fields of a LabResult from OBX-2/5/6/7."""
    if value_type in {"NM", "SN"}:
        unit = _unit(obx, ctx, local_code) or "1"
        rng = _range(obx, unit)
        if value_type == "NM":
            text = obx.text(obx.raw(5))
            if not _NUMBER_RE.match(text):
                raise obx.error(5, "NM value is not a number")
            return {"kind": ValueKind.QUANTITY, "number": _decimal(text), "unit": unit, "reference_range": rng}
        comparator, number = obx.comp(5, 1), obx.comp(5, 2)
        if not _NUMBER_RE.match(number) or obx.comp(5, 3):
            raise obx.error(5, "SN value must be <comparator>^<number> (ratios and ranges are not supported)")
        if comparator in {"", "="}:
            return {"kind": ValueKind.QUANTITY, "number": _decimal(number), "unit": unit, "reference_range": rng}
        if comparator not in {"<", "<=", ">", ">="}:
            raise obx.error(5, f"SN comparator {comparator!r} is not one of < <= > >=")
        return {
            "kind": ValueKind.INTERVAL,
            "number": _decimal(number),
            "unit": unit,
            "comparator": comparator,
            "reference_range": rng,
        }
    if value_type in {"CWE", "CE", "CNE"}:
        coded_code, coded_display, coded_system = obx.comp(5, 1), obx.comp(5, 2), obx.comp(5, 3)
        if not coded_code:
            raise obx.error(5, "coded value is empty")
        system = _CODED_SYSTEMS.get(coded_system.upper(), coded_system)
        if not system:
            raise obx.error(5, "coded value has no coding system (CWE-3)")
        return {
            "kind": ValueKind.CODED,
            "coded": Code(code=coded_code, system=system, display=coded_display),
            "reference_range": _range(obx, ""),
        }
    if value_type in {"ST", "TX", "FT"}:
        text = " ".join(obx.text(r) for r in obx.reps(5)).strip()
        if not text:
            raise obx.error(5, "text value is empty")
        return {"kind": ValueKind.TEXT, "text": text, "reference_range": _range(obx, "")}
    raise obx.error(2, f"value type {value_type or '(empty)'!r} is not supported (NM, SN, CWE/CE, ST/TX/FT)")


@dataclass
class _Group:
    obr: _Seg
    obx: list[_Seg] = field(default_factory=list)
    spm: list[_Seg] = field(default_factory=list)
    comments: dict[int, list[str]] = field(default_factory=dict)  # OBX occurrence -> NTE-3 texts


def _battery_code(obr: _Seg, ctx: OruContext) -> Code | None:
    """OBR-4 as LOINC, or None when it is a local panel code with no translation: many panels have no
    LOINC code, and the ANS examples then code the battery with the chapter (see the TSH example)."""
    code, label, system = obr.comp(4, 1), obr.comp(4, 2), obr.comp(4, 3).upper()
    alt_code, alt_label, alt_system = obr.comp(4, 4), obr.comp(4, 5), obr.comp(4, 6).upper()
    if system in _LOINC_SYSTEMS and code:
        return Code(code=code, system=LOINC_SYSTEM, display=label or code)
    if alt_system in _LOINC_SYSTEMS and alt_code:
        return Code(code=alt_code, system=LOINC_SYSTEM, display=alt_label or label or alt_code)
    entry = ctx.loinc.get(code) if ctx.loinc is not None and code else None
    if entry is not None:
        return Code(code=entry.loinc, system=LOINC_SYSTEM, display=entry.display)
    return None


def _chapter(obr: _Seg, ctx: OruContext, results: list[LabResult], battery: Code | None) -> Code:
    for result in results:
        entry = ctx.loinc.get(result.local_code) if ctx.loinc is not None else None
        if entry is not None and entry.chapter:
            found = lab_chapter(loinc=entry.chapter)
            return Code(code=entry.chapter, system=LOINC_SYSTEM, display=found.display if found else entry.chapter)
    known = lab_chapter(loinc=battery.code) if battery is not None else None
    if known is not None:
        return Code(code=known.code, system=LOINC_SYSTEM, display=known.display)
    section = obr.text(obr.raw(24))
    found = lab_chapter(diagnostic_service=section) if section else None
    if found is None:
        raise obr.error(24, f"diagnostic service section {section or '(empty)'!r} gives no report chapter")
    return Code(code=found.code, system=LOINC_SYSTEM, display=found.display)


def _specimen(spm: _Seg, ctx: OruContext, index: int) -> Specimen:
    eip = spm.comps(2)
    ident = next((spm.subs(part)[0] for part in eip if spm.subs(part)[0]), "")
    kind = spm.comp(4, 1).upper()
    if not kind:
        raise spm.error(4, "specimen type is empty")
    display = spm.comp(4, 2) or specimen_type_display(kind) or kind
    collected_raw = spm.comp(17, 1)
    if not collected_raw:
        raise spm.error(17, "specimen collection time is empty")
    collected = parse_dtm(collected_raw, ctx.timezone, where="SPM-17", location=spm.loc(17))
    received_raw = spm.text(spm.raw(18))
    received = parse_dtm(received_raw, ctx.timezone, where="SPM-18", location=spm.loc(18)) if received_raw else None
    return Specimen(
        id=ident or f"specimen-{index}",
        type=Code(code=kind, system=SPECIMEN_TYPE_SYSTEM, display=display),
        collected=collected,
        received=received,
    )


def order_numbers(segs: list[_Seg]) -> tuple[str, str, str]:
    """(placer, filler, key): placer = ORC-2 else OBR-2, filler = ORC-3 else OBR-3, key = placer else filler.

    The key identifies the order in the deterministic ids and in the series of versions."""
    orc = next((s for s in segs if s.name == "ORC"), None)
    obr = next((s for s in segs if s.name == "OBR"), None)
    placer = (orc.comp(2, 1) if orc else "") or (obr.comp(2, 1) if obr else "")
    filler = (orc.comp(3, 1) if orc else "") or (obr.comp(3, 1) if obr else "")
    if not placer and not filler:
        raise MappingError("neither placer (OBR-2/ORC-2) nor filler (OBR-3/ORC-3) order number", location="OBR^1^2")
    return placer, filler, placer or filler


def _prescribed(orc: _Seg | None, ctx: OruContext, specimens: list[Specimen]) -> datetime | None:
    """When the order was written: ORC-15 (order effective time), else ORC-9 when it is not later than
    the first specimen collection (in a result message ORC-9 may be the time of the result transaction)."""
    if orc is None:
        return None
    effective = orc.text(orc.raw(15))
    if effective:
        return parse_dtm(effective, ctx.timezone, where="ORC-15", location=orc.loc(15))
    transaction = orc.text(orc.raw(9))
    if not transaction:
        return None
    when = parse_dtm(transaction, ctx.timezone, where="ORC-9", location=orc.loc(9))
    first = min((s.collected for s in specimens), default=None)
    return when if first is not None and when <= first else None


def from_oru(message: str, context: OruContext) -> LabReport:
    """Read a LAB-3 ORU^R01 (decoded text) into a LabReport; see the module docstring for the rules."""
    msg = _parse_message(message)
    segs = _segments(msg)
    if not segs or segs[0].name != "MSH":
        raise MappingError("message does not start with MSH", location="MSH^1^1")
    msh = segs[0]
    if (msh.comp(9, 1), msh.comp(9, 2)) != ("ORU", "R01"):
        raise UnsupportedMessageError("MSH-9: only ORU^R01 carries lab results", location="MSH^1^9")
    pid = next((s for s in segs if s.name == "PID"), None)
    if pid is None:
        raise MappingError("PID segment missing", location="PID^1^0")
    orc = next((s for s in segs if s.name == "ORC"), None)
    groups: list[_Group] = []
    for seg in segs:
        if seg.name == "OBR":
            groups.append(_Group(obr=seg))
        elif seg.name == "OBX" and groups:
            groups[-1].obx.append(seg)
        elif seg.name == "SPM" and groups:
            groups[-1].spm.append(seg)
        elif seg.name == "NTE" and groups and groups[-1].obx:
            obx_n = groups[-1].obx[-1].occurrence
            groups[-1].comments.setdefault(obx_n, []).append(" ".join(seg.text(r) for r in seg.reps(3)).strip())
        elif seg.name == "OBX":
            raise MappingError("OBX before any OBR", location=seg.loc(0))
    if not groups:
        raise MappingError("no OBR segment: nothing to report", location="OBR^1^0")

    sender = context.sender or f"{msh.comp(3, 1)}^{msh.comp(4, 1)}"
    first_obr = groups[0].obr
    order_number, filler_number, key = order_numbers(segs)

    statuses = {g.obr.occurrence: [_status(o) for o in g.obx] for g in groups}
    all_obx = [s for ss in statuses.values() for s in ss]
    if not all_obx:
        raise MappingError("no OBX result in the message", location="OBX^1^0")
    cancelled = (orc is not None and orc.comp(1, 1).upper() == "CA") or all(s == "D" for s in all_obx)
    corrected = any(s == "C" for s in all_obx) or any(g.obr.text(g.obr.raw(25)).upper() == "C" for g in groups)

    patient = _patient(pid, context)
    validator = None
    for group in groups:
        value = group.obr.comps(32)[0] if group.obr.comps(32) else ""
        validator = _xcn_person(group.obr, 32, value, subcomponents=True)
        if validator is not None:
            break
    validator = validator or context.validator
    if validator is None:
        raise first_obr.error(32, "no principal result interpreter and no default biologist configured")
    if validator.profession is None:
        validator = validator.model_copy(update={"profession": BIOLOGIST})
    prescriber = None
    if orc is not None and orc.reps(12):
        prescriber = _xcn_person(orc, 12, orc.reps(12)[0], required=False)
    if prescriber is None and first_obr.reps(16):
        prescriber = _xcn_person(first_obr, 16, first_obr.reps(16)[0], required=False)

    previous = context.previous
    if cancelled:
        if previous is None:
            raise MappingError(
                "cancellation of a report that was never delivered (no previous version known)",
                location=orc.loc(1) if orc else "OBX^1^11",
                reason="delete_unknown_document",
            )
        return LabReport(
            unique_id=previous.unique_id,
            set_id=previous.set_id,
            version=previous.version,
            action=Action.DELETE,
            replaces=previous.unique_id,
            patient=patient,
            laboratory=context.laboratory,
            validator=validator,
            validated=context.now,
            created=context.now,
            prescriber=prescriber,
            order_number=order_number,
            filler_number=filler_number,
        )
    if corrected and previous is None:
        raise MappingError(
            "correction of a report that was never delivered (no previous version known)",
            location=first_obr.loc(25),
            reason="replacement_without_original",
        )
    if previous is not None:
        version, set_id, action, replaces = previous.version + 1, previous.set_id, Action.REPLACE, previous.unique_id
    else:
        version, set_id, action, replaces = 1, set_id_for(context.oid_root, sender, key), Action.PUBLISH, ""

    specimens: list[Specimen] = []
    batteries: list[Battery] = []
    for group in groups:
        obr = group.obr
        results = [
            _result(obx, context, status, " ".join(group.comments.get(obx.occurrence, [])).strip())
            for obx, status in zip(group.obx, statuses[obr.occurrence], strict=True)
            if status != "D"
        ]
        if not results:
            continue
        group_specimens = [_specimen(spm, context, len(specimens) + i + 1) for i, spm in enumerate(group.spm)]
        if not group_specimens and obr.text(obr.raw(7)):
            # No SPM (older senders): OBR-7 is the collection time, OBR-15 may carry the type.
            kind = obr.comp(15, 1) or "BLD"
            group_specimens = [
                Specimen(
                    id=f"{key}-{obr.occurrence}",
                    type=Code(code=kind, system=SPECIMEN_TYPE_SYSTEM, display=specimen_type_display(kind) or kind),
                    collected=parse_dtm(obr.text(obr.raw(7)), context.timezone, where="OBR-7", location=obr.loc(7)),
                )
            ]
        for specimen in group_specimens:
            if all(s.id != specimen.id for s in specimens):
                specimens.append(specimen)
        battery = _battery_code(obr, context)
        chapter = _chapter(obr, context, results, battery)
        batteries.append(
            Battery(
                code=battery or chapter,
                chapter=chapter,
                specimen_id=group_specimens[0].id if group_specimens else "",
                results=tuple(results),
                label=obr.comp(4, 2),
            )
        )

    release = next((g.obr.text(g.obr.raw(22)) for g in groups if g.obr.text(g.obr.raw(22))), "")
    validated = (
        parse_dtm(release, context.timezone, where="OBR-22", location=first_obr.loc(22)) if release else context.now
    )
    msh7 = msh.text(msh.raw(7))
    created = parse_dtm(msh7, context.timezone, where="MSH-7", location=msh.loc(7)) if msh7 else context.now
    received = min((s.received for s in specimens if s.received), default=None)
    return LabReport(
        prescribed=_prescribed(orc, context, specimens),
        unique_id=unique_id_for(context.oid_root, sender, key, version),
        set_id=set_id,
        version=version,
        action=action,
        replaces=replaces,
        patient=patient,
        laboratory=context.laboratory,
        validator=validator,
        validated=validated,
        prescriber=prescriber,
        order_number=order_number,
        filler_number=filler_number,
        created=created,
        received=received,
        specimens=tuple(specimens),
        batteries=tuple(batteries),
    )
