"""DICOM Structured Report → IMG-CR-IMG 2024.01 CDA document (dmp-interop.md §4.4)."""

from __future__ import annotations

from datetime import datetime

from pydicom.dataset import Dataset

from passerelle.errors import MappingError
from passerelle.mappings.dicom_common import DicomSite
from passerelle.mappings.document import Document, Patient, Provenance


def map_structured_report(
    ds: Dataset, *, patient: Patient, now: datetime, provenance: Provenance, site: DicomSite
) -> Document:
    raise MappingError("SR to IMG-CR-IMG is not implemented yet", location="0008,0016")
