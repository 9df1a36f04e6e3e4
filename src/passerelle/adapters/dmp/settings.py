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

from pydantic import BaseModel, ConfigDict, field_validator

ACTIVITY_SECTOR = re.compile(r"^SA\d{2}$")
STRUCTURE_ID = re.compile(r"^[0-9][0-9A-Za-z]{1,29}$")


class DmpSettings(BaseModel):
    """``space.dmp``: the structure, its SIGN credentials, and what the VIHF says about the software."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Structure's SIGN certificate: PEM (with ``sign_key_file``) or PKCS#12 (key inside, password file).
    sign_cert_file: Path | None = None
    sign_key_file: Path | None = None
    #: Password of the PKCS#12 file or of an encrypted PEM key (first line of the file).
    sign_password_file: Path | None = None
    #: IdNat_Struct (e.g. ``1`` + FINESS): must equal the OU of the SIGN (and AUTH_CLI) certificate.
    structure_id: str = ""
    #: Structure name for authorInstitution when a document names none (default: the certificate's O).
    structure_name: str = ""
    #: Activity sector (JDV_J61 code such as ``SA01``, ``SA25``): VIHF ``Secteur_Activite`` and the
    #: healthcareFacilityTypeCode of documents that carry none.
    activity_sector: str = "SA01"
    #: practiceSettingCode (JDV_J04) of documents that carry none.
    practice_setting: str = "ETABLISSEMENT"
    software_name: str = "Passerelle"
    software_version: str = "0.1.0"
    #: LPS_ID_HOMOLOGATION_DMP: the number the DMP referencing gave this software.
    homologation_id: str = ""
    #: LPS_ID: identifier of this installation (optional).
    installation_id: str = ""
    #: Subject/NameID of the VIHF when a document has no human author: the person responsible for the
    #: automated processing (IdNat_PS or local identifier). Default: the structure id.
    responsible_id: str = ""
    vihf_version: str = "3.0"
    #: Allow a plain ``http://`` base on a loopback address (a sandbox on this machine only).
    allow_loopback_http: bool = True

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
