"""The app-owned Prometheus registry and every metric Passerelle exports.

Labels are low-cardinality enums (channel, kind, code, outcome, reason): never identifiers, never patient
data. One :class:`Metrics` per application instance, so two apps in one test process do not collide.

An app-owned registry (``Metrics()``) also carries the process and Python runtime metrics of the standard
client collectors: ``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_open_fds`` / ``process_max_fds``, ``process_start_time_seconds`` (Linux ``/proc``),
``python_info`` and ``python_gc_*``. A registry passed in is left as it is (its owner decides).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
_ACK_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


class _Constructors:
    """Metric constructors bound to one registry (``labels``: the label names, in order)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, labels, registry=self.registry)

    def histogram(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, documentation, buckets=buckets, registry=self.registry)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        if registry is None:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        new = _Constructors(r)
        # intake
        self.messages_received = new.counter(
            "passerelle_messages_received_total", "Inbound messages journaled, by channel and kind", ["channel", "kind"]
        )
        self.intake_rejections = new.counter(
            "passerelle_intake_rejections_total",
            "Inbound messages refused at intake, by channel and reason",
            ["channel", "reason"],
        )
        self.duplicates = new.counter(
            "passerelle_intake_duplicates_total", "Resent messages recognised at intake", ["channel", "result"]
        )
        self.acks = new.counter("passerelle_acks_total", "HL7 acknowledgements sent, by MSA-1 code", ["code"])
        self.ack_latency = new.histogram(
            "passerelle_ack_latency_seconds", "Time from end of frame to ACK written", _ACK_BUCKETS
        )
        self.charset_warnings = new.counter(
            "passerelle_charset_warnings_total", "Character-set anomalies seen at intake", ["kind"]
        )
        # MLLP transport
        self.mllp_connections = new.gauge("passerelle_mllp_open_connections", "Open MLLP connections")
        self.mllp_connections_total = new.counter(
            "passerelle_mllp_connections_total", "MLLP connections, by outcome", ["outcome"]
        )
        self.mllp_frames = new.counter("passerelle_mllp_frames_total", "MLLP frames read, by result", ["result"])
        self.mllp_junk_bytes = new.counter("passerelle_mllp_junk_bytes_total", "Bytes discarded outside MLLP frames")
        # DICOM transport
        self.dicom_associations = new.counter(
            "passerelle_dicom_associations_total", "DICOM SCP associations, by outcome", ["outcome"]
        )
        # delivery
        self.documents = new.counter(
            "passerelle_documents_total", "Documents settled, by outcome and reason", ["outcome", "reason"]
        )
        self.delivery_attempts = new.counter(
            "passerelle_delivery_attempts_total", "Calls to the patient space, by result", ["result"]
        )
        self.retries = new.counter(
            "passerelle_delivery_retries_total", "Transient failures scheduled for retry", ["reason"]
        )
        self.delivery_latency = new.histogram(
            "passerelle_delivery_latency_seconds", "Time from receipt to delivery", _LATENCY_BUCKETS
        )
        self.consent_decisions = new.counter(
            "passerelle_consent_decisions_total", "Consent decisions, by outcome and reason", ["outcome", "reason"]
        )
        self.business_acks = new.counter(
            "passerelle_business_acks_total", "ZAM business acknowledgements sent to senders", ["result"]
        )
        self.journal_depth = new.gauge("passerelle_journal_messages", "Journal rows by state", ["state"])
        self.oldest_undelivered = new.gauge(
            "passerelle_oldest_undelivered_age_seconds", "Age of the oldest message not yet settled (0 if none)"
        )
        self.worker_errors = new.counter(
            "passerelle_worker_errors_total", "Unexpected errors in the dispatch worker", ["stage"]
        )
        # HTTP listener: refusals by surface (api | console) and reason (auth.REASONS): no identity as label
        self.http_auth_refusals = new.counter(
            "passerelle_http_auth_refusals_total",
            "HTTP requests refused by authentication, by surface and reason",
            ["surface", "reason"],
        )
        # HTTP listener: bodies refused before any route, by surface (api | console) and reason
        self.http_body_refusals = new.counter(
            "passerelle_http_body_refusals_total",
            "HTTP request bodies refused before any route, by surface and reason (too_large, body_timeout)",
            ["surface", "reason"],
        )
        # patient-space transports (mhd | dmp)
        self.space_calls = new.counter(
            "passerelle_space_calls_total",
            "Calls to the patient space, by transport, operation (provide, delete, status) and outcome",
            ["transport", "operation", "outcome"],
        )
        self.dmp_exchanges = new.counter(
            "passerelle_dmp_exchanges_total",
            "DMP SOAP exchanges, by transaction (TD0.2, ITI-41, ITI-18, ITI-57) and outcome",
            ["transaction", "outcome"],
        )

        # readiness (ADR 0023)
        self.not_ready = new.gauge(
            "passerelle_not_ready",
            "1 while /readyz answers 503 because of this check (supervisor, journal, disk, space)",
            ["check"],
        )
        self.disk_free = new.gauge(
            "passerelle_data_dir_free_bytes", "Free disk space under the data directory (smallest if several)"
        )
        self.space_configuration_errors = new.counter(
            "passerelle_space_configuration_errors_total",
            "Answers of the patient space showing a configuration error, by kind (endpoint, credentials, tls_untrusted)",
            ["kind"],
        )
        # retention (docs/journal.md)
        self.retention_runs = new.counter(
            "passerelle_retention_runs_total", "Retention passes, by outcome (ok, failed)", ["outcome"]
        )
        self.retention_purged = new.counter(
            "passerelle_retention_purged_total",
            "What retention purged: payloads, rejected_payloads, records (journal rows), audit_records",
            ["what"],
        )
        self.retention_last_run = new.gauge(
            "passerelle_retention_last_success_timestamp_seconds", "When the last retention pass ended well"
        )

    def space_call(self, transport: str, operation: str, outcome: str) -> None:
        self.space_calls.labels(transport, operation, outcome).inc()

    def http_auth_refusal(self, surface: str, reason: str) -> None:
        self.http_auth_refusals.labels(surface, reason).inc()

    def http_body_refusal(self, surface: str, reason: str) -> None:
        self.http_body_refusals.labels(surface, reason).inc()

    def dmp_exchange(self, transaction: str, outcome: str) -> None:
        self.dmp_exchanges.labels(transaction, outcome).inc()
