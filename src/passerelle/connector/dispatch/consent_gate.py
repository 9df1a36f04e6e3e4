"""Assembles what the pure consent policy needs (space status, local registry, site rules, parking
history) and returns its decision to the worker."""

from __future__ import annotations

import logging
import time
from dataclasses import KW_ONLY, dataclass, field, replace
from datetime import datetime
from pathlib import Path

from passerelle.adapters.space import PatientSpace, SpaceStatus
from passerelle.connector.settings import Settings
from passerelle.consent.cache import TTLCache
from passerelle.consent.inputs import RegistryEntry, SpaceState, SpaceView
from passerelle.consent.policy import ConsentContext, Decision, Outcome, decide
from passerelle.consent.rules import DEFAULT_RULES, SiteRules, load_rules
from passerelle.errors import PasserelleError, TransientError
from passerelle.mappings.cda.safe_xml import parse_cda
from passerelle.mappings.document import Document, IdentityStatus
from passerelle.observability.metrics import Metrics
from passerelle.queue.model import Row, State
from passerelle.queue.ports import DispatchJournal, ReferenceStore

log = logging.getLogger(__name__)

_HL7 = "{urn:hl7-org:v3}"


def load_site_rules(path: Path | None) -> SiteRules:
    if path is None:
        return DEFAULT_RULES
    return load_rules(Path(path).read_text(encoding="utf-8"))


def result_codes(doc: Document) -> frozenset[str]:
    """Observation codes of a structured CDA (for site rules such as "invisible until announced")."""
    if doc.mime_type != "text/xml" or not doc.content:
        return frozenset()
    try:
        root = parse_cda(doc.content)
    except PasserelleError:
        return frozenset()
    found = (el.get("code") for el in root.iterfind(f".//{_HL7}observation/{_HL7}code"))
    return frozenset(code for code in found if code)


@dataclass(eq=False)
class PolicyGate:
    """The worker's ``ConsentGate``: remote status (cached), local registry, site rules → decision.

    The site rules file is read once, at construction."""

    registry: ReferenceStore
    history: DispatchJournal
    space: PatientSpace
    settings: Settings
    _: KW_ONLY
    metrics: Metrics
    rules: SiteRules = field(init=False)
    cache: TTLCache[tuple[str, str], SpaceStatus] = field(init=False)

    def __post_init__(self) -> None:
        self.rules = load_site_rules(self.settings.consent.rules_file)
        self.cache = TTLCache(self.settings.consent.status_ttl_s, time.monotonic)

    async def decide(self, doc: Document, row: Row, now: datetime, *, no_space_at_delivery: bool = False) -> Decision:
        qualified = bool(doc.patient.ins) and doc.patient.identity_status is IdentityStatus.QUALIFIED
        status = await self._status(doc, row) if qualified and doc.flags.dest_dmp else None
        ctx = ConsentContext(
            now=now,
            identity_qualified=qualified,
            space=space_view(status),
            registry=await self._registry(doc),
            rules=self.rules,
            first_parked_at=await self._first_parked(row),
            result_codes=result_codes(doc) if self.rules.rules else frozenset(),
            no_space_at_delivery=no_space_at_delivery,
        )
        decision = decide(doc, ctx)
        if decision.outcome is not Outcome.DELIVER:
            # A refusal or a park may be due to a stale status: look again next time.
            self.cache.invalidate(_cache_key(doc))
        return replace(decision, authorisation=status.authorisation) if status and status.authorisation else decision

    async def _status(self, doc: Document, row: Row) -> SpaceStatus | None:
        """The space's status (cached); None when the lookup was refused (the policy parks: unknown)."""
        author = _author(doc)
        try:
            return await self.cache.get_or_fetch(_cache_key(doc), lambda: self.space.status(doc.patient, author))
        except TransientError:
            raise  # the space is unreachable: retried with backoff like a failed push
        except PasserelleError as exc:
            log.warning("space status lookup refused", extra={"row_id": row.id, "reason": exc.reason})
            return None

    async def _registry(self, doc: Document) -> RegistryEntry | None:
        entry = await self.registry.registry_get(doc.patient.ins) if doc.patient.ins else None
        if entry is None:
            return None
        return RegistryEntry.from_fields(
            dmp_status=entry.dmp_status, feeding=entry.feeding, consultation=entry.consultation
        )

    async def _first_parked(self, row: Row) -> datetime | None:
        if row.state is not State.PARKED:  # only a parked row has a parking history to look up
            return None
        for event in await self.history.events(row.id):
            if event.kind == "parked":
                return event.at
        return None


def space_view(status: SpaceStatus | None) -> SpaceView | None:
    """The space port's status answer, as the consent policy reads it."""
    if status is None:
        return None
    return SpaceView(
        state=SpaceState(status.state.value),
        opposed=status.opposed,
        author_blocked=status.author_blocked,
        minor=status.minor,
    )


def _author(doc: Document) -> str:
    return doc.author.person_id or doc.author.organisation_id


def _cache_key(doc: Document) -> tuple[str, str]:
    return (doc.patient.ins, _author(doc))
