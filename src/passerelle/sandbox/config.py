"""Settings of the sandbox patient space (its own small model: the sandbox imports no other area)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator


class SandboxConfig(BaseModel):
    """How one sandbox instance runs.

    ``data_dir`` holds ``sandbox.sqlite3`` (created on start). ``require_token_file`` switches on bearer
    authentication of the FHIR endpoints (the file holds the token); ``admin_token_file`` does the same
    for ``/admin/*`` and the HTML pages. Unknown patients get an ``ACTIF`` space on first contact when
    ``auto_create_patients`` is on, and are ``INEXISTANT`` otherwise.

    DMP SOAP services (docs/sandbox.md): ``dmp_ca_file`` is the PEM test CA that VIHF and XAdES
    signing certificates must chain to (without it every signed request is refused
    ``DMPInvalidCertificate``); ``dmp_answer`` packages ITI-41 answers ``multipart`` (like Apache
    CXF) or ``plain``; ``dmp_lenient`` accepts LF-only MIME framing, base64 parts and schema order
    slips. ``tls_cert_file`` + ``tls_key_file`` serve HTTPS (TLS 1.2+); with ``tls_client_ca_file``
    a client certificate issued by that CA is required.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path
    auto_create_patients: bool = True
    require_token_file: Path | None = None
    admin_token_file: Path | None = None
    dmp_ca_file: Path | None = None
    dmp_answer: Literal["multipart", "plain"] = "multipart"
    dmp_lenient: bool = False
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> SandboxConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "sandbox.sqlite3"
