"""Adapters from the listeners' and intakes' metrics ports to the app-owned Prometheus metrics, and the
journal gauges refreshed in the background."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from passerelle.connector.periodic import Periodic
from passerelle.observability.metrics import Metrics
from passerelle.queue.model import State
from passerelle.queue.ports import BrowserJournal


class IntakeMetricsBridge:
    """``Hl7Intake`` metrics → Prometheus."""

    def __init__(self, metrics: Metrics, channel: str = "mllp") -> None:
        self.m = metrics
        self.channel = channel

    def message(self, kind: str, outcome: str, reason: str) -> None:
        if outcome == "accepted":
            self.m.messages_received.labels(self.channel, kind).inc()
        elif outcome in ("duplicate", "conflict"):
            self.m.duplicates.labels(self.channel, outcome).inc()
        else:  # rejected, unavailable
            self.m.intake_rejections.labels(self.channel, reason or outcome).inc()

    def decode_warning(self, warning: str, count: int) -> None:
        self.m.charset_warnings.labels(warning).inc(count)


class MllpMetricsBridge:
    """``MllpServer`` metrics → Prometheus."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def connection_opened(self) -> None:
        self.m.mllp_connections.inc()
        self.m.mllp_connections_total.labels("opened").inc()

    def connection_closed(self, reason: str) -> None:
        self.m.mllp_connections.dec()
        self.m.mllp_connections_total.labels(f"closed_{reason}"[:40]).inc()

    def connection_refused(self, reason: str) -> None:
        self.m.mllp_connections_total.labels(f"refused_{reason}"[:40]).inc()

    def frame_received(self, size: int) -> None:
        self.m.mllp_frames.labels("received").inc()

    def frame_rejected(self, reason: str) -> None:
        self.m.mllp_frames.labels(reason[:40]).inc()

    def junk_bytes(self, count: int) -> None:
        self.m.mllp_junk_bytes.inc(count)

    def reply_sent(self, latency_seconds: float) -> None:
        self.m.ack_latency.observe(latency_seconds)


class DicomMetricsBridge:
    """``DicomScp`` association events → Prometheus."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def association(self, outcome: str) -> None:
        self.m.dicom_associations.labels(outcome[:40]).inc()


async def refresh_journal_gauges(journal: BrowserJournal, metrics: Metrics, now: datetime) -> None:
    counts = await journal.counts()
    for state in State:
        metrics.journal_depth.labels(state.value).set(counts.get(state, 0))
    oldest = await journal.oldest_pending()
    metrics.oldest_undelivered.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)


class JournalGauges(Periodic):
    """Refreshes the journal depth and oldest-pending gauges every ``period_s`` (best effort: a failed
    refresh is counted, the task goes on). Idempotent start/stop; its task is supervised."""

    def __init__(
        self, journal: BrowserJournal, metrics: Metrics, clock: Callable[[], datetime], period_s: float = 5.0
    ) -> None:
        super().__init__("journal-gauges", self._refresh, period_s)
        self.journal = journal
        self.metrics = metrics
        self.clock = clock
        self.period_s = period_s

    async def _refresh(self) -> None:
        try:
            await refresh_journal_gauges(self.journal, self.metrics, self.clock())
        except Exception:  # noqa: BLE001 - gauges are best effort; the failure is counted
            self.metrics.worker_errors.labels("gauges").inc()
