"""The durable journal: ports, backends (SQLite, PostgreSQL, memory), migrations, retention (docs/journal.md)."""

from passerelle.queue.model import (
    Activity,
    AppendResult,
    Event,
    Inbound,
    Query,
    RegistryEntry,
    Row,
    SeriesEntry,
    Settlement,
    State,
)
from passerelle.queue.ports import (
    AdminJournal,
    BrowserJournal,
    DispatchJournal,
    IntakeJournal,
    Journal,
    Lifecycle,
    ReferenceStore,
    RetentionJournal,
)

__all__ = [
    "Activity",
    "AdminJournal",
    "AppendResult",
    "BrowserJournal",
    "DispatchJournal",
    "Event",
    "Inbound",
    "IntakeJournal",
    "Journal",
    "Lifecycle",
    "Query",
    "ReferenceStore",
    "RegistryEntry",
    "RetentionJournal",
    "Row",
    "SeriesEntry",
    "Settlement",
    "State",
]
