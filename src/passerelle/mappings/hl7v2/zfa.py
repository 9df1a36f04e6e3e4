"""PAM France ZFA segment (DMP status and consents, docs/interop-reference.md, "PAM France consent")."""

from __future__ import annotations

from dataclasses import dataclass

from passerelle.mappings.hl7v2.decode import Message, Segment
from passerelle.mappings.hl7v2.errors import TableValueError
from passerelle.mappings.hl7v2.patient import PatientIds

DMP_STATUSES = frozenset({"", "ACTIF", "FERME", "INEXISTANT"})
FEEDING_CODES = frozenset({"", "NA", "IO", "INO"})  # not collected / opposed / not opposed
CONSULTATION_CODES = frozenset({"", "NA", "INC", "IC"})  # not collected / refuses / consents


@dataclass(frozen=True, slots=True)
class ConsentDates:
    collected: str = ""  # ZFA-2
    closed: str = ""  # ZFA-3
    feeding: str = ""  # ZFA-10
    consultation: str = ""  # ZFA-12


@dataclass(frozen=True, slots=True)
class ConsentFeed:
    ins: str
    ins_oid: str
    dmp_status: str  # ZFA-1 ACTIF / FERME / INEXISTANT ("" = not given)
    feeding_opposition: bool  # ZFA-9 == IO
    feeding: str  # ZFA-9 as sent (NA / IO / INO)
    consultation: str  # ZFA-11 (NA / INC / IC)
    dates: ConsentDates

    @property
    def blocks_feeding(self) -> bool:
        """Opposition, or a closed/absent DMP (docs/interop-reference.md, "PAM France consent")."""
        return self.feeding_opposition or self.dmp_status in {"FERME", "INEXISTANT"}


def parse_zfa(msg: Message, zfa: Segment, ids: PatientIds) -> ConsentFeed:
    status = msg.value(zfa, 1).upper()
    feeding = msg.value(zfa, 9).upper()
    consultation = msg.value(zfa, 11).upper()
    if status not in DMP_STATUSES:
        raise TableValueError("ZFA-1 DMP status not in ACTIF/FERME/INEXISTANT", location="ZFA^1^1")
    if feeding not in FEEDING_CODES:
        raise TableValueError("ZFA-9 must be NA, IO or INO", location="ZFA^1^9")
    if consultation not in CONSULTATION_CODES:
        raise TableValueError("ZFA-11 must be NA, INC or IC", location="ZFA^1^11")
    return ConsentFeed(
        ins=ids.ins,
        ins_oid=ids.ins_oid,
        dmp_status=status,
        feeding_opposition=feeding == "IO",
        feeding=feeding,
        consultation=consultation,
        dates=ConsentDates(
            collected=msg.value(zfa, 2),
            closed=msg.value(zfa, 3),
            feeding=msg.value(zfa, 10),
            consultation=msg.value(zfa, 12),
        ),
    )
