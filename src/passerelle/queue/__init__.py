"""The durable journal: contract, backends (SQLite, PostgreSQL, memory) and migrations."""

from passerelle.queue.base import (
    AppendResult,
    Event,
    Inbound,
    Journal,
    Query,
    RegistryEntry,
    Row,
    SeriesEntry,
    Settlement,
    State,
)

__all__ = [
    "AppendResult",
    "Event",
    "Inbound",
    "Journal",
    "Query",
    "RegistryEntry",
    "Row",
    "SeriesEntry",
    "Settlement",
    "State",
]
