"""Site visibility rules: data a site edits (``config/visibility-rules.yaml``), loaded into a frozen model.

The loader takes the YAML *text* (the caller reads the file), so the rules stay pure data and the
policy stays a pure function. Unknown keys are errors: a typo in a privacy rule must not be ignored.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from passerelle.mappings.document import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
)


class ConflictPolicy(StrEnum):
    """What to do with a document asked to be both INVISIBLE_PATIENT and MASQUE_PS when the space does
    not allow the combination (DMP parameter ``cumul-invisible_patient-masque_ps`` false)."""

    REFUSE = "refuse"  # refuse "conflicting_visibility": the sender must choose (default)
    DROP_MASQUE_PS = "drop_masque_ps"  # keep the document away from the patient, visible to professionals


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VisibilityRule(_Strict):
    """Add visibility codes to documents matching a type, class or result code.

    A rule matches when every criterion it states matches: ``type_code`` against the document type,
    ``class_code`` against its class, ``result_code`` against any result code the mapper found in the
    document. ``system`` (an OID), when given, restricts the codes to that code system.
    """

    name: str
    type_code: str = ""
    class_code: str = ""
    result_code: str = ""
    system: str = ""
    add: tuple[str, ...] = (INVISIBLE_PATIENT,)
    note: str = ""

    @model_validator(mode="after")
    def _check(self) -> VisibilityRule:
        if not (self.type_code or self.class_code or self.result_code):
            raise ValueError(f"rule {self.name!r}: give at least one of type_code, class_code, result_code")
        allowed = {MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX}
        bad = [code for code in self.add if code not in allowed]
        if bad or not self.add:
            raise ValueError(f"rule {self.name!r}: add must list codes among {sorted(allowed)}")
        return self


class Parking(_Strict):
    #: A document parked (identity not qualified, space not active, status unknown) for longer than this
    #: is refused.
    horizon_days: float = Field(default=30.0, gt=0)
    #: When a parked document is looked at again.
    recheck_minutes: float = Field(default=60.0, gt=0)
    #: Shorter re-check when the space status could not be looked up.
    unknown_status_recheck_minutes: float = Field(default=5.0, gt=0)

    @property
    def horizon(self) -> timedelta:
        return timedelta(days=self.horizon_days)

    @property
    def recheck(self) -> timedelta:
        return timedelta(minutes=self.recheck_minutes)

    @property
    def unknown_status_recheck(self) -> timedelta:
        return timedelta(minutes=self.unknown_status_recheck_minutes)


class SiteRules(_Strict):
    version: int = 1
    allow_invisible_patient_and_masque_ps: bool = False
    on_visibility_conflict: ConflictPolicy = ConflictPolicy.REFUSE
    parking: Parking = Field(default_factory=Parking)
    rules: tuple[VisibilityRule, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> SiteRules:
        if self.version != 1:
            raise ValueError(f"unsupported visibility rules version {self.version}")
        names = [rule.name for rule in self.rules]
        if len(names) != len(set(names)):
            raise ValueError("rule names must be unique")
        return self


DEFAULT_RULES = SiteRules()


def load_rules(text: str) -> SiteRules:
    """Parse and validate the rules YAML. Raises ValueError with a readable message on any problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"visibility rules: invalid YAML ({exc})") from exc
    if data is None:
        return DEFAULT_RULES
    if not isinstance(data, dict):
        raise ValueError("visibility rules: the document must be a mapping")
    try:
        return SiteRules.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"visibility rules: {exc}") from exc
