"""Who and what a LAB-3 ORU^R01 names: the patient (PID, with the INS rules), the practitioners
(XCN / the CNN of OBR-32) and the specimens (SPM, or OBR-7/15 from older senders)."""

from __future__ import annotations

from datetime import tzinfo

from passerelle.mappings.codes import specimen_type_display
from passerelle.mappings.document import Code, IdentityStatus, Patient
from passerelle.mappings.identity.rules import Cx, qualify_hl7_patient
from passerelle.mappings.lab.model import SPECIMEN_TYPE_SYSTEM, Address, LabPatient, Person, Specimen
from passerelle.mappings.lab.segments import Seg, parse_dtm


def practitioner(seg: Seg, n: int, *, required: bool = True, in_subcomponents: bool = False) -> Person | None:
    """The first repetition of XCN field ``n`` (ORC-12, OBR-16) or of the NDL of OBR-32, whose
    person (CNN) is written in subcomponents of its first component.

    The identifier becomes an IdNat_PS: ``8`` + RPPS, ``0`` + ADELI (XCN-13 says which; an 11-digit
    number without type is taken as an RPPS); an identifier already in IdNat_PS form is kept.
    """
    reps = seg.reps(n)
    if not reps:
        return None
    if in_subcomponents:
        parts = [seg.part(reps[0], 1, sub) for sub in range(1, 7)]
        id_type = ""
    else:
        parts = [seg.part(reps[0], comp) for comp in range(1, 7)]
        id_type = seg.part(reps[0], 13).upper()
    ident, family, given, _, suffix, prefix = parts
    if not ident:
        return None
    if not family:
        if not required:
            return None
        raise seg.error(n, "practitioner has an identifier but no family name")
    return Person(id=_idnat_ps(ident, id_type), family=family, given=given, suffix=suffix, prefix=prefix)


def _idnat_ps(ident: str, id_type: str) -> str:
    if id_type == "RPPS" or (not id_type and len(ident) == 11 and ident.isdigit()):
        return ident if len(ident) == 12 and ident.startswith("8") else f"8{ident}"
    if id_type == "ADELI" and len(ident) == 9:
        return f"0{ident}"
    return ident


def _identifiers(pid: Seg) -> list[Cx]:
    return [
        Cx(value=pid.part(rep, 1), namespace=pid.part(rep, 4, 1), oid=pid.part(rep, 4, 2), type_code=pid.part(rep, 5))
        for rep in pid.reps(3)
    ]


def _names(pid: Seg) -> tuple[str, str, str, str, str]:
    """(birth family, first birth given, all birth given, used family, used given) from PID-5 L / D."""
    names = pid.reps(5)
    birth = next((rep for rep in names if pid.part(rep, 7).upper() == "L"), None)
    if birth is None:
        raise pid.error(5, "no birth name (name type L)")
    used = next((rep for rep in names if pid.part(rep, 7).upper() == "D"), "")
    first_given = pid.part(birth, 2)
    return pid.part(birth, 1), first_given, pid.part(birth, 3) or first_given, pid.part(used, 1), pid.part(used, 2)


def _addresses(pid: Seg) -> tuple[str, Address]:
    """(birthplace COG code from the BDL repetition, first home address)."""
    cog = ""
    address = Address()
    for rep in pid.reps(11):
        kind = pid.part(rep, 7).upper()
        if kind == "BDL":
            cog = pid.part(rep, 9)
        elif kind in {"H", ""} and address.empty:
            address = Address(street=pid.part(rep, 1), postal_code=pid.part(rep, 5), city=pid.part(rep, 3))
    return cog, address


def patient(pid: Seg, *, test_environment: bool) -> LabPatient:
    """The PID patient with a qualified INS (:func:`qualify_hl7_patient`) and the INS traits."""
    pid3 = _identifiers(pid)
    family, first_given, given_names, used_family, used_given = _names(pid)
    birth_date = pid.text(7)[:8]
    sex = pid.text(8).upper() or "U"
    sex = sex if sex in {"M", "F", "U"} else "U"
    traits = Patient(family=family, given=first_given, birth_date=birth_date, sex=sex)
    ins = next((cx for cx in pid3 if cx.type_code.upper() == "INS"), None)
    if ins is not None:
        traits = traits.model_copy(update={"ins": ins.value.upper(), "ins_oid": ins.oid})
    qualified = qualify_hl7_patient(pid3, pid.texts(32), traits, test_environment=test_environment)
    local = next((cx for cx in pid3 if cx.type_code.upper() == "PI" and cx.oid), None)
    cog, address = _addresses(pid)
    if len(birth_date) != 8 or not birth_date.isdigit():
        raise pid.error(7, "birth date missing or not YYYYMMDD")
    return LabPatient(
        ins=qualified.ins,
        ins_oid=qualified.ins_oid,
        identity_status=IdentityStatus.QUALIFIED,
        local_id=local.value if local else "",
        local_id_oid=local.oid if local else "",
        birth_family=family,
        birth_given_names=given_names,
        first_birth_given=first_given,
        used_family=used_family,
        used_given=used_given,
        birth_date=birth_date,
        sex=sex,
        birthplace_cog=cog,
        address=address,
    )


def specimen(spm: Seg, tz: tzinfo, index: int) -> Specimen:
    """SPM: id (SPM-2 EIP, first non-empty part), type (SPM-4), collection (SPM-17) and reception (SPM-18)."""
    ident = next((v for rep in spm.reps(2) for comp in (1, 2) if (v := spm.part(rep, comp, 1))), "")
    kind = spm.value(4, 1).upper()
    if not kind:
        raise spm.error(4, "specimen type is empty")
    collected = spm.time(17, tz)
    if collected is None:
        raise spm.error(17, "specimen collection time is empty")
    return Specimen(
        id=ident or f"specimen-{index}",
        type=Code(
            code=kind, system=SPECIMEN_TYPE_SYSTEM, display=spm.value(4, 2) or specimen_type_display(kind) or kind
        ),
        collected=collected,
        received=spm.time(18, tz),
    )


def specimen_from_request(obr: Seg, tz: tzinfo, key: str) -> Specimen | None:
    """No SPM (older senders): OBR-7 is the collection time, OBR-15 may carry the type (default blood)."""
    collected = obr.value(7)
    if not collected:
        return None
    kind = obr.value(15, 1) or "BLD"
    return Specimen(
        id=f"{key}-{obr.occurrence}",
        type=Code(code=kind, system=SPECIMEN_TYPE_SYSTEM, display=specimen_type_display(kind) or kind),
        collected=parse_dtm(collected, tz, where="OBR-7", location=obr.loc(7)),
    )
