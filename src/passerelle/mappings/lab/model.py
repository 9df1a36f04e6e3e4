"""The typed lab report a CR-BIO is generated from (pure data, validated on construction).

Times are timezone-aware datetimes; codes are already translated (LOINC, UCUM, HL7 interpretation).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from passerelle.mappings.cda.writer import Address as Address  # part of the lab report vocabulary
from passerelle.mappings.document import PRODUCTION_INS_OIDS, TEST_INS_OIDS, Action, Code, IdentityStatus, Lineage
from passerelle.mappings.document import Patient as DocumentPatient
from passerelle.mappings.identity.ins import is_valid_nir

LOINC_SYSTEM = "2.16.840.1.113883.6.1"
SPECIMEN_TYPE_SYSTEM = "2.16.840.1.113883.18.311"  # HL7 v2 table 0487, as in the ANS examples
FACILITY_LAB = Code(code="SA25", system="1.2.250.1.71.4.2.4", display="Laboratoire de biologie médicale")
PRACTICE_AMBULATOIRE = Code(code="AMBULATOIRE", system="1.2.250.1.213.1.1.4.9", display="Ambulatoire")
BIOLOGIST = Code(code="G15_10/SM03", system="1.2.250.1.213.1.1.4.5", display="Médecin - Biologie médicale (SM)")


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Person(_Frozen):
    """A health professional: IdNat_PS (``8`` + RPPS...) under 1.2.250.1.71.4.2.1."""

    id: str
    family: str
    given: str = ""
    prefix: str = ""  # M / MME
    suffix: str = ""  # DR / PR
    profession: Code | None = None  # TRE_G15 (G15_10/SM03...)
    address: Address = Field(default_factory=Address)
    telecom: tuple[str, ...] = ()  # URIs: tel:..., mailto:...


class Laboratory(_Frozen):
    """The laboratory (structure): FINESS (9 characters) → IdNat_Struct ``1`` + FINESS."""

    finess: str
    name: str
    address: Address = Field(default_factory=Address)
    telecom: tuple[str, ...] = ()
    cofrac: str = ""  # accreditation number, when known
    facility_type: Code = FACILITY_LAB
    practice_setting: Code = PRACTICE_AMBULATOIRE

    @property
    def structure_id(self) -> str:
        return f"1{self.finess}"


class LabPatient(_Frozen):
    """The patient with the five INS traits the structuration minimale requires."""

    ins: str
    ins_oid: str
    identity_status: IdentityStatus = IdentityStatus.QUALIFIED
    local_id: str = ""
    local_id_oid: str = ""
    birth_family: str
    birth_given_names: str  # every birth given name, space separated
    first_birth_given: str
    used_family: str = ""
    used_given: str = ""
    birth_date: str  # YYYYMMDD
    sex: str  # M / F / U
    birthplace_cog: str = ""  # INSEE COG code of the birth place (99xxx abroad)
    address: Address = Field(default_factory=Address)
    telecom: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _ins(self) -> LabPatient:
        if self.ins_oid not in PRODUCTION_INS_OIDS | TEST_INS_OIDS:
            raise ValueError("ins_oid must be an INS assigning authority (1.2.250.1.213.1.4.8/.9/.10/.11)")
        if not is_valid_nir(self.ins):
            raise ValueError("ins must be 15 characters with a valid NIR key")
        return self

    @field_validator("sex")
    @classmethod
    def _sex(cls, value: str) -> str:
        if value not in {"M", "F", "U"}:
            raise ValueError("sex must be M, F or U")
        return value

    @field_validator("birth_date")
    @classmethod
    def _birth_date(cls, value: str) -> str:
        if len(value) != 8 or not value.isdigit():
            raise ValueError("birth_date must be YYYYMMDD")
        return value

    def to_patient(self) -> DocumentPatient:
        """The document-model patient: identifiers and traits, names as born."""
        shared = self.model_dump(include=_DOCUMENT_PATIENT_FIELDS)
        return DocumentPatient(**shared, family=self.birth_family, given=self.first_birth_given)


_DOCUMENT_PATIENT_FIELDS = {"ins", "ins_oid", "identity_status", "local_id", "local_id_oid", "birth_date", "sex"}


class Specimen(_Frozen):
    id: str  # specimen id (barcode), unique in the report
    type: Code  # HL7 0487 (BLD, SER, UR...)
    collected: datetime
    received: datetime | None = None

    @field_validator("collected", "received")
    @classmethod
    def _aware_times(cls, value: datetime | None) -> datetime | None:
        return _aware(value)


class ValueKind(StrEnum):
    QUANTITY = "PQ"  # numeric with a UCUM unit
    INTERVAL = "IVL_PQ"  # "<5", ">=10": a bound with a comparator
    CODED = "CD"
    TEXT = "ST"


class ResultStatus(StrEnum):
    FINAL = "final"  # OBX-11 F
    CORRECTED = "corrected"  # OBX-11 C: final, replacing an earlier value
    CANCELLED = "cancelled"  # OBX-11 X: could not be obtained (statusCode aborted)


class ReferenceRange(_Frozen):
    low: Decimal | None = None
    high: Decimal | None = None
    unit: str = ""
    text: str = ""  # when the range is not numeric ("négatif")


class LabResult(_Frozen):
    code: Code  # LOINC (after translation)
    local_code: str = ""  # the sender's code, kept for the narrative and traceability
    label: str = ""  # the sender's label (narrative), defaults to the LOINC display
    kind: ValueKind
    number: Decimal | None = None
    unit: str = ""  # UCUM
    comparator: str = ""  # for INTERVAL: < <= > >=
    coded: Code | None = None
    text: str = ""
    reference_range: ReferenceRange | None = None
    interpretation: tuple[str, ...] = ()  # HL7 ObservationInterpretation codes (H, L, N, A...)
    status: ResultStatus = ResultStatus.FINAL
    observed: datetime | None = None
    comment: str = ""

    @field_validator("observed")
    @classmethod
    def _aware_times(cls, value: datetime | None) -> datetime | None:
        return _aware(value)

    @model_validator(mode="after")
    def _value_matches_kind(self) -> LabResult:
        if self.status is ResultStatus.CANCELLED:
            return self
        if self.kind in (ValueKind.QUANTITY, ValueKind.INTERVAL) and (self.number is None or not self.unit):
            raise ValueError(f"{self.kind} result needs a number and a UCUM unit")
        if self.kind is ValueKind.INTERVAL and self.comparator not in {"<", "<=", ">", ">="}:
            raise ValueError("interval result needs a comparator")
        if self.kind is ValueKind.CODED and self.coded is None:
            raise ValueError("coded result needs a code")
        if self.kind is ValueKind.TEXT and not self.text:
            raise ValueError("text result needs a text")
        return self

    @property
    def display_label(self) -> str:
        return self.label or self.code.display


class Battery(_Frozen):
    """One OBR: a battery (panel) of results in one chapter of the report."""

    code: Code  # LOINC of the battery (or the chapter when none)
    chapter: Code  # LOINC chapter (18719-5 Biochimie, 18723-7 Hématologie...)
    specimen_id: str = ""
    results: tuple[LabResult, ...]
    label: str = ""

    @field_validator("results")
    @classmethod
    def _non_empty(cls, value: tuple[LabResult, ...]) -> tuple[LabResult, ...]:
        if not value:
            raise ValueError("a battery needs at least one result")
        return value


class LabReport(_Frozen):
    """Everything a CR-BIO 2024.01 document is generated from."""

    unique_id: str  # root-only OID of this version
    set_id: str
    version: int = 1
    action: Action = Action.PUBLISH
    replaces: str = ""  # unique id of the previous version (replacement) or of the deleted document
    patient: LabPatient
    laboratory: Laboratory
    validator: Person  # biologist who validated the report (author, legal authenticator, responsible)
    validated: datetime  # validation / release time
    prescriber: Person | None = None
    prescribed: datetime | None = None  # when the order was written (ORC-9 / ORC-15)
    order_number: str = ""  # placer order number (ORC-2 / OBR-2)
    order_oid: str = "1.2.250.1.213.1.1.9"
    filler_number: str = ""  # laboratory request number (ORC-3 / OBR-3)
    created: datetime  # document effectiveTime
    received: datetime | None = None  # when the lab received the request / specimens
    specimens: tuple[Specimen, ...] = ()
    batteries: tuple[Battery, ...] = ()
    confidentiality: str = "N"
    language: str = "fr-FR"

    @field_validator("validated", "created", "received", "prescribed")
    @classmethod
    def _aware_times(cls, value: datetime | None) -> datetime | None:
        return _aware(value)

    @model_validator(mode="after")
    def _consistent(self) -> LabReport:
        if self.version < 1:
            raise ValueError("version starts at 1")
        if self.action is Action.REPLACE and not (self.replaces and self.version > 1):
            raise ValueError("a replacement names the version it replaces and has version > 1")
        if self.action is Action.DELETE:
            if not self.replaces:
                raise ValueError("a deletion names the document it deletes")
            return self
        if not self.batteries:
            raise ValueError("a report needs at least one battery")
        specimen_ids = {s.id for s in self.specimens}
        for battery in self.batteries:
            if battery.specimen_id and battery.specimen_id not in specimen_ids:
                raise ValueError("battery refers to an unknown specimen")
        if self.confidentiality not in {"N", "R", "V"}:
            raise ValueError("confidentiality is N, R or V")
        return self

    @property
    def lineage(self) -> Lineage:
        return Lineage(self.unique_id, self.set_id, self.version, self.action, self.replaces)

    @property
    def chapters(self) -> tuple[Code, ...]:
        seen: dict[str, Code] = {}
        for battery in self.batteries:
            seen.setdefault(battery.chapter.code, battery.chapter)
        return tuple(seen.values())

    @property
    def results(self) -> tuple[LabResult, ...]:
        return tuple(r for b in self.batteries for r in b.results)
