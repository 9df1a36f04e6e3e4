"""The core of the one typed settings object, validated at start-up and passed down.

Groups are small models. Listeners and adapters own their group's model; the composition root
(``passerelle.connector.settings``) mounts them on top of :class:`CoreSettings`.
Secrets are never values here: only the path of a file (or the name of an environment variable) that
holds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JournalSettings(_Group):
    backend: Literal["sqlite", "postgres"] = "sqlite"
    #: SQLite file; default ``<data_dir>/journal.sqlite3``.
    path: Path | None = None
    #: PostgreSQL connection string read from this file, or from the environment variable named below.
    dsn_file: Path | None = None
    dsn_env: str | None = None
    #: PostgreSQL schema holding the journal and audit tables (created at start when missing).
    schema_: str = Field("passerelle", alias="schema", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    #: Largest number of messages one durable commit may carry.
    max_batch: int = Field(512, ge=1, le=10_000)


class RetentionSettings(_Group):
    """What is purged after how long (docs/journal.md). Pending and dead messages are never purged."""

    #: Settled messages (delivered, refused) keep their payload this long after settling.
    payload_days: int = Field(30, ge=1)
    #: Rejected messages keep their first 64 KiB (with size and SHA-256) this long.
    rejected_days: int = Field(7, ge=1)
    #: Journal rows, their events and dedup keys, and audit records are deleted after this long (audit
    #: records never before 400 days: that floor is in the database).
    record_days: int = Field(400, ge=1)
    #: Rows per purge transaction: small, so intake never waits long.
    batch_size: int = Field(500, ge=1, le=10_000)
    #: How often the gateway runs a purge pass in the background.
    interval_s: float = Field(3600.0, gt=0)

    @model_validator(mode="after")
    def _rows_outlive_payloads(self) -> RetentionSettings:
        if self.record_days < max(self.payload_days, self.rejected_days):
            raise ValueError("retention.record_days must be at least payload_days and rejected_days")
        return self


class HttpSettings(_Group):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: Bearer token protecting the admin API (replay, patient map); file path. Unset: admin API read-only.
    admin_token_file: Path | None = None


class RetrySettings(_Group):
    """Delivery retry policy for transient failures (persisted per row, survives restarts)."""

    initial_delay_s: float = Field(2.0, gt=0)
    multiplier: float = Field(2.0, ge=1)
    max_delay_s: float = Field(600.0, gt=0)
    jitter: float = Field(0.2, ge=0, le=1)
    #: After this long since the first attempt a document goes to the dead letters.
    deadline_s: float = Field(72 * 3600, gt=0)


class WorkerSettings(_Group):
    """The dispatch pipeline (docs/adr/0026-pipelined-dispatch.md)."""

    #: Documents in flight at once (at most one per patient): a lane is claimed as soon as one settles.
    concurrency: int = Field(128, ge=1, le=1024)
    lease_s: float = Field(120.0, gt=0)
    poll_interval_s: float = Field(0.2, gt=0)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    #: Fallback re-check delay of a parked document when the policy gives none (see consent rules).
    park_recheck_s: float = Field(900.0, gt=0)
    #: How often the worker tells the journal it is alive; a worker silent for ``dead_after_s`` is gone
    #: and its claims come back to the others before their lease ends (PostgreSQL: within about
    #: ``dead_after_s + heartbeat_s``; SQLite: at the next start).
    heartbeat_s: float = Field(2.0, gt=0)
    dead_after_s: float = Field(7.5, gt=0)

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> WorkerSettings:
        if self.dead_after_s < 2 * self.heartbeat_s:
            raise ValueError("dead_after_s must be at least twice heartbeat_s")
        return self


class ConsentSettings(_Group):
    #: Site visibility rules and parking horizon (YAML, see config/visibility-rules.yaml); unset: defaults.
    rules_file: Path | None = None
    #: How long a space status lookup (TD0.2 equivalent) is reused.
    status_ttl_s: float = Field(300.0, ge=0)


class AckEndpoint(_Group):
    host: str
    port: int = Field(ge=1, le=65535)


class BusinessAckSettings(_Group):
    """Where ``ZAM^Z01`` business acknowledgements go, per sender (``MSH-3^MSH-4`` or ``MSH-3``)."""

    senders: dict[str, AckEndpoint] = Field(default_factory=dict)
    connect_timeout_s: float = Field(10.0, gt=0)
    ack_timeout_s: float = Field(30.0, gt=0)
    attempts: int = Field(5, ge=1, le=50)
    deadline_s: float = Field(300.0, gt=0)

    def endpoint_for(self, sender: str) -> AckEndpoint | None:
        return self.senders.get(sender) or self.senders.get(sender.split("^", 1)[0])


class CoreSettings(_Group):
    """The groups every deployment has. The full settings (``passerelle.connector.settings.Settings``)
    add the groups owned by the listeners and adapters; this module imports no other area."""

    #: ``test`` accepts the test/demo INS authorities (1.2.250.1.213.1.4.10/.11); ``production`` does not.
    environment: Literal["test", "production"] = "test"
    data_dir: Path = Path("var")
    #: OID root under which Passerelle mints identifiers (submission sets, generated documents).
    oid_root: str = "1.2.250.1.999.1"
    journal: JournalSettings = Field(default_factory=JournalSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    consent: ConsentSettings = Field(default_factory=ConsentSettings)
    business_ack: BusinessAckSettings = Field(default_factory=BusinessAckSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @property
    def test_environment(self) -> bool:
        return self.environment == "test"

    @property
    def journal_path(self) -> Path:
        return self.journal.path or self.data_dir / "journal.sqlite3"

    @model_validator(mode="after")
    def _check(self) -> CoreSettings:
        if self.journal.backend == "postgres" and not (self.journal.dsn_file or self.journal.dsn_env):
            raise ValueError("journal.backend=postgres needs journal.dsn_file or journal.dsn_env")
        return self
