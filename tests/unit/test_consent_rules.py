"""Site visibility rules loader (consent/rules.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from passerelle.consent import DEFAULT_RULES, ConflictPolicy, load_rules


def test_empty_text_gives_defaults() -> None:
    assert load_rules("") == DEFAULT_RULES
    assert DEFAULT_RULES.on_visibility_conflict == ConflictPolicy.REFUSE
    assert not DEFAULT_RULES.allow_invisible_patient_and_masque_ps


def test_full_document() -> None:
    rules = load_rules(
        """
version: 1
allow_invisible_patient_and_masque_ps: true
on_visibility_conflict: drop_masque_ps
parking: {horizon_days: 7, recheck_minutes: 15, unknown_status_recheck_minutes: 1}
rules:
  - {name: a, type_code: "60568-3", system: "2.16.840.1.113883.6.1"}
  - {name: b, result_code: "X1", add: [INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX]}
"""
    )
    assert rules.allow_invisible_patient_and_masque_ps
    assert rules.on_visibility_conflict == ConflictPolicy.DROP_MASQUE_PS
    assert rules.parking.horizon == timedelta(days=7)
    assert rules.parking.recheck == timedelta(minutes=15)
    assert rules.parking.unknown_status_recheck == timedelta(minutes=1)
    assert [r.name for r in rules.rules] == ["a", "b"]
    assert rules.rules[0].add == ("INVISIBLE_PATIENT",)
    assert rules.rules[1].add == ("INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX")


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        "version: 2",
        "alow_invisible_patient_and_masque_ps: true",  # typo must not be ignored
        "on_visibility_conflict: maybe",
        "parking: {horizon_days: 0}",
        "rules: [{name: a}]",
        "rules: [{name: a, type_code: X, add: [VISIBLE]}]",
        "rules: [{name: a, type_code: X, add: []}]",
        "rules: [{name: a, type_code: X}, {name: a, type_code: Y}]",
        "rules: [{name: a, type_code: X, remove: [MASQUE_PS]}]",
        "key: [unclosed",
    ],
)
def test_invalid_rules_are_errors(text: str) -> None:
    with pytest.raises(ValueError, match="visibility rules"):
        load_rules(text)
