"""Code tables shipped as package data, and the per-sender local-code → LOINC tables.

Tables are read with :mod:`importlib.resources` (no path arithmetic, works from a wheel). A sender's
local → LOINC table is parsed from CSV text (:func:`parse_loinc_csv`); reading the files from
``config/loinc/`` is the composition root's job (mappings do no I/O of their own).
"""

from passerelle.mappings.codes.tables import (
    LabChapter,
    LoincEntry,
    LoincTable,
    interpretation_display,
    lab_chapter,
    loinc_table_file_name,
    parse_loinc_csv,
    specimen_type_display,
    ucum_unit,
    unit_display,
)

__all__ = [
    "LabChapter",
    "LoincEntry",
    "LoincTable",
    "interpretation_display",
    "lab_chapter",
    "loinc_table_file_name",
    "parse_loinc_csv",
    "specimen_type_display",
    "ucum_unit",
    "unit_display",
]
