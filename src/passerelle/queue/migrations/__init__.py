"""Numbered SQL migrations of the journal, read as package data (importlib.resources).

``common/NNNN_*.sql`` holds what both dialects share, written once with ``${NAME}`` placeholders for the
few words that differ (:data:`DIALECTS`: column types, ``WITHOUT ROWID``, a digest expression).
``<dialect>/NNNN_*.sql`` holds what only that dialect has; it runs after the common file of the same
number, in the same transaction. Never edit an applied migration: add the next number.
"""

from __future__ import annotations

import re
from importlib import resources
from string import Template

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

#: The words that differ between the dialects, by placeholder.
DIALECTS: dict[str, dict[str, str]] = {
    "sqlite": {
        "ROW_ID": "INTEGER PRIMARY KEY",
        "ID": "INTEGER",
        "TIME": "REAL",
        "BYTES": "BLOB",
        "NO_BYTES": "x''",
        "JSON": "TEXT",
        "NO_JSON": "'{}'",
        "NO_ROWID": "WITHOUT ROWID",
        "RAW_SHA256": "sha256_hex(raw)",  # a function the SQLite journal registers on its connection
    },
    "postgres": {
        "ROW_ID": "BIGSERIAL PRIMARY KEY",
        "ID": "BIGINT",
        "TIME": "TIMESTAMPTZ",
        "BYTES": "BYTEA",
        "NO_BYTES": "''::bytea",
        "JSON": "JSONB",
        "NO_JSON": "'{}'::jsonb",
        "NO_ROWID": "",
        "RAW_SHA256": "encode(sha256(raw), 'hex')",
    },
}


def _files(folder: str) -> dict[int, tuple[str, str]]:
    found: dict[int, tuple[str, str]] = {}
    for entry in resources.files(__package__).joinpath(folder).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found[int(match.group(1))] = (entry.name, entry.read_text(encoding="utf-8"))
    return found


def load(dialect: str) -> list[tuple[int, str, str]]:
    """Return ``(version, name, sql)`` for every migration of a dialect, in order."""
    words = DIALECTS[dialect]
    common, own = _files("common"), _files(dialect)
    out = []
    for version in sorted(common.keys() | own.keys()):
        name, shared = common.get(version, ("", ""))
        own_name, extra = own.get(version, ("", ""))
        out.append((version, name or own_name, Template(shared).substitute(words) + extra))
    return out
