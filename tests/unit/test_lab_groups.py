"""LAB-3 discrete results: the ORDER_OBSERVATION groups the CR-BIO reader works on (mappings/lab/groups.py),
read through the project's HL7v2 decoder."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from passerelle.errors import MappingError
from passerelle.mappings.hl7v2.decode import decode_message
from passerelle.mappings.lab.groups import order_numbers, read_groups
from passerelle.mappings.lab.segments import segments
from passerelle.mappings.samples.messages import build_lab_results, synthetic_patient

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def test_generated_lab_results() -> None:
    raw = build_lab_results(now=NOW, control_id="L1", patient=synthetic_patient(random.Random(1)))
    segs = segments(decode_message(raw))
    [group] = read_groups(segs)
    assert (group.obr.value(4, 1), group.obr.value(4, 3)) == ("24326-1", "LN")
    assert group.obr.text(25) == "F"
    sodium, potassium = group.obx
    assert (sodium.text(2), sodium.value(3), sodium.text(5), sodium.text(11)) == ("NM", "2951-2", "140", "F")
    assert sodium.value(6) == "mmol/L" and sodium.text(7) == "135-145"
    assert potassium.text(5) == "4.1" and potassium.occurrence == 2
    assert order_numbers(segs) == ("PL1", "FL1", "PL1")  # ORC-2 / ORC-3 first components


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
            "NTE|2||obs note \\T\\ 2",
            "SPM|1|S1&LAB",
            "OBR|2|P2|F2|B^Panel B^LN",
            "OBX|1|SN|Y^Y^LN||>^10||||||P",
        ]
    )
    first, second = read_groups(segments(decode_message(text.encode())))
    [obs] = first.obx
    assert obs.texts(5) == ["a^b", "c"]
    assert first.comment(obs) == "obs note 1 obs note & 2"  # NTE after the OBR, before any OBX, is not kept
    assert [s.value(2, 1, 1, 1) for s in first.spm] == ["S1"]
    assert second.obx[0].value(5, 1) == ">" and second.obx[0].value(5, 2) == "10"
    assert second.obx[0].occurrence == 2 and second.obx[0].loc(11) == "OBX^2^11"


def test_obx_before_obr_is_a_structure_error() -> None:
    with pytest.raises(MappingError) as info:
        read_groups(segments(decode_message(b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5\rOBX|1|NM|X||1\r")))
    assert info.value.location == "OBX^1^0"


def test_no_obr_means_nothing_to_report() -> None:
    with pytest.raises(MappingError) as info:
        read_groups(segments(decode_message(b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|P|2.5\rPID|1\r")))
    assert info.value.location == "OBR^1^0"
