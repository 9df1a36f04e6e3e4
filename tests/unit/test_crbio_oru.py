"""LAB-3 ORU^R01 → LabReport: units, ranges, flags, statuses, local code translation, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from passerelle.errors import IdentityError, MappingError, UnsupportedMessageError
from passerelle.mappings.codes import parse_loinc_csv
from passerelle.mappings.document import INS_NIR_TEST_OID, Action
from passerelle.mappings.lab import (
    OruContext,
    PreviousVersion,
    ReferenceRange,
    ResultStatus,
    ValueKind,
    from_oru,
    set_id_for,
    unique_id_for,
)
from passerelle.mappings.samples.lab import (
    SAMPLE_BIOLOGIST,
    SAMPLE_INS,
    SAMPLE_LAB,
    SAMPLE_OID_ROOT,
    SAMPLE_SENDER,
    sample_loinc_table,
    sample_oru,
)

NOW = datetime(2024, 1, 5, 8, 0, tzinfo=UTC)
TABLE = parse_loinc_csv(
    "local_code,loinc,display,unit,chapter\n"
    "GLU,2345-7,Glucose,,18719-5\n"
    "K,2823-3,Potassium,,\n"
    "HBA1C,4548-4,Hémoglobine A1c,%,\n"
    "WEIRD,2345-7,Glucose,g/L,\n"
    "GERME,11475-1,Micro-organisme identifié,,18725-2\n"
    "COMM,8251-1,Commentaire,,\n",
    "LAB1",
)


def ctx(**kw: object) -> OruContext:
    base: dict[str, object] = {
        "oid_root": SAMPLE_OID_ROOT,
        "now": NOW,
        "laboratory": SAMPLE_LAB,
        "loinc": TABLE,
        "test_environment": True,
    }
    base.update(kw)
    return OruContext(**base)  # type: ignore[arg-type]


PID = (
    f"PID|1||{SAMPLE_INS}^^^ASIP-SANTE-INS-NIR&{INS_NIR_TEST_OID}&ISO^INS~IPP9^^^LAB&1.2.250.1.999.2&ISO^PI"
    "||ESSAI^JEAN^JEAN PIERRE^^^^L~DUPONT^JEAN^^^^^D||19850712|M|||^^^^^^BDL^^75113" + "|" * 21 + "VALI"
)


def oru(
    *obx: str, obr_status: str = "F", orc: str = "ORC|RE|CMD1^DPI|FIL1^SIL", pid: str = PID, obr24: str = "CH"
) -> str:
    obr = (
        "OBR|1|CMD1^DPI|FIL1^SIL|24323-8^Bilan^LN|||20240104073500" + "|" * 15
        + f"20240104112000||{obr24}|{obr_status}" + "|" * 7 + "801234534765&BIOLOGISTE&Alice"
    )  # fmt: skip
    spm = "SPM|1|TUBE1&SIL||SER^Sérum^HL70487" + "|" * 13 + "20240104073500|20240104092200"
    segs = ["MSH|^~\\&|SIL|LAB1|DPI|H|20240104113000||ORU^R01^ORU_R01|M1|P|2.5.1", pid, orc, obr, *obx, spm]
    return "\n".join(segs)  # LF separators, as many senders do: the reader normalises them


def only_result(text: str, **kw: object):  # type: ignore[no-untyped-def]
    report = from_oru(text, ctx(**kw))
    assert len(report.results) == 1
    return report.results[0]


# --- values, units, ranges, flags ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obx", "kind", "number", "unit", "comparator"),
    [
        ("OBX|1|NM|GLU^Glycémie^L||0.95|g/l|0.70-1.10|N|||F", ValueKind.QUANTITY, "0.95", "g/L", ""),
        ("OBX|1|NM|GLU^Glycémie^L||5,2|mmol/l||N|||F", ValueKind.QUANTITY, "5.2", "mmol/L", ""),
        ("OBX|1|NM|GLU^Glycémie^L||12|G/l||H|||F", ValueKind.QUANTITY, "12", "10*9/L", ""),
        ("OBX|1|NM|GLU^Glycémie^L||3|m[IU]/L^^UCUM||N|||F", ValueKind.QUANTITY, "3", "m[IU]/L", ""),
        ("OBX|1|NM|HBA1C^HbA1c^L||6.1|pourcent||N|||F", ValueKind.QUANTITY, "6.1", "%", ""),  # unit from table
        ("OBX|1|NM|GLU^Glycémie^L||7|||N|||F", ValueKind.QUANTITY, "7", "1", ""),  # no unit: dimensionless
        ("OBX|1|SN|GLU^Glycémie^L||<^0.5|g/l||L|||F", ValueKind.INTERVAL, "0.5", "g/L", "<"),
        ("OBX|1|SN|GLU^Glycémie^L||>=^10|g/l||H|||F", ValueKind.INTERVAL, "10", "g/L", ">="),
        ("OBX|1|SN|GLU^Glycémie^L||^1.2|g/l||N|||F", ValueKind.QUANTITY, "1.2", "g/L", ""),
    ],
)
def test_numeric_values_and_units(obx: str, kind: ValueKind, number: str, unit: str, comparator: str) -> None:
    result = only_result(oru(obx))
    assert (result.kind, result.number, result.unit, result.comparator) == (kind, Decimal(number), unit, comparator)


@pytest.mark.parametrize(
    ("range_text", "expected"),
    [
        ("0.70-1.10", ReferenceRange(low=Decimal("0.70"), high=Decimal("1.10"), unit="g/L")),
        ("0,70 - 1,10", ReferenceRange(low=Decimal("0.70"), high=Decimal("1.10"), unit="g/L")),
        ("<1.10", ReferenceRange(high=Decimal("1.10"), unit="g/L")),
        (">=0.5", ReferenceRange(low=Decimal("0.5"), unit="g/L")),
        ("voir commentaire", ReferenceRange(text="voir commentaire")),
        ("", None),
    ],
)
def test_reference_ranges(range_text: str, expected: ReferenceRange | None) -> None:
    assert only_result(oru(f"OBX|1|NM|GLU^Glycémie^L||0.9|g/l|{range_text}|N|||F")).reference_range == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("H", ("H",)), ("L~A", ("L", "A")), ("HH", ("HH",)), ("", ()), ("n", ("N",)), ("POS", ("POS",))],
)
def test_abnormal_flags(flags: str, expected: tuple[str, ...]) -> None:
    assert only_result(oru(f"OBX|1|NM|GLU^Glycémie^L||0.9|g/l||{flags}|||F")).interpretation == expected


def test_coded_and_text_values() -> None:
    coded = only_result(oru("OBX|1|CWE|GERME^Germe^L||3092008^Staphylococcus aureus^SCT||||||F"))
    assert coded.kind is ValueKind.CODED and coded.coded is not None
    assert (coded.coded.code, coded.coded.system) == ("3092008", "2.16.840.1.113883.6.96")
    text = only_result(oru("OBX|1|TX|COMM^Commentaire^L||Prélèvement \\T\\ transport conformes||||||F"))
    assert (text.kind, text.text) == (ValueKind.TEXT, "Prélèvement & transport conformes")


def test_observation_time_with_and_without_offset() -> None:
    with_offset = only_result(oru("OBX|1|NM|GLU^G^L||1|g/l||N|||F|||20240104103000+0200"))
    assert with_offset.observed == datetime(2024, 1, 4, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    local = only_result(oru("OBX|1|NM|GLU^G^L||1|g/l||N|||F|||20240704103000"))
    assert local.observed is not None and local.observed.utcoffset() == timedelta(hours=2)  # Paris, summer


def test_nte_after_obx_becomes_the_result_comment() -> None:
    result = only_result(oru("OBX|1|NM|GLU^G^L||1|g/l||N|||F", "NTE|1||Échantillon hémolysé"))
    assert result.comment == "Échantillon hémolysé"


# --- codes --------------------------------------------------------------------------------------------


def test_local_code_translated_with_the_sender_table() -> None:
    result = only_result(oru("OBX|1|NM|K^Kaliémie^L||4.1|mmol/l||N|||F"))
    assert (result.code.code, result.code.display, result.local_code, result.label) == (
        "2823-3",
        "Potassium",
        "K",
        "Kaliémie",
    )


def test_loinc_in_first_or_alternate_triplet_needs_no_table() -> None:
    first = only_result(oru("OBX|1|NM|2345-7^Glucose^LN||1|g/l||N|||F"), loinc=None)
    alternate = only_result(oru("OBX|1|NM|XGLU^Glycémie^L^2345-7^Glucose^LN||1|g/l||N|||F"), loinc=None)
    assert first.code.code == alternate.code.code == "2345-7"
    assert alternate.local_code == "XGLU"


def test_local_battery_code_without_loinc_falls_back_to_the_chapter() -> None:
    text = oru("OBX|1|NM|K^K^L||4|mmol/l||N|||F").replace("24323-8^Bilan^LN", "IONO^Ionogramme^L")
    battery = from_oru(text, ctx()).batteries[0]
    assert (battery.code.code, battery.chapter.code, battery.label) == ("18719-5", "18719-5", "Ionogramme")
    with pytest.raises(MappingError) as info:  # ... but a chapter is needed
        from_oru(text.replace("||CH|", "||ZZ|"), ctx())
    assert info.value.location == "OBR^1^24"


def test_chapter_from_table_then_battery_then_obr24() -> None:
    report = from_oru(oru("OBX|1|CWE|GERME^Germe^L||3092008^S. aureus^SCT||||||F"), ctx())
    assert report.batteries[0].chapter.code == "18725-2"  # table column wins
    report = from_oru(oru("OBX|1|NM|K^K^L||4|mmol/l||N|||F", obr24="HM"), ctx())
    assert report.batteries[0].chapter.code == "18723-7"  # from OBR-24


@pytest.mark.parametrize(
    ("obx", "field", "location"),
    [
        ("OBX|1|NM|NOPE^Inconnu^L||1|g/l||N|||F", "OBX-3", "OBX^1^3"),
        ("OBX|1|NM|GLU^G^L||abc|g/l||N|||F", "OBX-5", "OBX^1^5"),
        ("OBX|1|NM|GLU^G^L||1|furlongs||N|||F", "OBX-6", "OBX^1^6"),
        ("OBX|1|NM|GLU^G^L||1|g/l||ZZ|||F", "OBX-8", "OBX^1^8"),
        ("OBX|1|NM|GLU^G^L||1|g/l||N|||P", "OBX-11", "OBX^1^11"),
        ("OBX|1|NM|GLU^G^L||1|g/l||N|||", "OBX-11", "OBX^1^11"),
        ("OBX|1|ED|GLU^G^L||^TEXT^XML^Base64^AAAA||||||F", "OBX-2", "OBX^1^2"),
        ("OBX|1|NM|^^L||1|g/l||N|||F", "OBX-3", "OBX^1^3"),
        ("OBX|1|NM|GLU^G^L||1|g/l||N|||F|||2024-01-04", "OBX-14", "OBX^1^14"),
    ],
)
def test_refusals_name_the_field(obx: str, field: str, location: str) -> None:
    with pytest.raises(MappingError) as info:
        from_oru(oru(obx), ctx())
    assert info.value.message.startswith(field), info.value.message
    assert info.value.location == location


def test_missing_code_error_names_field_and_sender_table_but_no_patient_data() -> None:
    with pytest.raises(MappingError) as info:
        from_oru(oru("OBX|1|NM|NOPE^Inconnu^L||1|g/l||N|||F"), ctx())
    text = info.value.message
    assert "OBX-3" in text and "'NOPE'" in text and "'LAB1'" in text
    assert SAMPLE_INS not in text and "ESSAI" not in text
    with pytest.raises(MappingError, match="no LOINC table configured"):
        from_oru(oru("OBX|1|NM|NOPE^Inconnu^L||1|g/l||N|||F"), ctx(loinc=None))


def test_second_obx_location_counts_occurrences() -> None:
    with pytest.raises(MappingError) as info:
        from_oru(oru("OBX|1|NM|GLU^G^L||1|g/l||N|||F", "OBX|2|NM|NOPE^X^L||1|g/l||N|||F"), ctx())
    assert info.value.location == "OBX^2^3"


# --- message-level rules ------------------------------------------------------------------------------


def test_sample_panel_reads_completely() -> None:
    report = from_oru(sample_oru(), ctx(loinc=sample_loinc_table(), sender=SAMPLE_SENDER))
    assert len(report.results) == 20
    assert [b.chapter.code for b in report.batteries] == ["18719-5", "18723-7"]
    assert {s.type.code for s in report.specimens} == {"SER", "BLD"}
    assert report.validator.id == SAMPLE_BIOLOGIST.id and report.prescriber is not None
    assert report.patient.ins == SAMPLE_INS and report.patient.birthplace_cog == "75113"
    assert report.patient.birth_given_names == "JEAN PIERRE" and report.patient.first_birth_given == "JEAN"
    assert report.order_number == "CMD-2024-0001" and report.version == 1 and report.action is Action.PUBLISH
    creat = next(r for r in report.results if r.local_code == "CREA")
    assert (creat.unit, creat.interpretation) == ("umol/L", ("H",))


def test_ids_are_deterministic_and_differ_by_version() -> None:
    context = ctx(loinc=sample_loinc_table(), sender=SAMPLE_SENDER)
    first, again = from_oru(sample_oru(), context), from_oru(sample_oru(), context)
    assert first.unique_id == again.unique_id == unique_id_for(SAMPLE_OID_ROOT, SAMPLE_SENDER, "CMD-2024-0001", 1)
    assert first.set_id == set_id_for(SAMPLE_OID_ROOT, SAMPLE_SENDER, "CMD-2024-0001")
    other = from_oru(sample_oru(order_number="CMD-2024-0002"), context)
    assert other.unique_id != first.unique_id and other.set_id != first.set_id


def test_correction_replaces_the_previous_version() -> None:
    context = ctx(loinc=sample_loinc_table(), sender=SAMPLE_SENDER)
    v1 = from_oru(sample_oru(), context)
    previous = PreviousVersion(set_id=v1.set_id, version=v1.version, unique_id=v1.unique_id)
    v2 = from_oru(sample_oru(corrected=True), ctx(loinc=sample_loinc_table(), sender=SAMPLE_SENDER, previous=previous))
    assert (v2.action, v2.version, v2.set_id, v2.replaces) == (Action.REPLACE, 2, v1.set_id, v1.unique_id)
    assert v2.unique_id not in (v1.unique_id, v1.set_id)
    potassium = next(r for r in v2.results if r.local_code == "K")
    assert (potassium.status, potassium.number) == (ResultStatus.CORRECTED, Decimal("4.4"))


def test_correction_without_known_original_is_refused() -> None:
    with pytest.raises(MappingError) as info:
        from_oru(oru("OBX|1|NM|GLU^G^L||1|g/l||N|||C"), ctx())
    assert info.value.reason == "replacement_without_original"
    with pytest.raises(MappingError):
        from_oru(oru("OBX|1|NM|GLU^G^L||1|g/l||N|||F", obr_status="C"), ctx())


@pytest.mark.parametrize(
    ("obx_status", "orc"),
    [("D", "ORC|RE|CMD1^DPI|FIL1^SIL"), ("F", "ORC|CA|CMD1^DPI|FIL1^SIL")],
)
def test_deletion(obx_status: str, orc: str) -> None:
    previous = PreviousVersion(set_id="1.2.3.4", version=2, unique_id="1.2.3.4.5")
    report = from_oru(oru(f"OBX|1|NM|GLU^G^L||1|g/l||N|||{obx_status}", orc=orc), ctx(previous=previous))
    assert (report.action, report.replaces, report.unique_id) == (Action.DELETE, "1.2.3.4.5", "1.2.3.4.5")
    with pytest.raises(MappingError) as info:
        from_oru(oru(f"OBX|1|NM|GLU^G^L||1|g/l||N|||{obx_status}", orc=orc), ctx())
    assert info.value.reason == "delete_unknown_document"


def test_deleted_obx_among_final_ones_is_dropped() -> None:
    report = from_oru(oru("OBX|1|NM|GLU^G^L||1|g/l||N|||F", "OBX|2|NM|K^K^L||4|mmol/l||N|||D"), ctx())
    assert [r.local_code for r in report.results] == ["GLU"]


def test_cancelled_result_is_kept_as_aborted() -> None:
    result = only_result(oru("OBX|1|NM|GLU^G^L||||||||X"))
    assert result.status is ResultStatus.CANCELLED


def test_identity_rules_apply() -> None:
    not_vali = PID.replace("|VALI", "|PROV")
    with pytest.raises(IdentityError):
        from_oru(oru("OBX|1|NM|GLU^G^L||1|g/l||N|||F", pid=not_vali), ctx())
    with pytest.raises(IdentityError):  # test INS OID outside a test environment
        from_oru(oru("OBX|1|NM|GLU^G^L||1|g/l||N|||F"), ctx(test_environment=False))


def test_not_an_oru_and_no_biologist() -> None:
    with pytest.raises(UnsupportedMessageError):
        from_oru(oru("OBX|1|NM|GLU^G^L||1|g/l||N|||F").replace("ORU^R01^ORU_R01", "ADT^A01^ADT_A01"), ctx())
    no_interpreter = oru("OBX|1|NM|GLU^G^L||1|g/l||N|||F").replace("801234534765&BIOLOGISTE&Alice", "")
    with pytest.raises(MappingError) as info:
        from_oru(no_interpreter, ctx())
    assert info.value.location == "OBR^1^32"
    assert from_oru(no_interpreter, ctx(validator=SAMPLE_BIOLOGIST)).validator == SAMPLE_BIOLOGIST


def test_series_key_and_one_call_mapping() -> None:
    from passerelle.mappings.document import Provenance
    from passerelle.mappings.lab import map_lab_results, series_key

    assert series_key(sample_oru()) == "lab:SIL-DEMO^LABO-DEMO:CMD-2024-0001"
    assert series_key(sample_oru(), sender="S1") == "lab:S1:CMD-2024-0001"
    assert series_key(oru("OBX|1|NM|GLU^G^L||1|g/l||N|||F", orc="ORC|RE||FIL1^SIL")) == "lab:SIL^LAB1:CMD1"  # OBR-2
    with pytest.raises(MappingError):
        series_key("PID|1")
    prov = Provenance(channel="mllp", sender="S1", message_id="M1")
    context = ctx(loinc=sample_loinc_table(), sender=SAMPLE_SENDER)
    document = map_lab_results(sample_oru(), context, prov)
    assert document.action is Action.PUBLISH and document.content.startswith(b"<?xml")
    assert document.unique_id == from_oru(sample_oru(), context).unique_id
    previous = PreviousVersion(set_id=document.set_id, version=1, unique_id=document.unique_id)
    cancel = sample_oru().replace("ORC|RE|", "ORC|CA|")
    deletion = map_lab_results(cancel, ctx(loinc=sample_loinc_table(), previous=previous), prov)
    assert (deletion.action, deletion.replaces, deletion.content) == (Action.DELETE, document.unique_id, b"")
