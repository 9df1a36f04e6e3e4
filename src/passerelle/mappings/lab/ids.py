"""Deterministic document identifiers: the same (sender, order, version) always gives the same OID.

A re-run of the same message (after a crash between mapping and settle, or a replay) therefore produces
the same ``uniqueId``, which the patient space uses as the idempotency key: no duplicate document.
"""

from __future__ import annotations

import hashlib

from passerelle.mappings.document import MAX_OID_LENGTH, is_oid

#: 20 decimal digits (64 bits of the hash) plus a dot and the version leave room for a 40-character root
#: within the 64 characters XDS allows.
_HASH_DIGITS_BITS = 64


def _node(*parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    # int() drops leading zeros, which OID arcs must not have; +1 keeps the arc non-zero.
    return str(int.from_bytes(digest[: _HASH_DIGITS_BITS // 8], "big") + 1)


def set_id_for(root: str, sender: str, order_number: str) -> str:
    """The setId shared by every version of the report of one order from one sender."""
    return _check(f"{root}.{_node('set', sender, order_number)}")


def unique_id_for(root: str, sender: str, order_number: str, version: int) -> str:
    """The uniqueId of one version of that report."""
    return _check(f"{root}.{_node('doc', sender, order_number, str(version))}")


def _check(oid: str) -> str:
    if not is_oid(oid):
        raise ValueError(f"generated identifier is not a valid OID of at most {MAX_OID_LENGTH} characters")
    return oid


def sub_id(unique_id: str, n: int) -> str:
    """Identifiers of parts of one document (sections, entries): ``<uniqueId>.<n>``."""
    return f"{unique_id}.{n}"
