"""LAB-3 discrete results reader."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from passerelle.mappings.hl7v2.decode import decode_message
from passerelle.mappings.hl7v2.errors import SegmentSequenceError
from passerelle.mappings.hl7v2.lab import read_lab_results
from passerelle.mappings.samples.messages import build_lab_results, synthetic_patient

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def test_generated_lab_results() -> None:
    raw = build_lab_results(now=NOW, control_id="L1", patient=synthetic_patient(random.Random(1)))
    [order] = read_lab_results(decode_message(raw))
    assert order.code.code == "24326-1" and order.code.system == "LN"
    assert order.order_control == "SC"
    assert order.result_status == "F"
    sodium, potassium = order.observations
    assert (sodium.value_type, sodium.code.code, sodium.values, sodium.status) == ("NM", "2951-2", ("140",), "F")
    assert sodium.units is not None and sodium.units.code == "mmol/L"
    assert sodium.reference_range == "135-145"
    assert potassium.values == ("4.1",)


def test_groups_notes_and_escapes() -> None:
    text = "\r".join(
        [
            "MSH|^~\\&|A|B|C|D|2026||ORU^R01^ORU_R01|1|P|2.5.1",
            "PID|||1^^^H&1.2&ISO^PI",
            "ORC|SC|P1",
            "OBR|1|P1|F1|A^Panel A^LN",
            "NTE|1||order note",
            "OBX|1|ST|X^X^LN||a\\S\\b~c||||||F",
            "NTE|1||obs note 1",
            "NTE|2||obs note 2",
            "OBR|2|P2|F2|B^Panel B^LN",
            "OBX|1|SN|Y^Y^LN||>^10||||||P",
        ]
    )
    first, second = read_lab_results(decode_message(text.encode()))
    assert first.notes == ("order note",)
    [obs] = first.observations
    assert obs.values == ("a^b", "c")
    assert obs.notes == ("obs note 1", "obs note 2")
    assert second.order_control == ""
    assert second.observations[0].raw_values == (">^10",)
    assert second.observations[0].status == "P"


def test_obx_before_obr_is_a_structure_error() -> None:
    with pytest.raises(SegmentSequenceError):
        read_lab_results(decode_message(b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5\rOBX|1|NM|X||1\r"))
