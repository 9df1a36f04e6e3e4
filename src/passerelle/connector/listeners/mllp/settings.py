"""Settings of the MLLP listener (mounted as ``Settings.mllp`` by the composition root).

Every limit is explicit; hitting one is loud (a reply or a logged close, and a metric).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator, model_validator

from passerelle.connector.intake.binding import valid_pattern
from passerelle.connector.listeners.mllp.framing import FramingLimits

#: The framer's own defaults are the listener's: one place states them.
_FRAMING = FramingLimits()


def fingerprint_key(value: str) -> str:
    """``value`` as a SHA-256 fingerprint (64 lower-case hex digits, colons dropped), or "" when it is not one."""
    fp = value.replace(":", "").strip().lower()
    return fp if len(fp) == 64 and all(c in "0123456789abcdef" for c in fp) else ""


class MllpTlsSettings(BaseModel):
    """TLS / mutual TLS on the MLLP listener (IHE ATNA secure node; docs/mllp.md, "TLS and mutual TLS")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Serve MLLP over TLS (plain TCP is refused when on).")
    cert_file: Path | None = Field(None, description="PEM server certificate chain.")
    key_file: Path | None = Field(None, description="PEM private key of the server certificate.")
    key_password_file: Path | None = Field(
        None, description="File holding the private key passphrase (secrets come from files only)."
    )
    client_ca_file: Path | None = Field(
        None, description="PEM bundle of CAs that issue partner client certificates (mutual TLS)."
    )
    require_client_cert: bool = Field(
        False, description="Mutual TLS: a client certificate issued by client_ca_file is required."
    )
    allowed_client_subjects: list[str] = Field(
        default_factory=list,
        description="Accepted client certificates by subject: a CN ('lis.example.fr') or a full DN in "
        "RFC 4514 order ('CN=lis.example.fr,O=Labo,C=FR').",
    )
    allowed_client_fingerprints: list[str] = Field(
        default_factory=list,
        description="Accepted client certificates by SHA-256 fingerprint of the DER (hex, colons optional).",
    )
    allow_any_client_cert_from_ca: bool = Field(
        False,
        description="Accept any certificate chained to client_ca_file. Discouraged (ATNA: authorise "
        "partners by pinned certificate or subject); required explicitly when no allow-list is given.",
    )
    bindings: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Sender binding (mutual TLS): client certificate (CN, full DN or SHA-256 fingerprint, as "
        "in the allow-lists) -> the senders it may speak for, as 'MSH-3.1^MSH-4.1' ('*' = any value of one "
        "component). When set, a message naming another sender gets AR (ERR-2 MSH^1^3 or MSH^1^4), is "
        "audited and counted, and never enters the duplicate register; a certificate with no entry may "
        "send nothing. Empty = no binding.",
    )
    minimum_version: Literal["1.2", "1.3"] = Field("1.2", description="Lowest TLS version accepted.")
    handshake_timeout: float = Field(10.0, gt=0, description="Seconds allowed for the TLS handshake.")

    @field_validator("allowed_client_fingerprints")
    @classmethod
    def _normalise_fingerprints(cls, values: list[str]) -> list[str]:
        out = [fingerprint_key(value) for value in values]
        if not all(out):
            raise ValueError("a fingerprint is the SHA-256 of the DER certificate in hex (64 digits)")
        return out

    @field_validator("bindings")
    @classmethod
    def _senders(cls, bindings: dict[str, list[str]]) -> dict[str, list[str]]:
        for subject, senders in bindings.items():
            if not subject.strip():
                raise ValueError("a binding names a client certificate (CN, DN or fingerprint)")
            bad = [s for s in senders if not valid_pattern(s, 2)]
            if bad:
                raise ValueError(f"binding of {subject!r}: senders are 'MSH-3.1^MSH-4.1' (or '*'), not {bad[0]!r}")
        return bindings

    @model_validator(mode="after")
    def _coherent(self) -> MllpTlsSettings:
        if self.bindings and not (self.enabled and self.require_client_cert):
            raise ValueError("mllp.tls.bindings needs mutual TLS (enabled and require_client_cert: true)")
        if not self.enabled:
            return self
        if self.cert_file is None or self.key_file is None:
            raise ValueError("mllp.tls.enabled needs cert_file and key_file")
        if self.require_client_cert:
            if self.client_ca_file is None:
                raise ValueError("mllp.tls.require_client_cert needs client_ca_file")
            pinned = self.allowed_client_subjects or self.allowed_client_fingerprints
            if not pinned and not self.allow_any_client_cert_from_ca:
                raise ValueError(
                    "mutual TLS needs allowed_client_subjects or allowed_client_fingerprints "
                    "(or allow_any_client_cert_from_ca: true, on purpose)"
                )
        return self


class MllpSettings(BaseModel):
    """The MLLP listener: address, framing limits, timeouts, connection caps, access control."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Start the MLLP listener.")
    host: str = Field("127.0.0.1", description="Address to listen on ('0.0.0.0' for every interface).")
    port: int = Field(2575, ge=0, le=65535, description="TCP port (0 = any free port, for tests).")
    allow_plaintext_on_network: bool = Field(
        False,
        description="Let the listener serve plain MLLP (no tls) on a non-loopback address; a WARNING is "
        "logged at every start. Without it such a configuration is refused (docs/security.md).",
    )

    max_frame_bytes: int = Field(
        _FRAMING.max_frame_bytes,
        ge=1024,
        description="Largest payload accepted in one frame. Enforced while reading; a larger frame is "
        "read and discarded to its end block, then rejected: AE with ERR-3 207, MSA-2 = MSH-10 when its "
        "first segment is readable (docs/bad-input.md).",
    )
    max_junk_bytes: int = Field(
        _FRAMING.max_junk_bytes,
        ge=0,
        description="Bytes outside any frame tolerated since the last good frame before the connection "
        "is closed (NUL/CR/LF between frames are common; an HTTP or TLS client on this port is not).",
    )
    accept_fs_without_cr: bool = Field(
        _FRAMING.accept_fs_without_cr,
        description="Accept a frame ending with FS alone (some senders omit the final CR).",
    )
    read_chunk_bytes: int = Field(_FRAMING.read_chunk_bytes, ge=1024, description="Size of each socket read.")

    frame_timeout: float = Field(
        30.0, gt=0, description="Seconds from a frame's VT to its end block (slowloris guard)."
    )
    idle_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds without a new frame after which the connection is closed (never while a "
        "frame waits for its reply). Short on purpose: idle sockets must not hold the connection table; "
        "a sender reconnects when it has something to send.",
    )
    write_timeout: float = Field(30.0, gt=0, description="Seconds to write a reply to a peer that does not read.")
    handler_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds the intake may take for one batch; past it the connection is closed "
        "without any reply (the sender resends; intake dedup absorbs a late commit).",
    )

    max_connections: int = Field(
        200,
        ge=1,
        description="Open connections on this listener. When full, the connection idle the longest is "
        "closed to admit a new one (one sending a frame or waiting for its reply never is).",
    )
    max_connections_per_source: int = Field(20, ge=1, description="Open connections from one source address.")
    allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Source networks allowed to connect (e.g. ['10.1.0.0/16']). Empty = any source.",
    )

    max_pipelined_frames: int = Field(
        64,
        ge=1,
        description="Frames read ahead of their replies per connection; the same number is the "
        "largest batch handed to the intake in one durable commit.",
    )

    max_pipelined_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="Payload bytes read ahead of their replies per connection before reading pauses "
        "(memory per connection stays near this + max_frame_bytes + read_chunk_bytes).",
    )

    tcp_keepalive: bool = Field(True, description="TCP keepalive, to detect half-open peers.")
    keepalive_idle: int = Field(180, ge=1, description="Seconds idle before the first keepalive probe.")
    keepalive_interval: int = Field(60, ge=1, description="Seconds between keepalive probes.")
    keepalive_count: int = Field(5, ge=1, description="Unanswered probes before the kernel drops the peer.")

    drain_timeout: float = Field(10.0, ge=0, description="On stop, seconds to let frames already received be answered.")

    tls: MllpTlsSettings = Field(default_factory=MllpTlsSettings)
