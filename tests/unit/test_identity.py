"""Identity rules (docs/interop-reference.md, "INS — the patient's national health identifier", "The rule")."""

from __future__ import annotations

import pytest

from passerelle.errors import IdentityError
from passerelle.mappings.document import IdentityStatus, Patient
from passerelle.mappings.identity.ins import with_key
from passerelle.mappings.identity.rules import Cx, qualify_cda_patient, qualify_hl7_patient

TEST_OID = "1.2.250.1.213.1.4.10"
PROD_OID = "1.2.250.1.213.1.4.8"
NIA_OID = "1.2.250.1.213.1.4.9"
INS = with_key("2790351215189")  # 279035121518989 (ANS test patient)
CORSICA = with_key("18502" + "2A" + "123456")  # synthetic NIR born in Corse-du-Sud


def _patient(ins: str = INS, oid: str = TEST_OID, **over: str) -> Patient:
    data = {"family": "TEST", "given": "ALEX", "birth_date": "19790328", "sex": "F"}
    data.update(over)
    return Patient(ins=ins, ins_oid=oid, **data)  # type: ignore[arg-type]


def _cx(value: str = INS, oid: str = TEST_OID, type_code: str = "INS", ns: str = "ASIP-SANTE-INS-NIR") -> Cx:
    return Cx(value=value, namespace=ns, oid=oid, type_code=type_code)


def test_qualified_in_test_environment() -> None:
    patient = qualify_hl7_patient([_cx()], ["VALI"], _patient(), test_environment=True)
    assert patient.identity_status is IdentityStatus.QUALIFIED
    assert (patient.ins, patient.ins_oid) == (INS, TEST_OID)


def test_test_oid_refused_in_production_and_prod_oid_accepted() -> None:
    with pytest.raises(IdentityError, match="test/demo authority"):
        qualify_hl7_patient([_cx()], ["VALI"], _patient(), test_environment=False)
    patient = qualify_hl7_patient([_cx(oid=PROD_OID)], ["VALI"], _patient(oid=PROD_OID), test_environment=False)
    assert patient.ins_oid == PROD_OID
    nia = qualify_hl7_patient([_cx(oid=NIA_OID)], ["VALI"], _patient(oid=NIA_OID), test_environment=False)
    assert nia.ins_oid == NIA_OID


def test_pid32_must_contain_vali() -> None:
    for pid32 in ([], ["PROV"], ["VIDE"], ["DOUT"]):
        with pytest.raises(IdentityError) as err:
            qualify_hl7_patient([_cx()], pid32, _patient(), test_environment=True)
        assert err.value.message == "identity not qualified: PID-32 is not VALI"
    # an identity attribute in another repetition does not hide VALI
    qualify_hl7_patient([_cx()], ["VALI", "HOMA"], _patient(), test_environment=True)


def test_key_must_verify_including_corsica() -> None:
    bad = INS[:13] + f"{(int(INS[13:]) + 1) % 100:02d}"
    with pytest.raises(IdentityError, match="valid NIR key"):
        qualify_hl7_patient([_cx(value=bad)], ["VALI"], _patient(ins=bad), test_environment=True)
    patient = qualify_hl7_patient([_cx(value=CORSICA)], ["VALI"], _patient(ins=CORSICA), test_environment=True)
    assert patient.ins == CORSICA


def test_billing_nir_is_never_used() -> None:
    billing = _cx(type_code="NH", ns="ASIP-SANTE-NIR", oid=PROD_OID)
    with pytest.raises(IdentityError, match="no INS"):
        qualify_hl7_patient(
            [billing, _cx(value="123", oid="1.2.3", type_code="PI")], ["VALI"], _patient(), test_environment=True
        )


def test_cx5_ins_without_oid_and_ins_c() -> None:
    with pytest.raises(IdentityError, match="no INS assigning authority"):
        qualify_hl7_patient([_cx(oid="")], ["VALI"], _patient(), test_environment=True)
    with pytest.raises(IdentityError, match="INS-C"):
        qualify_hl7_patient([_cx(oid="1.2.250.1.213.1.4.2")], ["VALI"], _patient(), test_environment=True)


def test_pid3_must_equal_cda_record_target() -> None:
    other = with_key("1800175123456")
    with pytest.raises(IdentityError, match="differs from the CDA recordTarget INS"):
        qualify_hl7_patient([_cx()], ["VALI"], _patient(ins=other), test_environment=True)
    with pytest.raises(IdentityError, match="differs"):
        qualify_hl7_patient([_cx()], ["VALI"], _patient(oid=PROD_OID), test_environment=True)
    with pytest.raises(IdentityError, match="CDA recordTarget has no INS"):
        qualify_hl7_patient([_cx()], ["VALI"], _patient(ins="", oid=""), test_environment=True)


def test_two_different_ins_in_pid3() -> None:
    other = with_key("1800175123456")
    with pytest.raises(IdentityError, match="more than one"):
        qualify_hl7_patient([_cx(), _cx(value=other)], ["VALI"], _patient(), test_environment=True)


def test_traits_required() -> None:
    with pytest.raises(IdentityError, match="birth date, sex"):
        qualify_hl7_patient([_cx()], ["VALI"], _patient(birth_date="", sex=""), test_environment=True)


def test_cda_alone() -> None:
    assert qualify_cda_patient(_patient(), test_environment=True).identity_status is IdentityStatus.QUALIFIED
    with pytest.raises(IdentityError, match="test/demo"):
        qualify_cda_patient(_patient(), test_environment=False)
    with pytest.raises(IdentityError, match="has no INS"):
        qualify_cda_patient(_patient(ins="", oid=""), test_environment=True)


def test_messages_never_carry_identity_values() -> None:
    cases = [
        lambda: qualify_hl7_patient([_cx()], ["PROV"], _patient(), test_environment=True),
        lambda: qualify_hl7_patient([_cx()], ["VALI"], _patient(ins=with_key("1800175123456")), test_environment=True),
        lambda: qualify_cda_patient(_patient(family=""), test_environment=True),
    ]
    for case in cases:
        with pytest.raises(IdentityError) as err:
            case()
        assert INS not in err.value.message and "TEST" not in err.value.message and "1979" not in err.value.message
        assert err.value.reason == "identity_not_qualified"
