"""The refusal log's minute flush (ADR 0030): a part of the gateway's life, or of a listener built alone."""

from __future__ import annotations

from passerelle.connector.periodic import Periodic
from passerelle.observability.refusals import RefusalLog

#: How often the totals of the minutes that are over are written (a total comes at most this late).
FLUSH_INTERVAL_S = 60.0


class RefusalFlush(Periodic):
    """Writes the totals of :attr:`log` each minute; :meth:`stop` writes every total still open."""

    def __init__(self, log: RefusalLog) -> None:
        super().__init__("refusal-log", log.tick, FLUSH_INTERVAL_S)
        self.log = log

    async def stop(self) -> None:
        await super().stop()
        await self.log.flush()
