"""Adapters from the listeners' small metrics Protocols to the app-owned Prometheus metrics."""

from __future__ import annotations

from datetime import datetime

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


async def refresh_journal_gauges(journal: BrowserJournal, metrics: Metrics, now: datetime) -> None:
    counts = await journal.counts()
    for state in State:
        metrics.journal_depth.labels(state.value).set(counts.get(state, 0))
    oldest = await journal.oldest_pending()
    metrics.oldest_undelivered.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
