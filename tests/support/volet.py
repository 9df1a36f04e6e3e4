"""Facts of the CI-SIS HL7v2 volet the tests build messages from, written from the specification
(not taken from the gateway's tables)."""

from __future__ import annotations

#: The flag OBX codes (MetaDMPMSS) in the order the volet's examples give them.
FLAG_ORDER = (
    "MASQUE_PS",
    "INVISIBLE_PATIENT",
    "INVISIBLE_REP_LEGAUX",
    "CONNEXION_SECRETE",
    "MODIF_CONF_CODE",
    "DESTDMP",
    "DESTMSSANTEPS",
    "DESTMSSANTEPAT",
)
