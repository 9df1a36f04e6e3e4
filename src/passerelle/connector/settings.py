"""The full settings of a gateway: the core groups plus the groups owned by each listener and adapter.

This is the one object validated at start-up (``passerelle check-config``) and passed down.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from passerelle.adapters.mhd import SpaceSettings
from passerelle.config import CoreSettings, load_config
from passerelle.connector.dispatch.lab import LabSettings
from passerelle.connector.intake.cda import CdaIntakeSettings
from passerelle.connector.intake.dicom import DicomFolderSettings
from passerelle.connector.intake.hl7 import Hl7IntakeSettings
from passerelle.connector.listeners.dicom_scp import DicomSettings
from passerelle.connector.listeners.mllp.settings import MllpSettings

#: Fields of the groups that the composition root sets from other settings, with what to set instead.
DERIVED_SETTINGS = {
    ("hl7", "test_environment"): "set environment: test (or production)",
    ("hl7", "channel"): "the MLLP intake's channel is always mllp",
    ("cda", "test_environment"): "set environment: test (or production)",
    ("space", "test_environment"): "set environment: test (or production)",
}


class Settings(CoreSettings):
    mllp: MllpSettings = Field(default_factory=MllpSettings)
    hl7: Hl7IntakeSettings = Field(default_factory=Hl7IntakeSettings)
    space: SpaceSettings = Field(default_factory=SpaceSettings)
    cda: CdaIntakeSettings = Field(default_factory=CdaIntakeSettings)
    dicom: DicomSettings = Field(default_factory=DicomSettings)
    dicom_folder: DicomFolderSettings = Field(default_factory=DicomFolderSettings)
    lab: LabSettings = Field(default_factory=LabSettings)

    @model_validator(mode="after")
    def _no_derived_settings(self) -> Settings:
        """Settings the gateway derives from others are refused when a file sets them (they would be
        silently overwritten): the test INS authorities follow ``environment``, the channel is MLLP's."""
        for group, name in DERIVED_SETTINGS:
            if name in getattr(self, group).model_fields_set:
                raise ValueError(f"{group}.{name} is derived by the gateway, not set: {DERIVED_SETTINGS[group, name]}")
        return self


def load_settings(
    path: Path | None = None, *, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """The gateway settings from a YAML file, ``PASSERELLE__*`` variables and dotted overrides."""
    return load_config(Settings, path, environ=environ, overrides=overrides)
