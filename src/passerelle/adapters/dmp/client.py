"""``DmpSpace``: the :class:`passerelle.adapters.space.PatientSpace` port over the DMP's SOAP services.

- ``status`` → TD0.2 (the consent gate caches it per patient and author): ``NF`` → INEXISTANT, closed →
  FERME, else ACTIF; the authorisation (VALIDE, EXPIRE, NON_EXISTE, INTERDIT) is kept, INTERDIT counts as
  a blocked author.
- ``provide`` (publish) → ITI-41 of a signed submission set. Replacement → ITI-18 GetDocuments (the old
  and the new uniqueId) then ITI-41 with an RPLC association to the old version's entryUUID. A document
  flagged ``MODIF_CONF_CODE`` that the registry already holds → ITI-57 metadata update of its
  confidentiality codes.
- ``delete`` → ITI-18 then ITI-57 ``UpdateAvailabilityStatus`` to Deleted (already deleted: success).
- ``probe`` → a TD0.2 for :data:`PROBE_PATIENT`, a synthetic INS of the ANS test authority that names no
  real person (ADR 0023): any TD0.2 answer, found, not found or refused with a business code, shows that
  the URL and the credentials work; a credential fault or a 404 without SOAP shows they do not.

Idempotent: a re-send of the same document carries the same uniqueId, bytes and submission set uniqueId;
when the DMP answers that the uniqueId is already registered (or answers PartialSuccess), ITI-18 tells
whether the registered entry is this very document (same SHA-1 and size → ``ALREADY_STORED``) or another
(refused ``UniqueIdConflict``). One attempt per call otherwise; errors are classified by the table of
:mod:`passerelle.adapters.dmp.errors`. Every receipt carries the DMP's answer (status, codes, message ids).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from lxml import etree

from passerelle.adapters.dmp.credentials import check_space, load_signing_identity, tls_context
from passerelle.adapters.dmp.envelope import SoapAnswer
from passerelle.adapters.dmp.errors import DUPLICATE_CODES, registry_failure
from passerelle.adapters.dmp.requests import DmpRequests
from passerelle.adapters.dmp.transport import Exchange, Limits, exchange
from passerelle.adapters.http import space_http_client
from passerelle.adapters.mhd import SpaceSettings
from passerelle.adapters.space import DeliveryOutcome, DeliveryReceipt, SpaceState, SpaceStatus
from passerelle.errors import (
    IdentityError,
    RemoteAmbiguousError,
    RemoteRejectedError,
    RemoteTransientError,
    transient_result,
)
from passerelle.mappings.document import INS_NIR_TEST_OID, Action, Document, Patient
from passerelle.mappings.identity.ins import allowed_ins_oids, with_key
from passerelle.mappings.xds import ns
from passerelle.mappings.xds.queries import StatusChange
from passerelle.mappings.xds.responses import (
    Entry,
    MalformedResponseError,
    RegistryError,
    RegistryResult,
    parse_query_response,
    parse_registry_response,
)
from passerelle.mappings.xds.td02 import MalformedTd02Error, parse_answer

log = logging.getLogger(__name__)

TRANSPORT = "dmp"
#: The probe's patient: a synthetic NIR (no real person has it) under the ANS test INS authority.
PROBE_PATIENT = Patient(ins=with_key("1555555555555"), ins_oid=INS_NIR_TEST_OID)
#: ``(transaction, outcome)`` observer for metrics (outcome: ok, refused, retry, credential, tls_untrusted).
Observer = Callable[[str, str], None]


class DmpSpace:
    """PatientSpace over the DMP's SOAP services. Build once; :meth:`aclose` at shutdown (idempotent).

    ``settings`` is the ``space`` group (``transport: dmp``). Raises ValueError listing every configuration
    problem (one per line) when the certificates or settings are unusable. ``transport`` replaces the
    network in unit tests; ``now`` is the clock of VIHF and signature times.
    """

    def __init__(
        self,
        settings: SpaceSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        observe: Observer | None = None,
    ) -> None:
        problems = check_space(settings)
        if problems:
            raise ValueError("\n".join(problems))
        self._settings = settings
        self._now = now
        self._observe = observe or (lambda _t, _o: None)
        self.requests = DmpRequests(
            settings.url,
            settings.dmp,
            load_signing_identity(settings),
            source_id=settings.source_id,
            content_type=settings.content_type,
            now=now,
        )
        self._limits = Limits(settings.total_timeout_s, settings.max_response_bytes)
        self._closed = False
        user_agent = f"{settings.dmp.software_name}/{settings.dmp.software_version}"
        self._client = space_http_client(
            settings, verify=tls_context(settings), transport=transport, headers={"User-Agent": user_agent}
        )

    # --- PatientSpace ---------------------------------------------------------------------------------

    async def provide(self, doc: Document) -> DeliveryReceipt:
        """Publish, replace, or (``MODIF_CONF_CODE``) update the confidentiality of ``doc``."""
        if doc.action is Action.DELETE:
            raise ValueError("provide() publishes or replaces; use delete() for a deletion")
        self._check_identity(doc.patient)
        replaced: dict[str, str] = {}
        if doc.action is Action.REPLACE or doc.flags.modif_conf_code:
            wanted = [doc.unique_id] + ([doc.replaces] if doc.action is Action.REPLACE and doc.replaces else [])
            entries = await self._lookup(doc, wanted)
            mine = _approved(entries, doc.unique_id)
            if mine is not None and doc.flags.modif_conf_code:
                return await self._update_confidentiality(doc, mine)
            if mine is not None or _any(entries, doc.unique_id):
                return self._already(doc, entries, "ITI-18")
            if doc.action is Action.REPLACE:
                replaced[doc.replaces] = self._replaced_entry(entries, doc.replaces)
        return await self._submit(doc, replaced)

    async def delete(self, doc: Document) -> DeliveryReceipt:
        """Delete ``doc.replaces`` (or ``doc.unique_id``): ITI-18 then ITI-57 to Deleted."""
        self._check_identity(doc.patient)
        target = doc.replaces or doc.unique_id
        entries = [e for e in await self._lookup(doc, [target]) if e.unique_id == target]
        if any(e.status == ns.DELETED for e in entries):
            return self._receipt(target, DeliveryOutcome.DELETED, 200, "ITI-18: already Deleted", f"delete:{target}")
        live = next((e for e in entries if e.status in (ns.APPROVED, ns.ARCHIVED)), None)
        if live is None:
            raise RemoteRejectedError(
                "ITI-18: no entry to delete for this uniqueId",
                status=200,
                remote_code="UnknownDocument",
                reason="unknown_document",
            )
        call = self.requests.update_status(doc, live.entry_uuid, live.status, StatusChange.DELETE)
        result, status = await self._registry(call)
        return self._receipt(target, DeliveryOutcome.DELETED, status, _answer(call, result), f"delete:{target}")

    async def status(self, patient: Patient, author_id: str) -> SpaceStatus:
        """TD0.2 for ``patient`` as asked by ``author_id``."""
        self._check_identity(patient)
        call = self.requests.td02(patient, author_id)
        answer, status = await self._exchange(call)
        try:
            td = parse_answer(answer.payload) if answer.payload is not None else None
        except MalformedTd02Error as exc:
            raise RemoteAmbiguousError(f"TD0.2: {exc}", status=status) from exc
        if td is None:
            raise RemoteAmbiguousError("TD0.2: empty answer", status=status)
        if not td.accepted:
            raise registry_failure("TD0.2", [_error(td.error_code)], status)
        state = SpaceState.INEXISTANT if not td.found else SpaceState.FERME if td.closed else SpaceState.ACTIF
        log.info("dmp: TD0.2 %s (authorisation %s)", state.value, td.authorisation or "-")
        return SpaceStatus(
            state=state,
            author_blocked=td.authorisation == "INTERDIT",
            minor=patient.minor,
            authorisation=td.authorisation,
        )

    async def probe(self) -> str:
        """TD0.2 for :data:`PROBE_PATIENT` as the structure (module docstring). Returns a PHI-free summary;
        raises :class:`~passerelle.errors.RemoteCredentialError` or a transient error as ``status`` does."""
        call = self.requests.td02(PROBE_PATIENT, self._settings.dmp.structure_id)
        try:
            _answer, status = await self._exchange(call)
        except RemoteRejectedError as exc:  # a business answer: the DMP read and judged our request
            return f"TD0.2 answered {exc.remote_code or 'a refusal'}"
        return f"TD0.2 answered (HTTP {status})"

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()

    # --- flows ----------------------------------------------------------------------------------------

    async def _submit(self, doc: Document, replaced: dict[str, str]) -> DeliveryReceipt:
        call = self.requests.provide(doc, replaced)
        answer, status = await self._exchange(call)
        result = self._result(call, answer.payload, status)
        codes = {e.code for e in result.errors if e.is_error}
        if result.ok:
            return self._receipt(doc.unique_id, DeliveryOutcome.CREATED, status, _answer(call, result), doc.unique_id)
        if result.status == "PartialSuccess" or codes & DUPLICATE_CODES:
            entries = await self._lookup(doc, [doc.unique_id])
            return self._already(doc, entries, _answer(call, result))
        self._observe(call.transaction, "refused")
        raise registry_failure(call.transaction, result.errors, status)

    async def _update_confidentiality(self, doc: Document, entry: Entry) -> DeliveryReceipt:
        assert entry.element is not None
        try:
            call = self.requests.update_confidentiality(doc, entry.element)
        except ValueError as exc:  # a permanent fact about the registry's answer, not a failure to retry
            raise RemoteRejectedError(
                "ITI-18: the registered entry has no lid or version to update",
                status=200,
                remote_code="UnversionedEntry",
                reason="invalid_update",
            ) from exc
        result, status = await self._registry(call)
        return self._receipt(doc.unique_id, DeliveryOutcome.UPDATED, status, _answer(call, result), doc.unique_id)

    async def _lookup(self, doc: Document, unique_ids: list[str]) -> tuple[Entry, ...]:
        call = self.requests.get_documents(unique_ids, doc.patient, doc.author)
        answer, status = await self._exchange(call)
        try:
            result, entries = parse_query_response(answer.payload) if answer.payload is not None else (None, ())
        except MalformedResponseError as exc:
            raise RemoteAmbiguousError(f"ITI-18: {exc}", status=status) from exc
        if result is None or result.status == "Failure":
            raise registry_failure("ITI-18", result.errors if result else (), status)
        return entries

    def _already(self, doc: Document, entries: tuple[Entry, ...], answer: str) -> DeliveryReceipt:
        """The uniqueId is registered: ours (same hash and size) → ALREADY_STORED, else a conflict."""
        registered = [e for e in entries if e.unique_id == doc.unique_id]
        if any(e.hash == doc.sha1 and e.size in (None, doc.size) for e in registered):
            return self._receipt(
                doc.unique_id, DeliveryOutcome.ALREADY_STORED, 200, f"{answer}; registered", doc.unique_id
            )
        if not registered:
            raise RemoteAmbiguousError("ITI-41 not confirmed and the document is not registered", status=200)
        raise RemoteRejectedError(
            "the DMP holds another document under this uniqueId",
            status=200,
            remote_code="UniqueIdConflict",
            reason="unique_id_conflict",
        )

    def _replaced_entry(self, entries: tuple[Entry, ...], unique_id: str) -> str:
        old = _approved(entries, unique_id)
        if old is None:
            code = "XDSRegistryDeprecatedDocumentError" if _any(entries, unique_id) else "UnknownReplacedDocument"
            raise RemoteRejectedError(
                "ITI-18: the replaced document has no Approved entry",
                status=200,
                remote_code=code,
                reason="unknown_replaced_document",
            )
        return old.entry_uuid if old.entry_uuid.startswith("urn:uuid:") else f"urn:uuid:{old.entry_uuid}"

    # --- plumbing -------------------------------------------------------------------------------------

    async def _exchange(self, call: Exchange) -> tuple[SoapAnswer, int]:
        if self._closed:
            raise RuntimeError("DmpSpace is closed")
        try:
            answer, status = await exchange(self._client, call, self._limits, self._now)
        except RemoteRejectedError:
            self._observe(call.transaction, "refused")
            raise
        except RemoteTransientError as exc:
            kind = transient_result(exc)
            self._observe(call.transaction, "retry" if kind == "transient" else kind)
            raise
        except Exception:
            self._observe(call.transaction, "retry")
            raise
        self._observe(call.transaction, "ok")
        return answer, status

    def _result(self, call: Exchange, payload: etree._Element | None, status: int) -> RegistryResult:
        if payload is None:
            raise RemoteAmbiguousError(f"{call.transaction}: empty answer", status=status)
        try:
            return parse_registry_response(payload)
        except MalformedResponseError as exc:
            raise RemoteAmbiguousError(f"{call.transaction}: {exc}", status=status) from exc

    async def _registry(self, call: Exchange) -> tuple[RegistryResult, int]:
        answer, status = await self._exchange(call)
        result = self._result(call, answer.payload, status)
        if not result.ok:
            raise registry_failure(call.transaction, result.errors, status)
        return result, status

    def _check_identity(self, patient: Patient) -> None:
        if not patient.ins or patient.ins_oid not in allowed_ins_oids(self._settings.test_environment):
            raise IdentityError(
                "the patient's INS assigning authority is not accepted by this patient space",
                location="patient.ins_oid",
            )

    @staticmethod
    def _receipt(unique_id: str, outcome: DeliveryOutcome, status: int, answer: str, key: str) -> DeliveryReceipt:
        log.info("dmp: document %s %s", unique_id, outcome.value)
        return DeliveryReceipt(
            unique_id=unique_id,
            outcome=outcome,
            http_status=status,
            idempotency_key=key,
            remote_answer=answer,
            transport=TRANSPORT,
        )


def _approved(entries: tuple[Entry, ...], unique_id: str) -> Entry | None:
    return next((e for e in entries if e.unique_id == unique_id and e.status == ns.APPROVED), None)


def _any(entries: tuple[Entry, ...], unique_id: str) -> bool:
    return any(e.unique_id == unique_id for e in entries)


def _answer(call: Exchange, result: RegistryResult) -> str:
    return f"{call.transaction} {result.summary()} (MessageID {call.message_id})"


def _error(code: str) -> RegistryError:
    return RegistryError(code=code)
