"""The core of the one typed settings object, validated at start-up and passed down.

Groups are small models. Listeners and adapters own their group's model; the composition root
(``passerelle.connector.settings``) mounts them on top of :class:`CoreSettings`.
Secrets are never values here: only the path of a file (or the name of an environment variable) that
holds them.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def _zone_name(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (is the tz database / tzdata installed?)") from exc
    return value


#: An IANA time zone name (``Europe/Paris``) that this machine's tz database knows.
ZoneName = Annotated[str, AfterValidator(_zone_name)]


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


class HttpTlsSettings(_Group):
    """HTTPS on the HTTP listener (TLS 1.2 or later); present means on (docs/security.md)."""

    #: PEM server certificate chain and its private key.
    cert_file: Path
    key_file: Path
    #: File holding the private key's passphrase, when it has one.
    key_password_file: Path | None = None
    #: PEM bundle of the CAs that issue client certificates: with it, clients are asked for one.
    client_ca_file: Path | None = None
    #: With ``client_ca_file``: refuse the handshake without a valid client certificate (mutual TLS).
    #: ``false`` verifies a certificate when one is presented and lets other clients reach the routes
    #: that need no certificate (``/healthz``, ``/readyz``, token-authenticated routes).
    require_client_cert: bool = True
    minimum_version: Literal["1.2", "1.3"] = "1.2"


class HttpRole(StrEnum):
    """What an HTTP identity may do (ADR 0025): ``read`` the browser, console and audit; ``operate`` also
    replays and purges; ``intake`` only posts documents, under its own sender identity."""

    READ = "read"
    OPERATE = "operate"
    INTAKE = "intake"


class HttpIdentity(_Group):
    """One caller of the HTTP listener: a name (audited, never secret), a role, and for ``intake`` the
    sender its documents are journaled under."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
    role: HttpRole
    sender: str = Field("", max_length=200)

    @model_validator(mode="after")
    def _sender_for_intake_only(self) -> HttpIdentity:
        if self.role is HttpRole.INTAKE and not self.sender:
            raise ValueError(f"{self.name}: an intake identity needs a sender")
        if self.role is not HttpRole.INTAKE and self.sender:
            raise ValueError(f"{self.name}: only an intake identity has a sender")
        return self


class HttpToken(HttpIdentity):
    """A bearer token read from ``token_file`` (at start; an empty or unreadable file is a configuration error)."""

    token_file: Path


class HttpClientCertificate(HttpIdentity):
    """A client certificate (mutual TLS) by subject: a CN (``lis.example.fr``) or a full DN in RFC 4514
    order (``CN=lis.example.fr,O=Labo,C=FR``), verified by the listener's client CA."""

    subject: str = Field(min_length=1)


class LoginThrottleSettings(_Group):
    """Failed token attempts per client address (ADR 0031): past ``failures`` within ``window_s``, the
    console's login and the API's bearer-token requests from that address answer 429 until the oldest
    of those failures is ``window_s`` old."""

    enabled: bool = True
    failures: int = Field(5, ge=1, le=1000)
    window_s: float = Field(300.0, gt=0, le=86400)
    #: Most addresses remembered at once; past it the one that failed the longest ago is forgotten.
    max_addresses: int = Field(10_000, ge=1, le=1_000_000)


class HttpSettings(_Group):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: Bearer token of the ``operate`` role, named ``admin`` (the tokens below are the general form).
    admin_token_file: Path | None = None
    #: HTTPS (unset: plain HTTP, allowed on a loopback address only unless the next setting says so).
    tls: HttpTlsSettings | None = None
    #: Let the listener serve plain HTTP on a non-loopback address (a WARNING at every start).
    allow_plaintext_on_network: bool = False
    #: Serve ``/docs``, ``/redoc`` and ``/openapi.json`` (assets shipped in the package, no CDN).
    api_docs: bool = False
    #: Bearer tokens, each with a name and a role. Without any, every route but the health checks (and
    #: /metrics, unless ``metrics_auth``) answers 401: the HTTP surface fails closed.
    tokens: list[HttpToken] = Field(default_factory=list)
    #: Client certificate subjects taken as identities (mutual TLS), instead of or beside tokens.
    client_certificates: list[HttpClientCertificate] = Field(default_factory=list)
    #: /metrics needs a ``read`` identity too (Prometheus: ``authorization`` in the scrape config).
    metrics_auth: bool = False
    #: Console sessions end after this long without a request, and in any case after ``session_max_s``.
    session_idle_s: float = Field(1800.0, gt=0)
    session_max_s: float = Field(12 * 3600.0, gt=0)
    #: Longest time to receive a request body read before any route (the JSON API's, the console's forms):
    #: past it, 408 and the connection closed (``POST /v1/documents`` has ``cda.body_timeout_s``).
    body_timeout_s: float = Field(30.0, gt=0, le=3600)
    #: Time zone of the times the console shows and of its date filters (IANA name).
    console_timezone: ZoneName = "Europe/Paris"
    #: Failed token attempts (console login, API bearer token) per client address (ADR 0031).
    login_throttle: LoginThrottleSettings = Field(default_factory=LoginThrottleSettings)

    @model_validator(mode="after")
    def _names_unique(self) -> HttpSettings:
        names = [i.name for i in (*self.tokens, *self.client_certificates)]
        if self.admin_token_file is not None:
            names.append("admin")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"http identity names must be unique: {', '.join(twice)}")
        return self


class ReadinessSettings(_Group):
    """What ``/readyz`` checks besides the supervisor (docs/runbook.md, "PasserelleNotReady")."""

    #: Free space under ``data_dir`` below which the gateway reports not ready (MiB).
    min_free_mb: int = Field(512, ge=0)
    #: How often the journal write probe and the free-space check run.
    check_interval_s: float = Field(15.0, gt=0)
    #: Read the patient space's capability statement (MHD) or make a TD0.2 probe (DMP) at start and
    #: then this often; 0 probes at start only.
    space_probe_interval_s: float = Field(300.0, ge=0)
    #: Probe the patient space at all (off: only deliveries show a misconfigured space).
    space_probe: bool = True


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
    readiness: ReadinessSettings = Field(default_factory=ReadinessSettings)

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
