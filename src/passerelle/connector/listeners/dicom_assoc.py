"""The DICOM SCP's association table: who may associate, from where, and who makes room (ADR 0024).

pynetdicom runs one thread per TCP connection (an ``AcceptorThread``) from the moment it is accepted,
and refuses an association request when more than ``maximum_associations`` such threads are alive
(A-ASSOCIATE-RJ "local limit exceeded"); it aborts an association silent for ``network_timeout`` and
drops a connection that sends no association request within ``acse_timeout``. It has no per-source cap
and never closes an idle association to admit a new one, so a few idle peers could lock every modality
out. This table adds, when an association request arrives (``EVT_REQUESTED``, in the requestor's thread):

1. **Sender binding** (``dicom.bindings``): a calling AE title with no binding is refused (permanent,
   "calling AE title not recognised"), and so is a bound one calling from outside its ``networks``;
   counted and audited (so are pynetdicom's own refusals of a calling AE title not in
   ``allowed_calling_ae_titles`` and of a wrong called AE title: :data:`AUDITED`). A bound association carries a :class:`~passerelle.connector.intake.binding.Principal`
   (``ae:<title>``, its Issuers of Patient ID) that the intake checks for every C-STORE.
2. **Per-source cap** (``max_associations_per_source``): one more association request from an address
   that already holds that many is refused (transient, "local limit exceeded").
3. **Room**: when the table is full, the association idle the longest is closed (its socket shut
   down: the peer sees the connection end) and the newcomer is admitted. Idle = no DIMSE message being
   received, none waiting, no C-STORE or C-ECHO in our handlers; a connection that never sent its
   association request is idle too. When every association is busy, the newcomer is refused (transient,
   "local limit exceeded"). A sender that is sending is never cut.

Counted (``DicomMetrics.association``): ``opened``, ``refused_<reason>``, ``closed_evicted``,
``closed_idle_timeout`` (pynetdicom's network timeout).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pynetdicom import evt

from passerelle.connector.intake.binding import Principal
from passerelle.connector.listeners.net import Network, address_in

log = logging.getLogger(__name__)

#: A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4.
REJECT_LIMIT = (0x02, 0x03, 0x02)  # rejected-transient, presentation related, local-limit-exceeded
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # rejected-permanent, service user, calling-AE-title-not-recognized
#: pynetdicom's own refusals by (source, diagnostic), as metric reasons.
_REJECTED = {(0x01, 0x03): "calling_ae", (0x01, 0x07): "called_ae", (0x03, 0x02): "max_associations"}
#: How long a newcomer waits for the association it displaced to end.
EVICT_WAIT_S = 2.0


class DicomMetrics(Protocol):
    """Association events; ``outcome`` comes from a small fixed set (module docstring)."""

    def association(self, outcome: str) -> None: ...


class NullDicomMetrics:
    def association(self, outcome: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a calling AE title may associate from (empty: anywhere), and its senders (Issuers of Patient ID)."""

    networks: tuple[Network, ...]
    issuers: frozenset[str]


@dataclass(slots=True)
class _State:
    host: str
    last_active: float
    handlers: int = 0
    evicting: bool = False
    principal: Principal | None = None


#: Called to record a refused association in the audit trail: (calling AE title, address, reason).
RefusalAudit = Callable[[str, str, str], None]
#: The refusals recorded in the audit trail: who may associate (the capacity refusals are only counted).
AUDITED = frozenset({"calling_ae", "calling_ae_network", "called_ae"})


class AssociationTable:
    """The association hygiene and binding of one SCP. Thread-safe: pynetdicom calls it from its threads."""

    def __init__(
        self,
        *,
        max_per_source: int,
        bindings: Mapping[str, Binding],
        metrics: DicomMetrics | None = None,
        audit: RefusalAudit | None = None,
    ) -> None:
        self.max_per_source = max_per_source
        self.bindings = dict(bindings)
        self.metrics: DicomMetrics = metrics or NullDicomMetrics()
        self.audit = audit
        self._states: weakref.WeakKeyDictionary[Any, _State] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        """pynetdicom event handlers feeding the table."""
        return [
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_PDU_RECV, self._on_pdu),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_REJECTED, self._on_rejected),
        ]

    def principal(self, assoc: Any) -> Principal | None:
        """The binding principal of an association (``None`` when no binding is configured)."""
        state = self._states.get(assoc)
        return state.principal if state is not None else None

    @contextlib.contextmanager
    def busy(self, assoc: Any) -> Any:
        """Mark an association busy while one of our DIMSE handlers runs for it."""
        state = self._states.get(assoc)
        if state is not None:
            state.handlers += 1
        try:
            yield
        finally:
            if state is not None:
                state.handlers -= 1
                state.last_active = time.monotonic()

    # --- pynetdicom handlers (its threads) --------------------------------------------------------

    def _on_open(self, event: Any) -> None:
        host = str(event.address[0]) if event.address else "?"
        self._states[event.assoc] = _State(host, time.monotonic())
        self.metrics.association("opened")

    def _on_pdu(self, event: Any) -> None:
        state = self._states.get(event.assoc)
        if state is not None:
            state.last_active = time.monotonic()

    def _on_aborted(self, event: Any) -> None:
        dul = getattr(event.assoc, "dul", None)
        if dul is not None and dul.idle_timer_expired():
            self.metrics.association("closed_idle_timeout")

    def _on_rejected(self, event: Any) -> None:
        """pynetdicom's own refusals (``allowed_calling_ae_titles``, called AE title, its association limit)."""
        rj = event.assoc.acceptor.primitive
        why = (int(getattr(rj, "result_source", 0) or 0), int(getattr(rj, "diagnostic", 0) or 0))
        reason = _REJECTED.get(why, "other")
        self.metrics.association(f"refused_{reason}")
        state = self._states.get(event.assoc)
        if self.audit is not None and reason in AUDITED and state is not None:
            self.audit(_calling(event.assoc), state.host, reason)

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        state = self._states.get(assoc)
        calling = _calling(assoc)
        if state is None:  # not ours (opened before the table was wired): leave it to pynetdicom
            return
        refusal = self._bind(state, calling) or self._admit(assoc, state)
        if refusal is None:
            return
        reason, rsd = refusal
        self.metrics.association(f"refused_{reason}")
        log.warning("dicom scp: association from %s (%s) refused: %s", state.host, calling or "-", reason)
        if self.audit is not None and reason in AUDITED:
            self.audit(calling, state.host, reason)
        assoc.acse.send_reject(*rsd)
        assoc.kill()

    def _bind(self, state: _State, calling: str) -> tuple[str, tuple[int, int, int]] | None:
        if not self.bindings:
            return None
        binding = self.bindings.get(calling)
        if binding is None:
            return "calling_ae", REJECT_CALLING_AE
        if binding.networks and not address_in(state.host, binding.networks):
            return "calling_ae_network", REJECT_CALLING_AE
        state.principal = Principal(f"ae:{calling}", binding.issuers)
        return None

    def _admit(self, assoc: Any, state: _State) -> tuple[str, tuple[int, int, int]] | None:
        with self._lock:
            others = [a for a in _alive(assoc) if a is not assoc and not self._evicting(a)]
            same = sum(1 for a in others if (s := self._states.get(a)) is not None and s.host == state.host)
            if same >= self.max_per_source:
                return "max_per_source", REJECT_LIMIT
            if len(others) < assoc.ae.maximum_associations:
                return None
            victim = self._idlest(others)
            if victim is None:
                return "max_associations", REJECT_LIMIT
            self._evict(victim)
        victim.join(EVICT_WAIT_S)
        return None

    def _evicting(self, assoc: Any) -> bool:
        state = self._states.get(assoc)
        return state is not None and state.evicting

    def _idlest(self, candidates: list[Any]) -> Any | None:
        idle = []
        for other in candidates:
            state = self._states.get(other)
            if state is not None and state.handlers == 0 and _quiet(other):
                idle.append((state.last_active, other))
        return min(idle, key=lambda pair: pair[0])[1] if idle else None

    def _evict(self, victim: Any) -> None:
        state = self._states[victim]
        state.evicting = True
        log.warning("dicom scp: association from %s closed to make room (idle, the table is full)", state.host)
        self.metrics.association("closed_evicted")
        sock = getattr(victim.dul.socket, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if not victim.is_established:
            # Before its association request, pynetdicom waits on this queue for up to acse_timeout and
            # the closed connection puts nothing there (PS3.8 state machine: no indication in Sta2).
            victim.dul.to_user_queue.put(None)


def _calling(assoc: Any) -> str:
    """The calling AE title of an association request."""
    return str(getattr(assoc.requestor.primitive, "calling_ae_title", "") or "").strip()


def _alive(assoc: Any) -> list[Any]:
    """The acceptor associations of ``assoc``'s server that are still running (pynetdicom's own count)."""
    server = getattr(assoc, "_server", None)
    return list(server.active_associations) if server is not None else []


def _quiet(assoc: Any) -> bool:
    """No DIMSE message being received and none waiting to be served."""
    dimse = getattr(assoc, "dimse", None)
    return dimse is None or (dimse.message is None and dimse.msg_queue.empty())
