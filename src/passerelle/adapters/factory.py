"""Builds the configured patient-space client (``space.transport``) for the composition root.

``mhd`` → :class:`passerelle.adapters.mhd.MhdSpace` (PDSm / ITI-65, and the sandbox); ``dmp`` →
:class:`passerelle.adapters.dmp.client.DmpSpace` (the DMP's SOAP services). Either is wrapped so that every
call is counted by transport, operation and outcome (``SpaceMetrics``), and the DMP's individual
transactions (TD0.2, ITI-41, ITI-18, ITI-57) too. An ``observe`` callback, when given, sees the outcome of
every call and probe (``None`` or the exception): the connector's readiness follows configuration errors
with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from passerelle.adapters.mhd import MhdSpace, SpaceSettings, SpaceTransport
from passerelle.adapters.space import DeliveryReceipt, PatientSpace, SpaceProbe, SpaceStatus
from passerelle.errors import RemoteRejectedError, RemoteTransientError, transient_result
from passerelle.mappings.document import Document, Patient

T = TypeVar("T")
Observer = Callable[[BaseException | None], None]


class SpaceMetrics(Protocol):
    """What the factory reports to (``passerelle.observability.metrics.Metrics`` fits)."""

    def space_call(self, transport: str, operation: str, outcome: str) -> None: ...

    def dmp_exchange(self, transaction: str, outcome: str) -> None: ...


class MeteredSpace:
    """A PatientSpace that counts each call of ``inner`` (ok, rejected, transient, credential, tls_untrusted,
    error)."""

    def __init__(
        self, inner: PatientSpace, transport: str, metrics: SpaceMetrics, observe: Observer | None = None
    ) -> None:
        self.inner = inner
        self.transport = transport
        self.metrics = metrics
        self.observe = observe

    def _outcome(self, exc: BaseException | None) -> str:
        if exc is None:
            return "ok"
        if isinstance(exc, RemoteRejectedError):
            return "rejected"
        if isinstance(exc, RemoteTransientError):
            return transient_result(exc)
        return "error"

    async def _metered(self, operation: str, call: Awaitable[T]) -> T:
        try:
            result = await call
        except Exception as exc:
            self.metrics.space_call(self.transport, operation, self._outcome(exc))
            if self.observe is not None:
                self.observe(exc)
            raise
        self.metrics.space_call(self.transport, operation, "ok")
        if self.observe is not None:
            self.observe(None)
        return result

    async def provide(self, doc: Document) -> DeliveryReceipt:
        return await self._metered("provide", self.inner.provide(doc))

    async def delete(self, doc: Document) -> DeliveryReceipt:
        return await self._metered("delete", self.inner.delete(doc))

    async def status(self, patient: Patient, author_id: str) -> SpaceStatus:
        return await self._metered("status", self.inner.status(patient, author_id))

    async def probe(self) -> str:
        """The inner client's :class:`SpaceProbe` check (a client without one answers "not probed")."""
        if not isinstance(self.inner, SpaceProbe):
            return "not probed"
        return await self._metered("probe", self.inner.probe())

    async def aclose(self) -> None:
        await self.inner.aclose()


def build_space(
    settings: SpaceSettings, metrics: SpaceMetrics | None = None, observe: Observer | None = None
) -> PatientSpace:
    """The configured client. Raises ValueError (one problem per line) when it cannot be built."""
    inner: PatientSpace
    if settings.transport is SpaceTransport.DMP:
        from passerelle.adapters.dmp.client import DmpSpace

        inner = DmpSpace(settings, observe=metrics.dmp_exchange if metrics is not None else None)
    else:
        inner = MhdSpace(settings)
    return MeteredSpace(inner, settings.transport.value, metrics, observe) if metrics is not None else inner
