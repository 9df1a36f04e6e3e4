"""Consent policy table (consent/policy.py): every combination of the issue's list, one row each."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from passerelle.consent import (
    ConsentContext,
    Decision,
    FeedingConsent,
    Outcome,
    Reason,
    RegistryEntry,
    SiteRules,
    SpaceState,
    SpaceView,
    decide,
    load_rules,
)
from passerelle.consent.rules import ConflictPolicy, Parking, VisibilityRule
from passerelle.mappings.document import (
    CONFIDENTIALITY_CISIS,
    CONFIDENTIALITY_HL7,
    LOINC,
    Code,
    Document,
    Flags,
    confidentiality_code,
)
from tests.support.space_docs import deletion, document, patient, replacement

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
ACTIF = SpaceView(SpaceState.ACTIF)
RULES = SiteRules(parking=Parking(horizon_days=30, recheck_minutes=60, unknown_status_recheck_minutes=5))
PATHO = VisibilityRule(name="patho", type_code="60568-3", system=LOINC)
HIV = VisibilityRule(name="hiv", result_code="HIV-CONF")


@dataclass(frozen=True)
class Row:
    """One line of the table: a change to the default (deliverable) situation and the expected answer."""

    id: str
    outcome: Outcome
    reason: Reason
    flags: dict[str, bool] = field(default_factory=dict)
    doc: dict[str, Any] = field(default_factory=dict)
    ctx: dict[str, Any] = field(default_factory=dict)
    codes: tuple[str, ...] | None = None  # expected confidentiality codes when delivered
    recheck: timedelta | None = None  # expected recheck_after - NOW when parked


def _reg(**kw: Any) -> RegistryEntry:
    return RegistryEntry(**kw)


def _rules(**kw: Any) -> SiteRules:
    return RULES.model_copy(update=kw)


PARKED_LONG_AGO = NOW - timedelta(days=31)
PARKED_RECENTLY = NOW - timedelta(days=2)
PARKED_NEAR_HORIZON = NOW - timedelta(days=30) + timedelta(minutes=10)

TABLE = [
    # --- the default: qualified identity, ACTIF space, nothing special ---------------------------------
    Row("deliver-default", Outcome.DELIVER, Reason.ALLOWED, codes=("N",)),
    Row("deliver-replacement", Outcome.DELIVER, Reason.ALLOWED, doc={"replace": True}, codes=("N",)),
    Row("deliver-keeps-cda-R", Outcome.DELIVER, Reason.ALLOWED, doc={"conf": ("R",)}, codes=("R",)),
    Row("deliver-keeps-cda-V", Outcome.DELIVER, Reason.ALLOWED, doc={"conf": ("V",)}, codes=("V",)),
    Row("deliver-no-cda-code-defaults-N", Outcome.DELIVER, Reason.ALLOWED, doc={"conf": ()}, codes=("N",)),
    # --- identity ------------------------------------------------------------------------------------
    Row(
        "identity-not-qualified-parks",
        Outcome.PARK,
        Reason.IDENTITY_NOT_QUALIFIED,
        ctx={"identity_qualified": False, "space": None},
        recheck=timedelta(minutes=60),
    ),
    Row(
        "identity-not-qualified-parked-before-parks",
        Outcome.PARK,
        Reason.IDENTITY_NOT_QUALIFIED,
        ctx={"identity_qualified": False, "first_parked_at": PARKED_RECENTLY},
        recheck=timedelta(minutes=60),
    ),
    Row(
        "identity-recheck-capped-at-horizon",
        Outcome.PARK,
        Reason.IDENTITY_NOT_QUALIFIED,
        ctx={"identity_qualified": False, "first_parked_at": PARKED_NEAR_HORIZON},
        recheck=timedelta(minutes=10),
    ),
    Row(
        "identity-not-qualified-past-horizon-refuses",
        Outcome.REFUSE,
        Reason.IDENTITY_NOT_QUALIFIED,
        ctx={"identity_qualified": False, "first_parked_at": PARKED_LONG_AGO},
    ),
    # --- destination ---------------------------------------------------------------------------------
    Row("destdmp-N-refuses", Outcome.REFUSE, Reason.NOT_FOR_SPACE, flags={"dest_dmp": False}),
    Row(
        "destdmp-N-wins-over-unqualified",
        Outcome.REFUSE,
        Reason.NOT_FOR_SPACE,
        flags={"dest_dmp": False},
        ctx={"identity_qualified": False},
    ),
    # --- opposition ----------------------------------------------------------------------------------
    Row(
        "registry-IO-refuses",
        Outcome.REFUSE,
        Reason.PATIENT_OPPOSED,
        ctx={"registry": _reg(feeding=FeedingConsent.OPPOSED)},
    ),
    Row(
        "registry-IO-refuses-even-unqualified",
        Outcome.REFUSE,
        Reason.PATIENT_OPPOSED,
        ctx={"registry": _reg(feeding=FeedingConsent.OPPOSED), "identity_qualified": False},
    ),
    Row(
        "registry-IO-refuses-even-if-remote-says-not-opposed",
        Outcome.REFUSE,
        Reason.PATIENT_OPPOSED,
        ctx={"registry": _reg(feeding=FeedingConsent.OPPOSED, dmp_status=SpaceState.ACTIF)},
    ),
    Row(
        "registry-INO-delivers",
        Outcome.DELIVER,
        Reason.ALLOWED,
        ctx={"registry": _reg(feeding=FeedingConsent.NOT_OPPOSED)},
        codes=("N",),
    ),
    Row(
        "registry-NA-does-not-block",
        Outcome.DELIVER,
        Reason.ALLOWED,
        ctx={"registry": _reg(feeding=FeedingConsent.NOT_COLLECTED)},
        codes=("N",),
    ),
    Row(
        "remote-opposed-refuses",
        Outcome.REFUSE,
        Reason.PATIENT_OPPOSED,
        ctx={"space": SpaceView(SpaceState.ACTIF, opposed=True)},
    ),
    # --- space state ---------------------------------------------------------------------------------
    Row("space-FERME-refuses", Outcome.REFUSE, Reason.SPACE_CLOSED, ctx={"space": SpaceView(SpaceState.FERME)}),
    Row(
        "space-INEXISTANT-parks",
        Outcome.PARK,
        Reason.SPACE_NOT_ACTIVE,
        ctx={"space": SpaceView(SpaceState.INEXISTANT)},
        recheck=timedelta(minutes=60),
    ),
    Row(
        "space-INEXISTANT-past-horizon-refuses",
        Outcome.REFUSE,
        Reason.SPACE_NOT_ACTIVE,
        ctx={"space": SpaceView(SpaceState.INEXISTANT), "first_parked_at": PARKED_LONG_AGO},
    ),
    Row(
        "registry-FERME-when-remote-unknown-refuses",
        Outcome.REFUSE,
        Reason.SPACE_CLOSED,
        ctx={"space": None, "registry": _reg(dmp_status=SpaceState.FERME)},
    ),
    Row(
        "registry-INEXISTANT-when-remote-unknown-parks",
        Outcome.PARK,
        Reason.SPACE_NOT_ACTIVE,
        ctx={"space": None, "registry": _reg(dmp_status=SpaceState.INEXISTANT)},
        recheck=timedelta(minutes=60),
    ),
    Row(
        "registry-ACTIF-when-remote-unknown-delivers",
        Outcome.DELIVER,
        Reason.ALLOWED,
        ctx={"space": None, "registry": _reg(dmp_status=SpaceState.ACTIF)},
        codes=("N",),
    ),
    Row(
        "remote-ACTIF-wins-over-stale-registry-FERME",
        Outcome.DELIVER,
        Reason.ALLOWED,
        ctx={"registry": _reg(dmp_status=SpaceState.FERME)},
        codes=("N",),
    ),
    # --- the space answered a delivery "no space for this patient" (DMPNotFound) ------------------------
    Row(
        "no-space-at-delivery-parks-despite-ACTIF-status",
        Outcome.PARK,
        Reason.SPACE_NOT_ACTIVE,
        ctx={"no_space_at_delivery": True},
        recheck=timedelta(minutes=60),
    ),
    Row(
        "no-space-at-delivery-parks-when-status-unknown",
        Outcome.PARK,
        Reason.SPACE_NOT_ACTIVE,
        ctx={"no_space_at_delivery": True, "space": None},
        recheck=timedelta(minutes=60),
    ),
    Row(
        "no-space-at-delivery-recheck-capped-at-horizon",
        Outcome.PARK,
        Reason.SPACE_NOT_ACTIVE,
        ctx={"no_space_at_delivery": True, "first_parked_at": PARKED_NEAR_HORIZON},
        recheck=timedelta(minutes=10),
    ),
    Row(
        "no-space-at-delivery-past-horizon-refuses",
        Outcome.REFUSE,
        Reason.SPACE_NOT_ACTIVE,
        ctx={"no_space_at_delivery": True, "first_parked_at": PARKED_LONG_AGO},
    ),
    Row(
        "no-space-at-delivery-opposition-still-refuses",
        Outcome.REFUSE,
        Reason.PATIENT_OPPOSED,
        ctx={"no_space_at_delivery": True, "space": SpaceView(SpaceState.ACTIF, opposed=True)},
    ),
    Row(
        "no-space-at-delivery-deletion-refuses-at-once",
        Outcome.REFUSE,
        Reason.SPACE_NOT_ACTIVE,
        doc={"delete": True},
        ctx={"no_space_at_delivery": True},
    ),
    Row(
        "status-unknown-parks-short",
        Outcome.PARK,
        Reason.SPACE_STATUS_UNKNOWN,
        ctx={"space": None},
        recheck=timedelta(minutes=5),
    ),
    Row(
        "status-unknown-past-horizon-refuses",
        Outcome.REFUSE,
        Reason.SPACE_STATUS_UNKNOWN,
        ctx={"space": None, "first_parked_at": PARKED_LONG_AGO},
    ),
    Row(
        "space-FERME-wins-over-blocked-author",
        Outcome.REFUSE,
        Reason.SPACE_CLOSED,
        ctx={"space": SpaceView(SpaceState.FERME, author_blocked=True)},
    ),
    # --- author --------------------------------------------------------------------------------------
    Row(
        "author-blocked-refuses",
        Outcome.REFUSE,
        Reason.AUTHOR_BLOCKED,
        ctx={"space": SpaceView(SpaceState.ACTIF, author_blocked=True)},
    ),
    Row(
        "opposed-wins-over-blocked",
        Outcome.REFUSE,
        Reason.PATIENT_OPPOSED,
        ctx={"space": SpaceView(SpaceState.ACTIF, opposed=True, author_blocked=True)},
    ),
    # --- flags -> confidentiality codes --------------------------------------------------------------
    Row("flag-MASQUE_PS", Outcome.DELIVER, Reason.ALLOWED, flags={"masque_ps": True}, codes=("N", "MASQUE_PS")),
    Row(
        "flag-INVISIBLE_PATIENT",
        Outcome.DELIVER,
        Reason.ALLOWED,
        flags={"invisible_patient": True},
        codes=("N", "INVISIBLE_PATIENT"),
    ),
    Row(
        "flag-INVISIBLE_REP_LEGAUX-maps-to-XDS-spelling",
        Outcome.DELIVER,
        Reason.ALLOWED,
        flags={"invisible_rep_legaux": True},
        codes=("N", "INVISIBLE_REPRESENTANTS_LEGAUX"),
    ),
    Row(
        "flags-R-plus-masque-plus-rep-legaux-ordered",
        Outcome.DELIVER,
        Reason.ALLOWED,
        flags={"invisible_rep_legaux": True, "masque_ps": True},
        doc={"conf": ("R",)},
        codes=("R", "MASQUE_PS", "INVISIBLE_REPRESENTANTS_LEGAUX"),
    ),
    Row(
        "codes-already-on-document-kept",
        Outcome.DELIVER,
        Reason.ALLOWED,
        doc={"conf": ("N", "MASQUE_PS")},
        codes=("N", "MASQUE_PS"),
    ),
    Row(
        "invisible-patient-and-masque-ps-refused",
        Outcome.REFUSE,
        Reason.CONFLICTING_VISIBILITY,
        flags={"invisible_patient": True, "masque_ps": True},
    ),
    Row(
        "invisible-patient-and-masque-ps-allowed-when-configured",
        Outcome.DELIVER,
        Reason.ALLOWED,
        flags={"invisible_patient": True, "masque_ps": True},
        ctx={"rules": _rules(allow_invisible_patient_and_masque_ps=True)},
        codes=("N", "MASQUE_PS", "INVISIBLE_PATIENT"),
    ),
    Row(
        "invisible-patient-and-masque-ps-drop-masque-when-configured",
        Outcome.DELIVER,
        Reason.ALLOWED,
        flags={"invisible_patient": True, "masque_ps": True},
        ctx={"rules": _rules(on_visibility_conflict=ConflictPolicy.DROP_MASQUE_PS)},
        codes=("N", "INVISIBLE_PATIENT"),
    ),
    # --- minors --------------------------------------------------------------------------------------
    Row(
        "minor-secret-connection-forces-invisible-rep-legaux",
        Outcome.DELIVER,
        Reason.ALLOWED,
        flags={"connexion_secrete": True},
        doc={"minor": True},
        codes=("N", "INVISIBLE_REPRESENTANTS_LEGAUX"),
    ),
    Row(
        "minor-from-remote-status-secret-connection",
        Outcome.DELIVER,
        Reason.ALLOWED,
        flags={"connexion_secrete": True},
        ctx={"space": SpaceView(SpaceState.ACTIF, minor=True)},
        codes=("N", "INVISIBLE_REPRESENTANTS_LEGAUX"),
    ),
    Row(
        "minor-without-secret-connection-unchanged", Outcome.DELIVER, Reason.ALLOWED, doc={"minor": True}, codes=("N",)
    ),
    Row(
        "adult-secret-connection-unchanged",
        Outcome.DELIVER,
        Reason.ALLOWED,
        flags={"connexion_secrete": True},
        codes=("N",),
    ),
    # --- site rules ----------------------------------------------------------------------------------
    Row(
        "site-rule-type-adds-invisible-patient",
        Outcome.DELIVER,
        Reason.ALLOWED,
        doc={"type": "60568-3"},
        ctx={"rules": _rules(rules=(PATHO,))},
        codes=("N", "INVISIBLE_PATIENT"),
    ),
    Row(
        "site-rule-type-other-system-ignored",
        Outcome.DELIVER,
        Reason.ALLOWED,
        doc={"type": "60568-3", "type_system": "1.2.250.1.213.1.1.4.12"},
        ctx={"rules": _rules(rules=(PATHO,))},
        codes=("N",),
    ),
    Row(
        "site-rule-result-code-adds-invisible-patient",
        Outcome.DELIVER,
        Reason.ALLOWED,
        ctx={"rules": _rules(rules=(HIV,)), "result_codes": frozenset({"HIV-CONF"})},
        codes=("N", "INVISIBLE_PATIENT"),
    ),
    Row(
        "site-rule-result-code-absent",
        Outcome.DELIVER,
        Reason.ALLOWED,
        ctx={"rules": _rules(rules=(HIV,)), "result_codes": frozenset({"GLU"})},
        codes=("N",),
    ),
    Row(
        "site-rule-plus-masque-ps-conflict-refused",
        Outcome.REFUSE,
        Reason.CONFLICTING_VISIBILITY,
        flags={"masque_ps": True},
        doc={"type": "60568-3"},
        ctx={"rules": _rules(rules=(PATHO,))},
    ),
    # --- deletions -----------------------------------------------------------------------------------
    Row(
        "delete-despite-opposition",
        Outcome.DELIVER,
        Reason.ALLOWED,
        doc={"delete": True},
        ctx={
            "registry": _reg(feeding=FeedingConsent.OPPOSED),
            "space": SpaceView(SpaceState.ACTIF, opposed=True, author_blocked=True),
        },
        codes=("N",),
    ),
    Row(
        "delete-space-FERME-refuses",
        Outcome.REFUSE,
        Reason.SPACE_CLOSED,
        doc={"delete": True},
        ctx={"space": SpaceView(SpaceState.FERME)},
    ),
    Row(
        "delete-space-INEXISTANT-refuses-at-once",
        Outcome.REFUSE,
        Reason.SPACE_NOT_ACTIVE,
        doc={"delete": True},
        ctx={"space": SpaceView(SpaceState.INEXISTANT)},
    ),
    Row(
        "delete-unqualified-parks",
        Outcome.PARK,
        Reason.IDENTITY_NOT_QUALIFIED,
        doc={"delete": True},
        ctx={"identity_qualified": False},
        recheck=timedelta(minutes=60),
    ),
    Row(
        "delete-destdmp-N-refuses",
        Outcome.REFUSE,
        Reason.NOT_FOR_SPACE,
        doc={"delete": True},
        flags={"dest_dmp": False},
    ),
]


def _build(row: Row) -> tuple[Document, ConsentContext]:
    spec = row.doc
    doc = document(flags=Flags(**row.flags))
    if "conf" in spec:
        doc = doc.model_copy(update={"confidentiality": tuple(confidentiality_code(c) for c in spec["conf"])})
    if spec.get("minor"):
        doc = doc.model_copy(update={"patient": patient(minor=True)})
    if "type" in spec:
        code = Code(code=spec["type"], system=spec.get("type_system", LOINC))
        doc = doc.model_copy(update={"type_code": code})
    if spec.get("replace"):
        doc = replacement(doc, "1.2.250.1.999.2.3.99")
    if spec.get("delete"):
        doc = deletion(doc)
    base: dict[str, Any] = {"now": NOW, "identity_qualified": True, "space": ACTIF, "rules": RULES}
    base.update(row.ctx)
    return doc, ConsentContext(**base)


@pytest.mark.parametrize("row", TABLE, ids=[r.id for r in TABLE])
def test_policy_table(row: Row) -> None:
    doc, ctx = _build(row)
    decision = decide(doc, ctx)
    assert (decision.outcome, decision.reason) == (row.outcome, row.reason)
    if row.outcome == Outcome.DELIVER:
        assert row.codes is not None
        assert tuple(c.code for c in decision.confidentiality) == row.codes
        systems = {c.code: c.system for c in decision.confidentiality}
        for code, system in systems.items():
            assert system == (CONFIDENTIALITY_HL7 if code in ("N", "R", "V") else CONFIDENTIALITY_CISIS)
        assert decision.recheck_after is None
    elif row.outcome == Outcome.PARK:
        assert decision.recheck_after is not None and row.recheck is not None
        assert decision.recheck_after - NOW == row.recheck
        assert decision.confidentiality == ()
    else:
        assert decision.recheck_after is None and decision.confidentiality == ()


def test_table_covers_every_reason_and_outcome() -> None:
    assert {r.reason for r in TABLE} == set(Reason)
    assert {r.outcome for r in TABLE} == set(Outcome)


def test_decision_is_deterministic_and_pure() -> None:
    doc, ctx = _build(TABLE[0])
    assert (
        decide(doc, ctx) == decide(doc, ctx) == Decision(Outcome.DELIVER, Reason.ALLOWED, (confidentiality_code("N"),))
    )


def test_outcome_strings_are_what_the_worker_compares() -> None:
    assert [o.value for o in Outcome] == ["deliver", "park", "refuse"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"dmp_status": "ACTIF", "feeding": "INO"},
            RegistryEntry(SpaceState.ACTIF, feeding=FeedingConsent.NOT_OPPOSED),
        ),
        ({"dmp_status": "ferme", "feeding": "io"}, RegistryEntry(SpaceState.FERME, feeding=FeedingConsent.OPPOSED)),
        ({"dmp_status": "", "feeding": ""}, RegistryEntry()),
        ({"dmp_status": "OUVERT", "feeding": "??"}, RegistryEntry()),
        ({"consultation": "IC"}, RegistryEntry(consultation="IC")),
    ],
)
def test_registry_entry_from_zfa_fields(fields: dict[str, Any], expected: RegistryEntry) -> None:
    assert RegistryEntry.from_fields(**fields) == expected


def test_shipped_rules_file_loads_and_applies(repo_root: Any) -> None:
    rules = load_rules((repo_root / "config" / "visibility-rules.yaml").read_text(encoding="utf-8"))
    assert not rules.allow_invisible_patient_and_masque_ps
    doc = document(type_code=Code(code="60568-3", system=LOINC))
    decision = decide(doc, ConsentContext(now=NOW, identity_qualified=True, space=ACTIF, rules=rules))
    assert [c.code for c in decision.confidentiality] == ["N", "INVISIBLE_PATIENT"]
