"""Assembles what the pure consent policy needs (space status, local registry, site rules, parking
history) and returns its decision to the worker."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

from passerelle.adapters.space import PatientSpace
from passerelle.connector.dispatch.worker import ConsentOutcome
from passerelle.connector.settings import Settings
from passerelle.consent.cache import TTLCache
from passerelle.consent.policy import ConsentContext, RegistryEntry, decide
from passerelle.consent.rules import DEFAULT_RULES, SiteRules, load_rules
from passerelle.errors import PasserelleError, TransientError
from passerelle.mappings.cda.reader import parse_cda
from passerelle.mappings.document import Document, IdentityStatus
from passerelle.mappings.mhd.bundle import SpaceStatus
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


class PolicyGate:
    """The worker's ``ConsentGate``: remote status (cached), local registry, site rules → decision."""

    def __init__(
        self,
        registry: ReferenceStore,
        history: DispatchJournal,
        space: PatientSpace,
        settings: Settings,
        *,
        metrics: Metrics,
    ) -> None:
        self.registry = registry
        self.history = history
        self.space = space
        self.rules = load_site_rules(settings.consent.rules_file)
        self.metrics = metrics
        self.cache: TTLCache[tuple[str, str], SpaceStatus] = TTLCache(settings.consent.status_ttl_s, time.monotonic)

    async def decide(self, doc: Document, row: Row, now: datetime) -> ConsentOutcome:
        qualified = bool(doc.patient.ins) and doc.patient.identity_status is IdentityStatus.QUALIFIED
        status: SpaceStatus | None = None
        if qualified and doc.flags.dest_dmp:
            author = doc.author.person_id or doc.author.organisation_id
            try:
                status = await self.cache.get_or_fetch(
                    (doc.patient.ins, author), lambda: self.space.status(doc.patient, author)
                )
            except TransientError:
                raise  # the space is unreachable: retried with backoff like a failed push
            except PasserelleError as exc:  # refused lookup: unknown status, the policy parks (short re-check)
                log.warning("space status lookup refused", extra={"row_id": row.id, "reason": exc.reason})
        entry = await self.registry.registry_get(doc.patient.ins) if doc.patient.ins else None
        registry = (
            RegistryEntry.from_fields(
                dmp_status=entry.dmp_status, feeding=entry.feeding, consultation=entry.consultation
            )
            if entry is not None
            else None
        )
        ctx = ConsentContext(
            now=now,
            identity_qualified=qualified,
            space=status,
            registry=registry,
            rules=self.rules,
            first_parked_at=await self._first_parked(row),
            result_codes=result_codes(doc) if self.rules.rules else frozenset(),
        )
        decision = decide(doc, ctx)
        if decision.outcome.value != "deliver":
            # A refusal or a park may be due to a stale status: look again next time.
            self.cache.invalidate((doc.patient.ins, doc.author.person_id or doc.author.organisation_id))
        return ConsentOutcome(
            decision.outcome.value,
            decision.reason.value,
            decision.confidentiality,
            decision.recheck_after,
            authorisation=status.authorisation if status is not None else "",
        )

    async def _first_parked(self, row: Row) -> datetime | None:
        if row.state is not State.PARKED:  # only a parked row has a parking history to look up
            return None
        for event in await self.history.events(row.id):
            if event.kind == "parked":
                return event.at
        return None
