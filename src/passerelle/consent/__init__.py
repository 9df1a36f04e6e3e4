"""Consent and visibility policy: a pure decision from the document, the space status, the local
registry (PAM ZFA) and the site rules. No network, no journal: the caller passes what it needs."""

from passerelle.consent.cache import TTLCache
from passerelle.consent.inputs import FeedingConsent, RegistryEntry, SpaceState, SpaceView
from passerelle.consent.policy import (
    ConsentContext,
    Decision,
    Outcome,
    Reason,
    confidentiality_codes,
    decide,
)
from passerelle.consent.rules import DEFAULT_RULES, ConflictPolicy, SiteRules, VisibilityRule, load_rules

__all__ = [
    "DEFAULT_RULES",
    "ConflictPolicy",
    "ConsentContext",
    "Decision",
    "FeedingConsent",
    "Outcome",
    "Reason",
    "RegistryEntry",
    "SiteRules",
    "SpaceState",
    "SpaceView",
    "TTLCache",
    "VisibilityRule",
    "confidentiality_codes",
    "decide",
    "load_rules",
]
