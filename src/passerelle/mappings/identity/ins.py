"""INS (Identifiant National de Santé) rules: NIR key, assigning authorities, qualification.

Pure functions (docs/interop-reference.md, "INS").
"""

from __future__ import annotations

import re

from passerelle.mappings.document import PRODUCTION_INS_OIDS, TEST_INS_OIDS

_NIR_RE = re.compile(r"^[1-478][0-9]{4}(?:[0-9]{2}|2A|2B)[0-9]{8}$")


def nir_key(first13: str) -> int:
    """Control key of a NIR: 97 - (n mod 97), with Corsica 2A -> 19 and 2B -> 18."""
    digits = first13.upper().replace("2A", "19", 1) if first13[5:7].upper() == "2A" else first13
    digits = digits.upper().replace("2B", "18", 1) if first13[5:7].upper() == "2B" else digits
    return 97 - (int(digits) % 97)


def is_valid_nir(value: str) -> bool:
    """True when ``value`` has the 15-character NIR shape and its key verifies."""
    value = value.strip().upper()
    if len(value) != 15 or not _NIR_RE.match(value):
        return False
    return nir_key(value[:13]) == int(value[13:])


def with_key(first13: str) -> str:
    """Append the control key to 13 NIR characters (used by the synthetic generator)."""
    return f"{first13}{nir_key(first13):02d}"


def allowed_ins_oids(test_environment: bool) -> frozenset[str]:
    """Assigning authorities accepted for the INS: production ones, plus test/demo ones in test mode."""
    return PRODUCTION_INS_OIDS | TEST_INS_OIDS if test_environment else PRODUCTION_INS_OIDS
