"""Patient identifiers from PID: INS (docs/interop-reference.md, "INS"), IPP, lane key, the Patient model."""

from __future__ import annotations

from dataclasses import dataclass

from passerelle.mappings.document import IdentityStatus, Patient
from passerelle.mappings.hl7v2.decode import Message, Segment
from passerelle.mappings.identity.ins import allowed_ins_oids, is_valid_nir

MAX_IDENTIFIERS = 50
#: PID-32 codes meaning the identity is not (yet) trusted.
_PROVISIONAL_CODES = frozenset({"VIDE", "PROV", "DOUT", "FICT"})


@dataclass(frozen=True, slots=True)
class PatientIds:
    ins: str = ""  # usable INS (qualified only), key included
    ins_oid: str = ""
    ins_present_unqualified: bool = False  # an INS was sent without PID-32 VALI: ignored (PAM §6.6.15)
    identity_status: IdentityStatus = IdentityStatus.UNKNOWN
    ipp: str = ""
    ipp_authority: str = ""  # CX-4 OID, else namespace

    def patient(self, *, family: str, given: str, birth_date: str, sex: str) -> Patient:
        """The document-model patient these identifiers belong to, with its traits."""
        return Patient(
            ins=self.ins, ins_oid=self.ins_oid, identity_status=self.identity_status, local_id=self.ipp,
            local_id_oid=self.ipp_authority, family=family, given=given, birth_date=birth_date, sex=sex,
        )  # fmt: skip

    def lane(self, sender: str) -> str:
        """Ordering key: the qualified INS, else sender + IPP, else "" (own lane)."""
        if self.ins:
            return f"ins:{self.ins}"
        if self.ipp:
            return f"ipp:{sender}:{self.ipp_authority}:{self.ipp}"
        return ""


def extract_ids(msg: Message, pid: Segment | None, *, test_environment: bool) -> PatientIds:
    """INS per PAM France: CX-5 ``INS``, CX-4.2 an INS OID (.8/.9; .10/.11 in test), valid key, and
    ``VALI`` among PID-32 repetitions. The billing NIR (CX-5 ``NH``, namespace ``ASIP-SANTE-NIR``) is
    never taken."""
    if pid is None:
        return PatientIds()
    oids = allowed_ins_oids(test_environment)
    ins = ins_oid = ipp = ipp_auth = ""
    d = msg.delimiters
    # a handful of identifiers is normal; the cap bounds the work on a hostile PID-3
    for rep in pid.field(3).split(d.repetition, MAX_IDENTIFIERS)[:MAX_IDENTIFIERS]:
        cx_type = msg.component(rep, 5).upper()
        if cx_type == "INS" and not ins:
            value = msg.component(rep, 1).upper()
            oid = msg.component(rep, 4, 2)
            if oid in oids and is_valid_nir(value):
                ins, ins_oid = value, oid
        elif cx_type == "PI" and not ipp:
            ipp = msg.component(rep, 1)
            ipp_auth = msg.component(rep, 4, 2) or msg.component(rep, 4, 1)
    codes = {
        c.split(d.component)[0].strip().upper()
        for c in pid.field(32).split(d.repetition, MAX_IDENTIFIERS)[:MAX_IDENTIFIERS]
    }
    if "VALI" in codes and ins:
        status = IdentityStatus.QUALIFIED
    elif codes & _PROVISIONAL_CODES or ins:
        status = IdentityStatus.PROVISIONAL
    else:
        status = IdentityStatus.UNKNOWN
    if status is not IdentityStatus.QUALIFIED and ins:
        return PatientIds(ins_present_unqualified=True, identity_status=status, ipp=ipp, ipp_authority=ipp_auth)
    return PatientIds(ins, ins_oid, False, status, ipp, ipp_auth)


def patient_from_pid(msg: Message, *, test_environment: bool) -> Patient:
    """The document-model Patient (names from PID-5 type L, else the first name)."""
    pid = msg.first("PID")
    ids = extract_ids(msg, pid, test_environment=test_environment)
    if pid is None:
        return Patient()
    names = msg.repetitions(pid.field(5))
    chosen = next((n for n in names if msg.component(n, 7).upper() == "L"), names[0] if names else "")
    birth = msg.value(pid, 7)[:8]
    sex = msg.value(pid, 8).upper()[:1]
    return ids.patient(
        family=msg.component(chosen, 1) if chosen else "",
        given=msg.component(chosen, 2) if chosen else "",
        birth_date=birth,
        sex=sex if sex in {"M", "F", "U"} else "U",
    )
