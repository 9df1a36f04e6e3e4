"""Properties of the consent policy over random situations (hypothesis): the privacy invariants hold
whatever the combination, not only in the table's rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

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
)
from passerelle.consent.rules import ConflictPolicy
from passerelle.mappings.document import Action, Document, Flags, confidentiality_code
from tests.support.space_docs import deletion, document, patient

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)

flags = st.builds(
    Flags,
    masque_ps=st.booleans(),
    invisible_patient=st.booleans(),
    invisible_rep_legaux=st.booleans(),
    connexion_secrete=st.booleans(),
    dest_dmp=st.booleans(),
)
spaces = st.none() | st.builds(
    SpaceView,
    state=st.sampled_from(list(SpaceState)),
    opposed=st.booleans(),
    author_blocked=st.booleans(),
    minor=st.booleans(),
)
registries = st.none() | st.builds(
    RegistryEntry,
    dmp_status=st.none() | st.sampled_from(list(SpaceState)),
    feeding=st.sampled_from(list(FeedingConsent)),
)
rules = st.builds(
    SiteRules,
    allow_invisible_patient_and_masque_ps=st.booleans(),
    on_visibility_conflict=st.sampled_from(list(ConflictPolicy)),
)
situations = st.fixed_dictionaries(
    {
        "flags": flags,
        "space": spaces,
        "registry": registries,
        "rules": rules,
        "qualified": st.booleans(),
        "minor": st.booleans(),
        "delete": st.booleans(),
        "cda": st.sampled_from(["N", "R", "V"]),
        "parked_days": st.none() | st.floats(min_value=0, max_value=60),
        "no_space": st.booleans(),
    }
)


def _decide(s: dict[str, Any]) -> tuple[Document, ConsentContext, Decision]:
    doc = document(
        flags=s["flags"],
        patient=patient(minor=s["minor"]),
        confidentiality=(confidentiality_code(s["cda"]),),
    )
    if s["delete"]:
        doc = deletion(doc)
    first = None if s["parked_days"] is None else NOW - timedelta(days=s["parked_days"])
    ctx = ConsentContext(
        now=NOW,
        identity_qualified=s["qualified"],
        space=s["space"],
        registry=s["registry"],
        rules=s["rules"],
        first_parked_at=first,
        no_space_at_delivery=s["no_space"],
    )
    return doc, ctx, decide(doc, ctx)


@settings(max_examples=200, deadline=None)
@given(situations)
def test_privacy_invariants(s: dict[str, Any]) -> None:
    doc, ctx, decision = _decide(s)
    publishing = doc.action != Action.DELETE
    codes = [c.code for c in decision.confidentiality]
    if decision.outcome == Outcome.DELIVER:
        assert doc.flags.dest_dmp and ctx.identity_qualified and not ctx.no_space_at_delivery
        state = ctx.space.state if ctx.space else (ctx.registry.dmp_status if ctx.registry else None)
        assert state == SpaceState.ACTIF
        if publishing:
            assert not (ctx.registry and ctx.registry.feeding == FeedingConsent.OPPOSED)
            assert not (ctx.space and (ctx.space.opposed or ctx.space.author_blocked))
        # N/R/V first and kept from the CDA, every asked restriction present, no code twice
        assert codes[0] == s["cda"]
        assert len(codes) == len(set(codes))
        asked = {
            "MASQUE_PS": doc.flags.masque_ps,
            "INVISIBLE_PATIENT": doc.flags.invisible_patient,
            "INVISIBLE_REPRESENTANTS_LEGAUX": doc.flags.invisible_rep_legaux,
        }
        for code, wanted in asked.items():
            dropped = code == "MASQUE_PS" and ctx.rules.on_visibility_conflict == ConflictPolicy.DROP_MASQUE_PS
            if wanted and not dropped:
                assert code in codes
        minor = s["minor"] or (ctx.space is not None and ctx.space.minor)
        if minor and doc.flags.connexion_secrete:
            assert "INVISIBLE_REPRESENTANTS_LEGAUX" in codes
        if not ctx.rules.allow_invisible_patient_and_masque_ps:
            assert not {"INVISIBLE_PATIENT", "MASQUE_PS"} <= set(codes)
    else:
        assert decision.confidentiality == ()
    if decision.outcome == Outcome.PARK:
        assert decision.recheck_after is not None and decision.recheck_after > NOW
        horizon = (ctx.first_parked_at or NOW) + ctx.rules.parking.horizon
        assert decision.recheck_after <= horizon
    else:
        assert decision.recheck_after is None
    if not doc.flags.dest_dmp:
        assert (decision.outcome, decision.reason) == (Outcome.REFUSE, Reason.NOT_FOR_SPACE)
    if publishing and doc.flags.dest_dmp and ctx.registry and ctx.registry.feeding == FeedingConsent.OPPOSED:
        assert (decision.outcome, decision.reason) == (Outcome.REFUSE, Reason.PATIENT_OPPOSED)
