"""``passerelle messages``: browse the journal (every message's journey) and replay what failed.

Every command reads an existing journal (``--init`` creates an empty one); ``show --raw`` and
``show --document`` write the message as received, or the document the gateway makes of it, to stdout
and are audited like the console's downloads; a replay that matches nothing exits 1.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer

from passerelle.connector.admin.browser import Preview, journey, replay_rows, row_summary, select_rows
from passerelle.connector.admin.documents import preview_of
from passerelle.connector.cli.common import load, print_json, with_audit, with_journal
from passerelle.connector.cli.options import (
    ConfigOpt,
    DataDirOpt,
    DocumentOpt,
    InitOpt,
    PatientOpt,
    SinceOpt,
    UntilOpt,
)
from passerelle.connector.cli.progress import Progress
from passerelle.connector.settings import Settings
from passerelle.queue.audit import AuditStore
from passerelle.queue.model import Query, Row, State
from passerelle.queue.ports import Journal

app = typer.Typer(help="Browse the journal: every message's journey; replay what failed.", no_args_is_help=True)

_SHOWN = ("id", "received_at", "channel", "sender", "kind", "message_id", "state", "detail", "attempts",
          "next_due", "deadline", "document_id", "patient_id", "size", "sha256")  # fmt: skip
#: How ``messages show`` words what the journal still holds of a message (admin.browser.payload_state).
_PAYLOAD = {"stored": "stored", "truncated": "beginning kept (rejected message)", "purged": "payload purged"}


def _actor() -> str:
    return f"cli:{os.environ.get('USER', 'unknown')}"


@app.command("list")
def messages_list(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    state: Annotated[list[State] | None, typer.Option(help="Filter by state (repeatable)")] = None,
    channel: Annotated[str, typer.Option(help="Channel: mllp, http, folder, dicom")] = "",
    sender: Annotated[str, typer.Option(help="Sender (MSH-3^MSH-4, AE title...)")] = "",
    patient: PatientOpt = "",
    document: DocumentOpt = "",
    since: SinceOpt = None,
    until: UntilOpt = None,
    before: Annotated[int | None, typer.Option(help="Only rows with a lower id (the next page)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
    init: InitOpt = False,
) -> None:
    """List journal rows, newest first (page with --before <last id shown>)."""
    settings = load(config, data_dir=data_dir)
    query = Query(states=state or (), channel=channel, sender=sender, patient_id=patient, document_id=document,
                  since=since, until=until, limit=limit, before_id=before)  # fmt: skip
    rows = asyncio.run(with_journal(settings, lambda j: j.find(query), init=init))
    summaries = [row_summary(r) for r in rows]
    if as_json:
        print_json(summaries)
        return
    columns = ("id", "received_at", "channel", "kind", "state", "attempts", "message_id", "document_id", "detail")
    typer.echo("\t".join(columns))
    for s in summaries:
        typer.echo("\t".join(str(s[c]) for c in columns))


@app.command("show")
def messages_show(
    row_id: Annotated[int, typer.Argument(help="Journal row id")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Write the message as received to stdout (audited)")] = False,
    document: Annotated[
        bool, typer.Option("--document", help="Write the document the gateway makes of it to stdout (audited)")
    ] = False,
    init: InitOpt = False,
) -> None:
    """A message's whole journey in time order: receipt, ACK, mapping, consent decision, attempts with the
    space's answers, delivery, business ACK."""
    settings = load(config, data_dir=data_dir)
    if raw or document:
        content = asyncio.run(with_journal(settings, lambda j: _content(settings, j, row_id, document), init=init))
        typer.echo(content, nl=False)
        return
    found = asyncio.run(with_journal(settings, lambda j: journey(j, row_id), init=init))
    if found is None:
        typer.echo(f"no message {row_id}", err=True)
        raise typer.Exit(1)
    if as_json:
        print_json(found)
        return
    for key in _SHOWN:
        typer.echo(f"{key:12} {found[key]}")
    typer.echo(f"{'payload':12} {_PAYLOAD[found['payload']]}")
    typer.echo("journey:")
    for event in found["events"]:
        data = f"  {json.dumps(event['data'], ensure_ascii=False)}" if event["data"] else ""
        typer.echo(f"  {event['at']}  {event['kind']:10} {event['detail']}{data}")


async def _content(settings: Settings, journal: Journal, row_id: int, document: bool) -> bytes:
    """The raw message or its (first) document, audited like a console download; exits 1 when there is none."""
    row = await journal.get(row_id)
    if row is None:
        _fail(f"no message {row_id}")
    if row.payload_purged:
        _fail(f"message {row_id}: its content was purged (retention); only its size and SHA-256 remain")
    data, reason, document_id = row.raw, "download-raw", row.document_id
    if document:
        data, document_id = await _document(settings, journal, row)
        reason = "download-document"

    async def audit(store: AuditStore) -> None:
        from passerelle.observability.audit import AuditTrail

        await AuditTrail(store).record(action="admin", outcome="success", reason=reason, actor=_actor(),
                                       row_id=row.id, document_id=document_id, patient_id=row.patient_id)  # fmt: skip

    await with_audit(settings, audit)
    return data


async def _document(settings: Settings, journal: Journal, row: Row) -> tuple[bytes, str]:
    from passerelle.connector.parts import document_renderer
    from passerelle.errors import PasserelleError

    try:
        rendered = await document_renderer(settings, journal, lambda: datetime.now(UTC))(row)
    except PasserelleError as exc:
        _fail(f"message {row.id}: no document ({exc.reason}: {exc.message})")
    if isinstance(rendered, str) or not rendered:
        _fail(f"message {row.id} makes no document ({rendered or 'nothing to deliver'})")
    if len(rendered) > 1:
        typer.echo(f"message {row.id} makes {len(rendered)} documents; writing the first", err=True)
    return rendered[0].content, rendered[0].unique_id


def _fail(line: str) -> NoReturn:
    typer.echo(line, err=True)
    raise typer.Exit(1)


@app.command("replay")
def messages_replay(
    row_ids: Annotated[list[int] | None, typer.Argument(help="Row ids (or use the filters)")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    state: Annotated[list[State] | None, typer.Option(help="With no ids: rows in these states (default dead)")] = None,
    sender: Annotated[str, typer.Option()] = "",
    patient: Annotated[str, typer.Option()] = "",
    document: Annotated[str, typer.Option()] = "",
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent; change nothing")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm a replay selected by filter")] = False,
) -> None:
    """Replay dead-lettered, refused or parked messages. A replay never duplicates a document in the space.
    Exits 1 when nothing matches (or nothing could be replayed)."""
    settings = load(config, data_dir=data_dir)
    selection = Query(states=state or [State.DEAD], sender=sender, patient_id=patient, document_id=document,
                      limit=limit)  # fmt: skip
    replay = _Replay(settings, list(row_ids or []), selection, dry_run=dry_run, confirmed=yes)
    result = asyncio.run(with_journal(settings, replay.run))
    print_json(result)
    if "error" in result:
        raise typer.Exit(1)
    if not result["count"]:
        verb = "would be replayed" if dry_run else "was replayed"
        _fail(f"nothing {verb}: no message matches ({len(result['items'])} selected, none replayable)")


class _Replay:
    """One ``messages replay``: the rows named, or the rows a filter selects (confirmed with --yes)."""

    def __init__(self, settings: Settings, ids: list[int], selection: Query, *, dry_run: bool, confirmed: bool):
        self.settings = settings
        self.ids = ids
        self.selection = selection
        self.dry_run = dry_run
        self.confirmed = confirmed
        self.actor = _actor()

    async def run(self, journal: Journal) -> dict[str, Any]:
        ids = self.ids or await select_rows(journal, self.selection)
        if not self.ids and ids and not self.dry_run and not self.confirmed:
            return {"error": f"{len(ids)} rows match; add --yes to replay them, or --dry-run to look first"}
        now = datetime.now(UTC)
        with Progress(len(ids), "replay") as bar:
            if self.dry_run:
                preview = preview_hook(self.settings, journal)
                return await replay_rows(journal, ids, now=now, actor=self.actor, dry_run=True, preview=preview,
                                         progress=bar.advance)  # fmt: skip

            async def audited(store: AuditStore) -> dict[str, Any]:
                from passerelle.observability.audit import AuditTrail

                hook = AuditTrail(store).admin_hook(self.actor)
                return await replay_rows(journal, ids, now=now, actor=self.actor, dry_run=False, audit=hook,
                                         progress=bar.advance)  # fmt: skip

            return await with_audit(self.settings, audited)


def preview_hook(settings: Settings, journal: Journal) -> Preview:
    """What a replay would send: the documents the gateway's own row mapper makes of the row (read-only)."""
    from passerelle.connector.parts import document_renderer

    return preview_of(document_renderer(settings, journal, lambda: datetime.now(UTC)))
