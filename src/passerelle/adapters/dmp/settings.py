"""Settings of the DMP SOAP transport (``space.dmp``) and their deep validation.

With ``space.transport: dmp``, ``space.url`` is the base of the DMP services (``<base>/patients``,
``<base>/repository``, ``<base>/registry``); mutual TLS 1.2 uses the structure's AUTH_CLI certificate from
``space.client_cert_file`` / ``space.client_key_file`` and trusts ``space.ca_file``; the VIHF and the
XAdES signature of each submission set use the structure's SIGN certificate configured here. See
docs/dmp-transport.md.

The pydantic model checks formats; :func:`passerelle.adapters.dmp.credentials.check_space` opens the files and checks what only they can
tell (they parse, each key matches its certificate, key usages, the structure id is the certificates'
OU). Both ``passerelle check-config`` and the start of the gateway call it.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

ACTIVITY_SECTOR = re.compile(r"^SA\d{2}$")
STRUCTURE_ID = re.compile(r"^[0-9][0-9A-Za-z]{1,29}$")


class DmpSettings(BaseModel):
    """``space.dmp``: the structure, its SIGN credentials, and what the VIHF says about the software."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sign_cert_file: Path | None = Field(None, description="SIGN certificate: PEM (with sign_key_file) or PKCS#12")
    sign_key_file: Path | None = Field(None, description="SIGN private key (PEM) when sign_cert_file is PEM")
    sign_password_file: Path | None = Field(None, description="password of the PKCS#12 file or encrypted PEM key")
    structure_id: str = Field("", description="IdNat_Struct (1 + FINESS...): the OU of both certificates")
    structure_name: str = Field("", description="authorInstitution name when a document names none (default: O)")
    activity_sector: str = Field("SA01", description="JDV_J61 code: VIHF Secteur_Activite, default facility type")
    practice_setting: str = Field("ETABLISSEMENT", description="JDV_J04 practiceSettingCode of documents without one")
    software_name: str = Field("Passerelle", description="LPS_Nom, as shown in the product")
    software_version: str = Field("0.1.0", description="LPS_Version, as shown in the product")
    homologation_id: str = Field("", description="LPS_ID_HOMOLOGATION_DMP given at DMP referencing")
    installation_id: str = Field("", description="LPS_ID: identifier of this installation (optional)")
    responsible_id: str = Field("", description="VIHF NameID for automated processing (default: structure_id)")
    vihf_version: str = Field("3.0", description="VIHF_Version attribute")
    allow_loopback_http: bool = Field(True, description="accept http:// on a loopback address (sandbox)")

    @field_validator("activity_sector")
    @classmethod
    def _sector(cls, value: str) -> str:
        if not ACTIVITY_SECTOR.match(value):
            raise ValueError("must be a JDV_J61 activity sector code such as SA01 or SA25")
        return value

    @field_validator("structure_id", "homologation_id", "installation_id", "responsible_id", mode="before")
    @classmethod
    def _digits_as_text(cls, value: object) -> object:
        """YAML reads ``1120459876`` as a number: identifiers are text."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("structure_id")
    @classmethod
    def _structure(cls, value: str) -> str:
        if value and not STRUCTURE_ID.match(value):
            raise ValueError("must be an IdNat_Struct (type digit + FINESS/SIREN/SIRET...), e.g. 1120459876")
        return value

    @field_validator("software_name", "software_version")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty (the VIHF carries it)")
        return value.strip()
