"""The app-owned Prometheus registry and every metric Passerelle exports.

Labels are low-cardinality enums (channel, kind, code, outcome, reason): never identifiers, never patient
data. One :class:`Metrics` per application instance, so two apps in one test process do not collide.

An app-owned registry (``Metrics()``) also carries the process and Python runtime metrics of the standard
client collectors: ``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_open_fds`` / ``process_max_fds``, ``process_start_time_seconds`` (Linux ``/proc``),
``python_info`` and ``python_gc_*``. A registry passed in is left as it is (its owner decides).
"""

from __future__ import annotations

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


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        if registry is None:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        # intake
        self.messages_received = Counter(
            "passerelle_messages_received_total",
            "Inbound messages journaled, by channel and kind",
            ["channel", "kind"],
            registry=r,
        )
        self.intake_rejections = Counter(
            "passerelle_intake_rejections_total",
            "Inbound messages refused at intake, by channel and reason",
            ["channel", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "passerelle_intake_duplicates_total",
            "Resent messages recognised at intake",
            ["channel", "result"],
            registry=r,
        )
        self.acks = Counter("passerelle_acks_total", "HL7 acknowledgements sent, by MSA-1 code", ["code"], registry=r)
        self.ack_latency = Histogram(
            "passerelle_ack_latency_seconds", "Time from end of frame to ACK written", buckets=_ACK_BUCKETS, registry=r
        )
        self.charset_warnings = Counter(
            "passerelle_charset_warnings_total", "Character-set anomalies seen at intake", ["kind"], registry=r
        )
        # MLLP transport
        self.mllp_connections = Gauge("passerelle_mllp_open_connections", "Open MLLP connections", registry=r)
        self.mllp_connections_total = Counter(
            "passerelle_mllp_connections_total", "MLLP connections, by outcome", ["outcome"], registry=r
        )
        self.mllp_frames = Counter(
            "passerelle_mllp_frames_total", "MLLP frames read, by result", ["result"], registry=r
        )
        self.mllp_junk_bytes = Counter(
            "passerelle_mllp_junk_bytes_total", "Bytes discarded outside MLLP frames", registry=r
        )
        # DICOM transport
        self.dicom_associations = Counter(
            "passerelle_dicom_associations_total", "DICOM SCP associations, by outcome", ["outcome"], registry=r
        )
        # delivery
        self.documents = Counter(
            "passerelle_documents_total", "Documents settled, by outcome and reason", ["outcome", "reason"], registry=r
        )
        self.delivery_attempts = Counter(
            "passerelle_delivery_attempts_total", "Calls to the patient space, by result", ["result"], registry=r
        )
        self.retries = Counter(
            "passerelle_delivery_retries_total", "Transient failures scheduled for retry", ["reason"], registry=r
        )
        self.delivery_latency = Histogram(
            "passerelle_delivery_latency_seconds", "Time from receipt to delivery", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.consent_decisions = Counter(
            "passerelle_consent_decisions_total",
            "Consent decisions, by outcome and reason",
            ["outcome", "reason"],
            registry=r,
        )
        self.business_acks = Counter(
            "passerelle_business_acks_total", "ZAM business acknowledgements sent to senders", ["result"], registry=r
        )
        self.journal_depth = Gauge("passerelle_journal_messages", "Journal rows by state", ["state"], registry=r)
        self.oldest_undelivered = Gauge(
            "passerelle_oldest_undelivered_age_seconds",
            "Age of the oldest message not yet settled (0 if none)",
            registry=r,
        )
        self.worker_errors = Counter(
            "passerelle_worker_errors_total", "Unexpected errors in the dispatch worker", ["stage"], registry=r
        )
        # HTTP listener: refusals by surface (api | console) and reason (auth.REASONS): no identity as label
        self.http_auth_refusals = Counter(
            "passerelle_http_auth_refusals_total",
            "HTTP requests refused by authentication, by surface and reason",
            ["surface", "reason"],
            registry=r,
        )
        # patient-space transports (mhd | dmp)
        self.space_calls = Counter(
            "passerelle_space_calls_total",
            "Calls to the patient space, by transport, operation (provide, delete, status) and outcome",
            ["transport", "operation", "outcome"],
            registry=r,
        )
        self.dmp_exchanges = Counter(
            "passerelle_dmp_exchanges_total",
            "DMP SOAP exchanges, by transaction (TD0.2, ITI-41, ITI-18, ITI-57) and outcome",
            ["transaction", "outcome"],
            registry=r,
        )

        # readiness (ADR 0023)
        self.not_ready = Gauge(
            "passerelle_not_ready",
            "1 while /readyz answers 503 because of this check (supervisor, journal, disk, space)",
            ["check"],
            registry=r,
        )
        self.disk_free = Gauge(
            "passerelle_data_dir_free_bytes",
            "Free disk space under the data directory (smallest if several)",
            registry=r,
        )
        self.space_configuration_errors = Counter(
            "passerelle_space_configuration_errors_total",
            "Answers of the patient space showing a configuration error, by kind (endpoint, credentials)",
            ["kind"],
            registry=r,
        )
        # retention (docs/journal.md)
        self.retention_runs = Counter(
            "passerelle_retention_runs_total", "Retention passes, by outcome (ok, failed)", ["outcome"], registry=r
        )
        self.retention_purged = Counter(
            "passerelle_retention_purged_total",
            "What retention purged: payloads, rejected_payloads, records (journal rows), audit_records",
            ["what"],
            registry=r,
        )
        self.retention_last_run = Gauge(
            "passerelle_retention_last_success_timestamp_seconds", "When the last retention pass ended well", registry=r
        )

    def space_call(self, transport: str, operation: str, outcome: str) -> None:
        self.space_calls.labels(transport, operation, outcome).inc()

    def http_auth_refusal(self, surface: str, reason: str) -> None:
        self.http_auth_refusals.labels(surface, reason).inc()

    def dmp_exchange(self, transaction: str, outcome: str) -> None:
        self.dmp_exchanges.labels(transaction, outcome).inc()
