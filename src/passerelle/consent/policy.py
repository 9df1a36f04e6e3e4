"""The consent and visibility policy: one pure decision per document (docs/interop-reference.md, "PAM France consent"
and "Confidentiality and visibility"). See docs/consent.md for the table this code implements, in this order (first match wins):

1. ``DESTDMP=N`` → refuse ``not_for_space``.
2. Local registry (PAM ZFA-9) says ``IO`` → refuse ``patient_opposed`` (never publish).
3. Identity not qualified → park ``identity_not_qualified`` until the horizon, then refuse.
4. Remote status says opposed → refuse ``patient_opposed``.
5. Space state (``INEXISTANT`` when a delivery was answered "no space for this patient", else the remote
   status when known, else the registry's ZFA-1): ``FERME`` → refuse ``space_closed``; ``INEXISTANT`` →
   park ``space_not_active`` until the horizon, then refuse; neither known → park
   ``space_status_unknown`` (short re-check) until the horizon, then refuse.
6. Remote status says this author is blocked → refuse ``author_blocked``.
7. Confidentiality codes: N/R/V from the CDA first (``N`` if none), then MASQUE_PS, INVISIBLE_PATIENT,
   INVISIBLE_REPRESENTANTS_LEGAUX from the flags, the codes already on the document and the site rules;
   a minor's document sent in secret connection is forced INVISIBLE_REPRESENTANTS_LEGAUX. INVISIBLE_PATIENT
   with MASQUE_PS when the site does not allow both → refuse ``conflicting_visibility`` (or, when the site
   configured ``drop_masque_ps``, MASQUE_PS is dropped). Then deliver ``allowed``.

Deletions only need steps 1, 3 and 5 (an opposition or a blocked author must not prevent removing a
document already shared; parking a deletion makes no sense, so INEXISTANT / unknown refuse at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from passerelle.consent.inputs import FeedingConsent, RegistryEntry, SpaceState, SpaceView
from passerelle.consent.rules import DEFAULT_RULES, ConflictPolicy, SiteRules
from passerelle.mappings.document import (
    CONFIDENTIALITY_HL7,
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    VISIBILITY_CODES,
    Action,
    Code,
    Document,
    confidentiality_code,
)


class Outcome(StrEnum):
    DELIVER = "deliver"
    PARK = "park"
    REFUSE = "refuse"


class Reason(StrEnum):
    """Fixed, PHI-free reasons (metric labels, journal states, audit, ZAM codes)."""

    ALLOWED = "allowed"
    NOT_FOR_SPACE = "not_for_space"
    PATIENT_OPPOSED = "patient_opposed"
    IDENTITY_NOT_QUALIFIED = "identity_not_qualified"
    SPACE_CLOSED = "space_closed"
    SPACE_NOT_ACTIVE = "space_not_active"
    SPACE_STATUS_UNKNOWN = "space_status_unknown"
    AUTHOR_BLOCKED = "author_blocked"
    CONFLICTING_VISIBILITY = "conflicting_visibility"


@dataclass(frozen=True)
class ConsentContext:
    """Everything the decision depends on besides the document. The gate (connector) assembles it."""

    now: datetime
    identity_qualified: bool
    space: SpaceView | None = None  # remote status lookup; None when unknown (not asked, or failed)
    registry: RegistryEntry | None = None  # local registry fed by PAM ZFA; None when nothing collected
    rules: SiteRules = DEFAULT_RULES
    first_parked_at: datetime | None = None  # when this document was first parked (None: never)
    result_codes: frozenset[str] = frozenset()  # result codes found in the document, for site rules
    #: The space answered a delivery of this document that the patient has no space (DMP "not found"):
    #: it counts as ``INEXISTANT`` whatever the status lookup said (a stale or optimistic answer).
    no_space_at_delivery: bool = False


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: Reason
    confidentiality: tuple[Code, ...] = ()
    recheck_after: datetime | None = None  # for PARK: when to look again
    authorisation: str = ""  # the space's authorisation of the author (DMP TD0.2) as given; recorded, not read


def decide(doc: Document, ctx: ConsentContext) -> Decision:
    """The decision for ``doc`` (see the module docstring for the order of the checks)."""
    deleting = doc.action == Action.DELETE
    early = _before_space(doc, ctx, deleting)
    if early is not None:
        return early
    space = ctx.space
    if not deleting and space is not None and space.opposed:
        return Decision(Outcome.REFUSE, Reason.PATIENT_OPPOSED)
    blocked = _by_space_state(ctx, deleting)
    if blocked is not None:
        return blocked
    if not deleting and space is not None and space.author_blocked:
        return Decision(Outcome.REFUSE, Reason.AUTHOR_BLOCKED)
    return _visibility(doc, ctx)


def _before_space(doc: Document, ctx: ConsentContext, deleting: bool) -> Decision | None:
    """Rows 1-3: not for the space, opposed in the local registry, identity not qualified."""
    if not doc.flags.dest_dmp:
        return Decision(Outcome.REFUSE, Reason.NOT_FOR_SPACE)
    registry = ctx.registry
    if not deleting and registry is not None and registry.feeding == FeedingConsent.OPPOSED:
        return Decision(Outcome.REFUSE, Reason.PATIENT_OPPOSED)
    if not ctx.identity_qualified:
        return _park(ctx, Reason.IDENTITY_NOT_QUALIFIED, ctx.rules.parking.recheck, deleting)
    return None


def space_state(ctx: ConsentContext) -> SpaceState | None:
    """Which state counts: a delivery answered "no space", else the remote status, else the registry."""
    if ctx.no_space_at_delivery:
        return SpaceState.INEXISTANT
    if ctx.space is not None:
        return ctx.space.state
    return ctx.registry.dmp_status if ctx.registry is not None else None


def _by_space_state(ctx: ConsentContext, deleting: bool) -> Decision | None:
    """Row 5: closed → refuse; not created yet → park; unknown → park with a short re-check."""
    state = space_state(ctx)
    if state == SpaceState.FERME:
        return Decision(Outcome.REFUSE, Reason.SPACE_CLOSED)
    if state == SpaceState.INEXISTANT:
        return _park(ctx, Reason.SPACE_NOT_ACTIVE, ctx.rules.parking.recheck, deleting)
    if state is None:
        return _park(ctx, Reason.SPACE_STATUS_UNKNOWN, ctx.rules.parking.unknown_status_recheck, deleting)
    return None


def _visibility(doc: Document, ctx: ConsentContext) -> Decision:
    """Row 7-8: the confidentiality codes, refused when they conflict and the site does not allow it."""
    minor = doc.patient.minor or (ctx.space is not None and ctx.space.minor)
    codes = confidentiality_codes(doc, ctx.rules, minor=minor, result_codes=ctx.result_codes)
    present = {c.code for c in codes}
    if INVISIBLE_PATIENT in present and MASQUE_PS in present and not ctx.rules.allow_invisible_patient_and_masque_ps:
        if ctx.rules.on_visibility_conflict == ConflictPolicy.REFUSE:
            return Decision(Outcome.REFUSE, Reason.CONFLICTING_VISIBILITY)
        codes = tuple(c for c in codes if c.code != MASQUE_PS)
    return Decision(Outcome.DELIVER, Reason.ALLOWED, confidentiality=codes)


def confidentiality_codes(
    doc: Document, rules: SiteRules, *, minor: bool, result_codes: frozenset[str] = frozenset()
) -> tuple[Code, ...]:
    """N/R/V first (the CDA's, ``N`` when absent), then the visibility codes in a fixed order."""
    hl7 = next((c for c in doc.confidentiality if c.system == CONFIDENTIALITY_HL7 and c.code in ("N", "R", "V")), None)
    wanted = set(doc.visibility_codes)
    if doc.flags.masque_ps:
        wanted.add(MASQUE_PS)
    if doc.flags.invisible_patient:
        wanted.add(INVISIBLE_PATIENT)
    if doc.flags.invisible_rep_legaux:
        wanted.add(INVISIBLE_REPRESENTANTS_LEGAUX)
    if minor and doc.flags.connexion_secrete:
        wanted.add(INVISIBLE_REPRESENTANTS_LEGAUX)
    for rule in rules.rules:
        if (
            _matches(rule.type_code, rule.system, doc.type_code)
            and _matches(rule.class_code, rule.system, doc.class_code)
            and (not rule.result_code or rule.result_code in result_codes)
        ):
            wanted.update(rule.add)
    ordered = [code for code in (MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX) if code in wanted]
    assert wanted <= VISIBILITY_CODES
    return (hl7 or confidentiality_code("N"), *(confidentiality_code(code) for code in ordered))


def _matches(expected: str, system: str, code: Code) -> bool:
    if not expected:
        return True
    return code.code == expected and (not system or code.system == system)


def _park(ctx: ConsentContext, reason: Reason, recheck: timedelta, deleting: bool) -> Decision:
    if deleting and reason != Reason.IDENTITY_NOT_QUALIFIED:
        return Decision(Outcome.REFUSE, reason)
    horizon_end = (ctx.first_parked_at or ctx.now) + ctx.rules.parking.horizon
    if ctx.now >= horizon_end:
        return Decision(Outcome.REFUSE, reason)
    return Decision(Outcome.PARK, reason, recheck_after=min(ctx.now + recheck, horizon_end))
