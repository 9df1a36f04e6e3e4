"""Settings of the sandbox patient space (its own small model: the sandbox imports no other area)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class SandboxConfig(BaseModel):
    """How one sandbox instance runs.

    ``data_dir`` holds ``sandbox.sqlite3`` (created on start). ``require_token_file`` switches on bearer
    authentication of the FHIR endpoints (the file holds the token); ``admin_token_file`` does the same
    for ``/admin/*`` and the HTML pages. Unknown patients get an ``ACTIF`` space on first contact when
    ``auto_create_patients`` is on, and are ``INEXISTANT`` otherwise.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path
    auto_create_patients: bool = True
    require_token_file: Path | None = None
    admin_token_file: Path | None = None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "sandbox.sqlite3"
