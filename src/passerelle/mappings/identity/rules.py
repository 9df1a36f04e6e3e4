"""Identity rules applied to a document before it may reach a patient space (docs/interop-reference.md, "INS").

Only a qualified INS feeds the DMP. For HL7v2 sources that means: a PID-3 repetition with CX-5 =
``INS`` under an INS assigning authority allowed in this environment (.8/.9 in production, plus
.10/.11 in test), a 15-character matricule whose NIR key verifies (Corsica 2A/2B handled), PID-32
containing ``VALI``, and the same INS (value and OID) in the CDA ``recordTarget``. The billing NIR
(CX-5 ``NH``/``SS``, namespace ``ASIP-SANTE-NIR``) is never used. For a CDA received alone
(HTTP/folder) the CDA is the only source: the INS root must be allowed, the key must verify and the
traits the structuration minimale requires with an INS (birth family name, given name, birth date,
sex) must be present; the ANS rule that an INS is only written once the identity is qualified is
what makes it usable (ADR 0010).

Every refusal is an :class:`IdentityError` whose message starts with "identity not qualified:" and
names the rule broken, never a value (no INS, name or date in the text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from passerelle.errors import IdentityError
from passerelle.mappings.document import (
    INS_NIA_OID,
    INS_NIR_DEMO_OID,
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    IdentityStatus,
    Patient,
)
from passerelle.mappings.identity.ins import allowed_ins_oids, is_valid_nir

ALL_INS_OIDS = frozenset({INS_NIR_OID, INS_NIA_OID, INS_NIR_TEST_OID, INS_NIR_DEMO_OID})
#: INS-C (obsolete, computed from the Vitale card): never usable.
OBSOLETE_INS_C_OIDS = frozenset({"1.2.250.1.213.1.4.2", "1.2.250.1.213.1.4.6", "1.2.250.1.213.1.4.7"})
QUALIFIED_PID32 = "VALI"


@dataclass(frozen=True, slots=True)
class Cx:
    """One PID-3 repetition, already unescaped: CX-1, CX-4.1 namespace, CX-4.2 OID, CX-5 type."""

    value: str
    namespace: str = ""
    oid: str = ""
    type_code: str = ""


def _refuse(why: str) -> IdentityError:
    return IdentityError(f"identity not qualified: {why}", location="PID^1^3")


def _check_ins(value: str, oid: str, test_environment: bool, where: str) -> None:
    if oid not in allowed_ins_oids(test_environment):
        if oid in (INS_NIR_TEST_OID, INS_NIR_DEMO_OID):
            raise _refuse(f"{where} INS uses the test/demo authority {oid}, not allowed in production")
        raise _refuse(f"{where} INS assigning authority {oid or '(none)'} is not an allowed INS OID")
    if not is_valid_nir(value):
        raise _refuse(f"{where} INS is not 15 characters with a valid NIR key")


def ins_from_pid3(repetitions: Sequence[Cx]) -> Cx:
    """The INS repetition of PID-3 (CX-5 ``INS`` under an INS OID); refuses when absent or ambiguous."""
    candidates = [cx for cx in repetitions if cx.type_code.upper() == "INS" and cx.oid in ALL_INS_OIDS and cx.value]
    if not candidates:
        if any(cx.type_code.upper() == "INS" and cx.oid in OBSOLETE_INS_C_OIDS for cx in repetitions):
            raise _refuse("PID-3 carries only an obsolete INS-C")
        if any(cx.type_code.upper() == "INS" for cx in repetitions):
            raise _refuse("PID-3 INS has no INS assigning authority OID in CX-4")
        raise _refuse("PID-3 has no INS (CX-5 = INS)")
    distinct = {(cx.value.upper(), cx.oid) for cx in candidates}
    if len(distinct) > 1:
        raise _refuse("PID-3 carries more than one different INS")
    return candidates[0]


def qualify_hl7_patient(
    pid3: Sequence[Cx],
    pid32: Sequence[str],
    cda_patient: Patient,
    *,
    test_environment: bool,
) -> Patient:
    """Apply the HL7v2 identity rules; return the CDA patient with the qualified INS, or refuse."""
    cx = ins_from_pid3(pid3)
    _check_ins(cx.value.upper(), cx.oid, test_environment, "PID-3")
    if QUALIFIED_PID32 not in {v.strip().upper() for v in pid32}:
        raise _refuse("PID-32 is not VALI")
    if not cda_patient.ins:
        raise _refuse("CDA recordTarget has no INS")
    if (cda_patient.ins.upper(), cda_patient.ins_oid) != (cx.value.upper(), cx.oid):
        raise _refuse("PID-3 INS differs from the CDA recordTarget INS")
    _check_traits(cda_patient)
    return cda_patient.model_copy(
        update={"ins": cx.value.upper(), "ins_oid": cx.oid, "identity_status": IdentityStatus.QUALIFIED}
    )


def qualify_cda_patient(patient: Patient, *, test_environment: bool) -> Patient:
    """Apply the rules for a CDA received alone (no PID-32): INS root, key and traits."""
    if not patient.ins:
        raise IdentityError(
            "identity not qualified: CDA recordTarget has no INS (roots .8/.9/.10/.11)",
            location="recordTarget",
        )
    try:
        _check_ins(patient.ins, patient.ins_oid, test_environment, "CDA recordTarget")
    except IdentityError as exc:
        raise IdentityError(exc.message, location="recordTarget") from None
    _check_traits(patient)
    return patient.model_copy(update={"identity_status": IdentityStatus.QUALIFIED})


def _check_traits(patient: Patient) -> None:
    missing = [
        name
        for name, value in (
            ("birth family name", patient.family),
            ("given name", patient.given),
            ("birth date", patient.birth_date),
            ("sex", patient.sex),
        )
        if not value
    ]
    if missing:
        raise IdentityError(
            "identity not qualified: CDA recordTarget lacks INS traits: " + ", ".join(missing),
            location="recordTarget",
        )
