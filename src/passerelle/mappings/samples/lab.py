"""Synthetic lab data (no real patient): a 20-result chemistry + haematology panel, as a LabReport and as
the LAB-3 ORU^R01 a lab information system would send for it. Used by tests and the demo."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from passerelle.mappings.codes import LoincTable, parse_loinc_csv
from passerelle.mappings.document import INS_NIR_TEST_OID, Code, Lineage
from passerelle.mappings.identity.ins import with_key
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

PARIS = timezone(timedelta(hours=1))
SAMPLE_OID_ROOT = "1.2.250.1.999.7.1"
SAMPLE_SENDER = "SIL-DEMO^LABO-DEMO"
PRESCRIBED = datetime(2024, 1, 3, 17, 0, tzinfo=PARIS)
COLLECTED = datetime(2024, 1, 4, 7, 35, tzinfo=PARIS)
RECEIVED = datetime(2024, 1, 4, 9, 22, tzinfo=PARIS)
OBSERVED = datetime(2024, 1, 4, 10, 30, tzinfo=PARIS)
VALIDATED = datetime(2024, 1, 4, 11, 20, tzinfo=PARIS)
CHEMISTRY = Code(code="18719-5", system=LOINC_SYSTEM, display="Biochimie")
HAEMATOLOGY = Code(code="18723-7", system=LOINC_SYSTEM, display="Hématologie")


@dataclass(frozen=True)
class PanelRow:
    local: str  # the lab's own code
    loinc: str
    display: str
    value: str
    unit: str  # as the lab writes it (not always UCUM)
    ucum: str
    low: str
    high: str
    flag: str


#: 12 chemistry + 8 haematology results; local codes, lab units, ranges and flags as a SIL sends them.
CHEMISTRY_ROWS = (
    PanelRow("GLU", "2345-7", "Glucose [Masse/Volume] Sérum/Plasma", "0.95", "g/l", "g/L", "0.70", "1.10", "N"),
    PanelRow("UREE", "22664-7", "Urée [Moles/Volume] Sérum/Plasma", "5.2", "mmol/l", "mmol/L", "2.5", "7.5", "N"),
    PanelRow("CREA", "14682-9", "Créatinine [Moles/Volume] Sérum/Plasma", "112", "µmol/l", "umol/L", "45", "104", "H"),
    PanelRow("NA", "2951-2", "Sodium [Moles/Volume] Sérum/Plasma", "139", "mmol/l", "mmol/L", "136", "145", "N"),
    PanelRow("K", "2823-3", "Potassium [Moles/Volume] Sérum/Plasma", "5.6", "mmol/l", "mmol/L", "3.5", "5.1", "H"),
    PanelRow("CL", "2075-0", "Chlorure [Moles/Volume] Sérum/Plasma", "101", "mmol/l", "mmol/L", "98", "107", "N"),
    PanelRow("BICAR", "1963-8", "Bicarbonate [Moles/Volume] Sérum/Plasma", "24", "mmol/l", "mmol/L", "22", "29", "N"),
    PanelRow("CA", "2000-8", "Calcium [Moles/Volume] Sérum/Plasma", "2.35", "mmol/l", "mmol/L", "2.15", "2.55", "N"),
    PanelRow("PROT", "2885-2", "Protéines [Masse/Volume] Sérum/Plasma", "72", "g/l", "g/L", "64", "83", "N"),
    PanelRow("ALAT", "1742-6", "Alanine aminotransférase [Activité enzymatique/Volume] Sérum/Plasma", "48", "UI/l",
             "[IU]/L", "0", "41", "H"),
    PanelRow("ASAT", "1920-8", "Aspartate aminotransférase [Activité enzymatique/Volume] Sérum/Plasma", "35",
             "UI/l", "[IU]/L", "0", "40", "N"),
    PanelRow("CRP", "1988-5", "Protéine C réactive [Masse/Volume] Sérum/Plasma", "3.1", "mg/l", "mg/L", "0", "5", "N"),
)  # fmt: skip
HAEMATOLOGY_ROWS = (
    PanelRow("GB", "6690-2", "Leucocytes [Nombre/Volume] Sang", "11.8", "G/l", "10*9/L", "4.0", "10.0", "H"),
    PanelRow("GR", "789-8", "Érythrocytes [Nombre/Volume] Sang", "4.62", "T/l", "10*12/L", "4.28", "5.78", "N"),
    PanelRow("HB", "718-7", "Hémoglobine [Masse/Volume] Sang", "13.9", "g/dl", "g/dL", "13.0", "17.0", "N"),
    PanelRow("HT", "4544-3", "Hématocrite [Fraction volumique] Sang", "41.5", "%", "%", "39", "49", "N"),
    PanelRow("VGM", "787-2", "Volume globulaire moyen [Volume d'entité] Érythrocytes", "89.8", "fl", "fL", "80",
             "100", "N"),
    PanelRow("PLQ", "777-3", "Plaquettes [Nombre/Volume] Sang", "142", "G/l", "10*9/L", "150", "400", "L"),
    PanelRow("PNN", "751-8", "Polynucléaires neutrophiles [Nombre/Volume] Sang", "8.9", "G/l", "10*9/L", "1.8",
             "7.5", "H"),
    PanelRow("LYMPH", "731-0", "Lymphocytes [Nombre/Volume] Sang", "1.9", "G/l", "10*9/L", "1.0", "4.0", "N"),
)  # fmt: skip
#: The corrected potassium of version 2 (the first sample was haemolysed).
CORRECTED_POTASSIUM = PanelRow(
    "K", "2823-3", "Potassium [Moles/Volume] Sérum/Plasma", "4.4", "mmol/l", "mmol/L", "3.5", "5.1", "N"
)

SAMPLE_INS = with_key("1850775123456")
SAMPLE_LAB = Laboratory(
    finess="990000017",
    name="Laboratoire de démonstration",
    address=Address(house_number="12", street="Rue des Essais", postal_code="75013", city="PARIS"),
    telecom=("tel:0100000000",),
)
SAMPLE_BIOLOGIST = Person(
    id="899900000017",
    family="BIOLOGISTE",
    given="Alice",
    prefix="MME",
    suffix="DR",
    profession=BIOLOGIST,
    address=SAMPLE_LAB.address,
    telecom=SAMPLE_LAB.telecom,
)
SAMPLE_PRESCRIBER = Person(id="899900000025", family="PRESCRIPTEUR", given="Paul", suffix="DR")
SAMPLE_PATIENT = LabPatient(
    ins=SAMPLE_INS,
    ins_oid=INS_NIR_TEST_OID,
    local_id="IPP0001",
    local_id_oid="1.2.250.1.999.2.1",
    birth_family="ESSAI",
    birth_given_names="JEAN PIERRE",
    first_birth_given="JEAN",
    birth_date="19850712",
    sex="M",
    birthplace_cog="75113",
    address=Address(house_number="1", street="Rue du Test", postal_code="75013", city="PARIS"),
)

SAMPLE_LOINC_CSV = "local_code,loinc,display,unit,chapter\n" + "".join(
    f'{r.local},{r.loinc},"{r.display}",{r.ucum},{chapter}\n'
    for rows, chapter in ((CHEMISTRY_ROWS, "18719-5"), (HAEMATOLOGY_ROWS, "18723-7"))
    for r in rows
)


def sample_loinc_table() -> LoincTable:
    return parse_loinc_csv(SAMPLE_LOINC_CSV, SAMPLE_SENDER)


def _result(row: PanelRow, status: ResultStatus = ResultStatus.FINAL) -> LabResult:
    return LabResult(
        code=Code(code=row.loinc, system=LOINC_SYSTEM, display=row.display),
        local_code=row.local,
        kind=ValueKind.QUANTITY,
        number=Decimal(row.value),
        unit=row.ucum,
        reference_range=ReferenceRange(low=Decimal(row.low), high=Decimal(row.high), unit=row.ucum),
        interpretation=(row.flag,),
        status=status,
        observed=OBSERVED,
    )


def sample_lab_report(*, corrected: bool = False, order_number: str = "CMD-2024-0001") -> LabReport:
    """The 20-result panel; ``corrected=True`` gives version 2 with the potassium corrected (RPLC v1)."""
    from passerelle.mappings.lab.ids import set_id_for, unique_id_for

    chemistry = [
        _result(CORRECTED_POTASSIUM, ResultStatus.CORRECTED) if corrected and r.local == "K" else _result(r)
        for r in CHEMISTRY_ROWS
    ]
    lineage = Lineage(
        unique_id_for(SAMPLE_OID_ROOT, SAMPLE_SENDER, order_number, 1),
        set_id_for(SAMPLE_OID_ROOT, SAMPLE_SENDER, order_number),
    )
    if corrected:
        lineage = lineage.successor(unique_id_for(SAMPLE_OID_ROOT, SAMPLE_SENDER, order_number, 2))
    return LabReport(
        **lineage.fields(),
        patient=SAMPLE_PATIENT,
        laboratory=SAMPLE_LAB,
        validator=SAMPLE_BIOLOGIST,
        validated=VALIDATED + (timedelta(hours=3) if corrected else timedelta()),
        prescriber=SAMPLE_PRESCRIBER,
        prescribed=PRESCRIBED,
        order_number=order_number,
        filler_number="SIL-778899",
        created=VALIDATED + (timedelta(hours=3) if corrected else timedelta()),
        received=RECEIVED,
        specimens=(
            Specimen(
                id="TUBE-SER-1",
                type=Code(code="SER", system=SPECIMEN_TYPE_SYSTEM, display="Sérum"),
                collected=COLLECTED,
                received=RECEIVED,
            ),
            Specimen(
                id="TUBE-EDTA-1",
                type=Code(code="BLD", system=SPECIMEN_TYPE_SYSTEM, display="Sang"),
                collected=COLLECTED,
                received=RECEIVED,
            ),
        ),
        batteries=(
            Battery(
                code=Code(code="24323-8", system=LOINC_SYSTEM, display="Bilan métabolique complet"),
                chapter=CHEMISTRY,
                specimen_id="TUBE-SER-1",
                results=tuple(chemistry),
                label="Bilan biochimique",
            ),
            Battery(
                code=Code(code="58410-2", system=LOINC_SYSTEM, display="Hémogramme complet sur automate"),
                chapter=HAEMATOLOGY,
                specimen_id="TUBE-EDTA-1",
                results=tuple(_result(r) for r in HAEMATOLOGY_ROWS),
                label="Hémogramme",
            ),
        ),
    )


def _hl7_ts(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S%z")


def sample_oru(*, corrected: bool = False, order_number: str = "CMD-2024-0001", control_id: str = "MSG0001") -> str:
    """The LAB-3 ORU^R01 (HL7 2.5.1, CR separators) a SIL sends for :func:`sample_lab_report`."""
    status = "C" if corrected else "F"
    release = VALIDATED + (timedelta(hours=3) if corrected else timedelta())
    pid = (
        f"PID|1||{SAMPLE_INS}^^^ASIP-SANTE-INS-NIR&{INS_NIR_TEST_OID}&ISO^INS~IPP0001^^^LABO-DEMO&1.2.250.1.999.2.1&ISO^PI"
        "||ESSAI^JEAN^JEAN PIERRE^^^^L||19850712|M|||1 rue du Test^^PARIS^^75013^FRA^H~^^^^^^BDL^^75113"
        + "|" * 21
        + "VALI"
    )
    lines = [
        f"MSH|^~\\&|SIL-DEMO|LABO-DEMO|DPI|HOPITAL|{_hl7_ts(release)}||ORU^R01^ORU_R01|{control_id}|P|2.5.1"
        "|||||FRA|8859/1",
        pid,
        f"ORC|RE|{order_number}^DPI|SIL-778899^SIL||CM||||{_hl7_ts(PRESCRIBED)}|||899900000025^PRESCRIPTEUR^Paul^^DR",
    ]
    biologist = "899900000017&BIOLOGISTE&Alice&&DR&MME"
    for n, (code, label, section, rows, spm_id, spm_type) in enumerate(
        (
            ("24323-8", "Bilan biochimique", "CH", CHEMISTRY_ROWS, "TUBE-SER-1", "SER^Sérum^HL70487"),
            ("58410-2", "Hémogramme", "HM", HAEMATOLOGY_ROWS, "TUBE-EDTA-1", "BLD^Sang^HL70487"),
        ),
        start=1,
    ):
        obr_status = "C" if corrected and section == "CH" else "F"
        lines.append(
            f"OBR|{n}|{order_number}^DPI|SIL-778899^SIL|{code}^{label}^LN|||{_hl7_ts(COLLECTED)}"
            + "|" * 15
            + f"{_hl7_ts(release)}||{section}|{obr_status}"
            + "|" * 7
            + biologist
        )
        for i, row in enumerate(rows, start=1):
            if corrected and row.local == "K":
                row, obx_status = CORRECTED_POTASSIUM, status
            else:
                obx_status = "F"
            lines.append(
                f"OBX|{i}|NM|{row.local}^{row.display.split(' [')[0]}^L||{row.value}|{row.unit}|"
                f"{row.low}-{row.high}|{row.flag}|||{obx_status}|||{_hl7_ts(OBSERVED)}"
            )
        lines.append(f"SPM|1|{spm_id}&SIL||{spm_type}" + "|" * 13 + f"{_hl7_ts(COLLECTED)}|{_hl7_ts(RECEIVED)}")
    return "\r".join(lines) + "\r"
