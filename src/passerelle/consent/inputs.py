"""What the consent policy reads besides the document: its own view of the patient's space and of the
local registry, declared here so that the policy depends on no transport.

The dispatch worker's gate (``connector/dispatch/consent_gate.py``) translates the space port's status
answer into :class:`SpaceView`, and the journal's registry row into :class:`RegistryEntry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class SpaceState(StrEnum):
    """The state of the patient's space as the policy reads it, whatever told it (docs/consent.md)."""

    ACTIF = "ACTIF"  # open: documents may be fed
    FERME = "FERME"  # closed by the patient or at death: final refusal
    INEXISTANT = "INEXISTANT"  # not created yet: wait (park) until the horizon


@dataclass(frozen=True)
class SpaceView:
    """The remote status of the space for one patient and one author, as the policy needs it."""

    state: SpaceState
    opposed: bool = False
    author_blocked: bool = False
    minor: bool = False


class FeedingConsent(StrEnum):
    """PAM France ZFA-9: the patient's answer about feeding the space."""

    NOT_COLLECTED = "NA"
    OPPOSED = "IO"  # informed, opposed
    NOT_OPPOSED = "INO"  # informed, not opposed


@dataclass(frozen=True)
class RegistryEntry:
    """What the facility collected about the patient's space (PAM France ADT ZFA)."""

    dmp_status: SpaceState | None = None  # ZFA-1
    status_collected_at: datetime | None = None  # ZFA-2
    closed_at: datetime | None = None  # ZFA-3
    feeding: FeedingConsent = FeedingConsent.NOT_COLLECTED  # ZFA-9
    feeding_at: datetime | None = None  # ZFA-10
    consultation: str = "NA"  # ZFA-11 (NA / INC / IC): consultation, not feeding; informative here
    consultation_at: datetime | None = None  # ZFA-12

    @classmethod
    def from_fields(
        cls,
        *,
        dmp_status: str = "",
        feeding: str = "",
        consultation: str = "",
        status_collected_at: datetime | None = None,
        closed_at: datetime | None = None,
        feeding_at: datetime | None = None,
        consultation_at: datetime | None = None,
    ) -> RegistryEntry:
        """Build from the raw ZFA strings; unknown values count as "not collected"."""
        status = dmp_status.strip().upper()
        answer = feeding.strip().upper()
        return cls(
            dmp_status=SpaceState(status) if status in SpaceState.__members__ else None,
            status_collected_at=status_collected_at,
            closed_at=closed_at,
            feeding=FeedingConsent(answer) if answer in _FEEDING_CODES else FeedingConsent.NOT_COLLECTED,
            feeding_at=feeding_at,
            consultation=consultation.strip().upper() or "NA",
            consultation_at=consultation_at,
        )


_FEEDING_CODES = frozenset(f.value for f in FeedingConsent)
