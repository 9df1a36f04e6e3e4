"""Business acknowledgements (``ZAM^Z01^ZAM_Z01``, CI-SIS volet §3.6) sent back to senders that asked
for one (MetaDMPMSS ``ACK_RECEPTION=Y``), once their document is delivered or definitively refused.

Each ZAM goes out on a new MLLP connection to the sender's configured endpoint, with bounded retries,
in a background task started once the row's settlement is durable; that it was scheduled is written
to the message's journey with the settlement, its outcome later (events ``zam``), and counted.
Known limit: a ZAM not yet sent when the gateway stops is not re-sent after a restart (the journey
shows it was scheduled and never confirmed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from passerelle.adapters.mllp_client import MllpClient, RetryPolicy
from passerelle.config.settings import BusinessAckSettings
from passerelle.connector.intake.hl7 import Hl7IntakeSettings
from passerelle.errors import PasserelleError
from passerelle.mappings.document import Document
from passerelle.mappings.hl7v2.ack import build_business_ack, encode_reply
from passerelle.mappings.hl7v2.header import read_header
from passerelle.observability.metrics import Metrics
from passerelle.queue.model import Event, Row
from passerelle.queue.ports import DispatchJournal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZamNotice:
    """A business acknowledgement decided for one settled row: ``events`` go into the row's journey
    with its settlement; :meth:`send` starts sending once that settlement is durable (so a ZAM never
    announces an outcome the journal could still lose)."""

    events: tuple[Event, ...]
    send: Callable[[], None]


@dataclass(eq=False)
class BusinessAckNotifier:
    """The worker's ``Notifier``. :meth:`aclose` waits (bounded) for ZAMs in flight."""

    journal: DispatchJournal
    settings: BusinessAckSettings
    hl7: Hl7IntakeSettings
    metrics: Metrics
    clock: Callable[[], datetime]
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def document_settled(self, row: Row, doc: Document, delivered: bool, code: str, label: str) -> ZamNotice | None:
        """The ZAM^Z01 for a row settled delivered (``delivered``) or definitively refused (``code``,
        ``label``), or None when its sender gets none (not an HL7 document message over MLLP)."""
        if row.channel != "mllp" or row.kind not in ("oru", "mdm", "lab"):
            return None
        endpoint = self.settings.endpoint_for(row.sender)
        if endpoint is None:
            self.metrics.business_acks.labels("no_endpoint").inc()
            return ZamNotice((Event(row.id, self.clock(), "zam", "requested but no endpoint configured"),), _nothing)
        msg = self.hl7.decode(row.raw, row.sender)
        text = build_business_ack(
            read_header(msg),
            now=self.clock(),
            control_id=f"ZAM{row.id}",
            success=delivered,
            dmp_error_code="" if delivered else code,
            dmp_error_label="" if delivered else label[:80],
        )
        payload = encode_reply(text, msg.codec)
        detail = f"scheduled ({'Y' if delivered else 'N'}) to {endpoint.host}:{endpoint.port}"

        def send() -> None:
            task = asyncio.create_task(self._send(row.id, payload, endpoint.host, endpoint.port), name=f"zam-{row.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return ZamNotice((Event(row.id, self.clock(), "zam", detail),), send)

    async def _send(self, row_id: int, payload: bytes, host: str, port: int) -> None:
        client = MllpClient(
            host,
            port,
            connect_timeout=self.settings.connect_timeout_s,
            ack_timeout=self.settings.ack_timeout_s,
            retry=RetryPolicy(attempts=self.settings.attempts, deadline=self.settings.deadline_s),
        )
        try:
            result = await client.send(payload)
            outcome, detail = ("sent", f"acknowledged {result.code}")
        except PasserelleError as exc:
            outcome, detail = ("failed", f"not acknowledged: {exc.reason}")
        self.metrics.business_acks.labels(outcome).inc()
        log.info("business ack", extra={"row_id": row_id, "state": outcome})
        with contextlib.suppress(PasserelleError):
            await self.journal.add_events([Event(row_id, self.clock(), "zam", detail)])

    async def aclose(self, timeout: float = 5.0) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _nothing() -> None:
    return None
