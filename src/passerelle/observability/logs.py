"""Logging with PHI redaction by construction.

Log lines are JSON objects holding the message text and only the ``extra`` keys listed in
:data:`ALLOWED_FIELDS` (identifiers, sizes, codes). Anything else passed as ``extra`` is dropped, so a
careless ``extra={"pid": ...}`` cannot leak demographics. Message texts themselves are written by our own
code and never contain payloads or patient data.

Libraries' texts are not ours: signxml logs the canonicalised XML it signs at DEBUG (a VIHF names the
patient's INS), others log identifiers or payloads at INFO. Whatever the root level, the handler lets a
record from outside ``passerelle`` through only from WARNING up (:class:`LibraryFilter`), and the
libraries known to do so are also held at WARNING on their own loggers (no record is even built).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

ALLOWED_FIELDS = frozenset(
    {
        "row_id", "msh10", "message_id", "document_id", "channel", "kind", "sender", "peer", "size", "state",
        "reason", "attempt", "status", "code", "duration_ms", "count", "port", "url", "migration", "worker",
        "next_due", "component", "error", "lane_count", "sop_instance_uid",
    }
)  # fmt: skip


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ALLOWED_FIELDS:
            if key in record.__dict__:
                out[key] = record.__dict__[key]
        if record.exc_info and record.exc_info[0] is not None:
            # Type only: exception texts from third-party code may quote input.
            out["exc_type"] = record.exc_info[0].__name__
        return json.dumps(out, default=str, ensure_ascii=False)


#: Libraries known to log identifiers or payloads below WARNING (signxml: the canonicalised XML it signs).
HELD_LIBRARIES = ("pynetdicom", "httpx", "httpcore", "uvicorn.access", "hl7", "signxml", "xmlschema", "h11")
#: Logger names whose records pass at any level: this project's own.
OWN_LOGGERS = "passerelle"


class LibraryFilter(logging.Filter):
    """Drops records below WARNING from any logger outside ``passerelle``: a library's DEBUG or INFO text
    may quote what it processes (XML, messages, identifiers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == OWN_LOGGERS or record.name.startswith(OWN_LOGGERS + ".")
        return own or record.levelno >= logging.WARNING


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once (called by the CLI, never at import time)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(LibraryFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in HELD_LIBRARIES:
        logging.getLogger(noisy).setLevel(logging.WARNING)
