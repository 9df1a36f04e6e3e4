"""The ``passerelle`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from passerelle.config import ConfigError
from passerelle.connector.settings import Settings, load_settings
from passerelle.queue.model import Query, State

app = typer.Typer(
    name="passerelle",
    help="Passerelle: feed HL7v2, CDA R2 and DICOM documents into patients' Mon espace santé spaces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
messages_app = typer.Typer(
    help="Browse the journal: every message's journey; replay what failed.", no_args_is_help=True
)
app.add_typer(messages_app, name="messages")
audit_app = typer.Typer(
    help="The audit trail: decisions, deliveries, refusals, replays, admin actions.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML settings file", exists=True, dir_okay=False)
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where the journal and run files live")]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, environ=os.environ, overrides=overrides)
    except ConfigError as exc:
        for line in exc.errors:
            typer.echo(f"configuration error: {line}", err=True)
        raise typer.Exit(2) from exc


# --- run --------------------------------------------------------------------------------------------


@app.command()
def run(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    mllp_port: Annotated[int | None, typer.Option(help="MLLP listener port (0: any free port)")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port: admin API, /metrics, intake (0: any)")] = None,
    space_url: Annotated[str | None, typer.Option(help="Patient space FHIR base URL")] = None,
) -> None:
    """Run the gateway: listeners, dispatch worker, HTTP API. Stops cleanly on SIGTERM/SIGINT."""
    from passerelle.observability.logs import setup_logging

    settings = _settings(
        config, data_dir=data_dir, **{"mllp.port": mllp_port, "http.port": http_port, "space.url": space_url}
    )
    setup_logging(settings.log_level)
    raise typer.Exit(asyncio.run(serve_gateway(settings)))


async def serve_gateway(settings: Settings) -> int:
    """Serve until a signal; returns the process exit code (1 when a component crashed)."""
    from passerelle.connector.app import bound_port, build_gateway, create_app, start_http_server

    gateway = build_gateway(settings)
    server, task = await start_http_server(
        create_app(settings, gateway=gateway), settings.http.host, settings.http.port
    )
    gateway.on_crash = lambda _reason: setattr(server, "should_exit", True)
    if server.started and server.servers:
        gateway.write_ports(http=bound_port(server))
    await task
    return 1 if gateway.crashed or not server.started else 0


# --- sandbox ----------------------------------------------------------------------------------------


@app.command()
def sandbox(
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option(help="HTTP port of the sandbox")] = 8090,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    data_dir: DataDirOpt = None,
) -> None:
    """Run the sandbox patient space alone (FHIR base at /fhir, pages at /)."""
    import yaml

    from passerelle.observability.logs import setup_logging
    from passerelle.sandbox.config import SandboxConfig
    from passerelle.sandbox.server import run_sandbox

    data: dict[str, Any] = {}
    if config is not None:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        section = loaded.get("sandbox", loaded) if isinstance(loaded, dict) else None
        if not isinstance(section, dict):
            typer.echo("configuration error: the sandbox settings must be a mapping", err=True)
            raise typer.Exit(2)
        data = dict(section)
    if data_dir is not None:
        data["data_dir"] = data_dir
    data.setdefault("data_dir", Path("var/sandbox"))
    setup_logging("INFO")
    run_sandbox(SandboxConfig.model_validate(data), host, port)


# --- demo -------------------------------------------------------------------------------------------


@app.command()
def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the stack running after the summary")] = False,
    count: Annotated[int, typer.Option(help="Number of synthetic lab reports")] = 5,
    data_dir: DataDirOpt = None,
) -> None:
    """End to end on embedded defaults: sandbox + gateway, 5 synthetic lab reports over MLLP, a summary."""
    from passerelle.connector.cli.demo import run_demo

    raise typer.Exit(asyncio.run(run_demo(count=count, keep=keep, data_dir=data_dir)))


# --- send / samples / map ---------------------------------------------------------------------------


@app.command()
def send(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Files of HL7v2 messages")],
    host: Annotated[str, typer.Option(help="MLLP host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="MLLP port")] = 2575,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each ACK")] = 30.0,
) -> None:
    """Send messages over MLLP; print one line per message: MSA-1, MSA-2, file name (tab-separated)."""
    from passerelle.connector.cli.send import send_files

    items = [(str(path), path.read_bytes()) for path in files]
    results = asyncio.run(send_files(host, port, items, timeout=timeout))
    for r in results:
        typer.echo(f"{r.code}\t{r.control_id}\t{r.source}")
    raise typer.Exit(0 if results and all(r.code in ("AA", "CA") for r in results) else 1)


@app.command()
def samples(
    out: Annotated[Path, typer.Option("--out", help="Output folder")],
    count: Annotated[int, typer.Option(help="How many messages")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same messages)")] = 1,
) -> None:
    """Write synthetic CI-SIS ORU^R01 messages (test INS, generated CDA), one per file."""
    from passerelle.mappings.samples.messages import write_samples

    paths = write_samples(out, count, seed, datetime.now(UTC).replace(microsecond=0))
    for path in paths:
        typer.echo(str(path))


@app.command("map")
def map_files(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="HL7v2, CDA or DICOM files")],
    out: Annotated[Path, typer.Option("--out", help="Output folder")],
    fmt: Annotated[str | None, typer.Option("--format", help="hl7v2 | cda | dicom (default: detected)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Preview: decode, apply identity rules and map files; write content, metadata and the ITI-65 bundle.
    Nothing is journaled or delivered."""
    from passerelle.connector.cli.preview import preview_files
    from passerelle.connector.dispatch.lab import CrBioLabMapper
    from passerelle.queue.memory import MemoryJournal

    settings = _settings(config)
    lab = CrBioLabMapper(
        MemoryJournal(),
        settings.lab,
        settings.hl7,
        oid_root=settings.oid_root,
        test_environment=settings.test_environment,
    )
    results = preview_files(
        files,
        out,
        fmt=fmt,
        test_environment=settings.test_environment,
        now=datetime.now(UTC),
        source_id=settings.space.source_id,
        lab_mapper=lab.preview,
    )
    failed = 0
    for result in results:
        typer.echo(result.summary_line())
        failed += 0 if result.ok else 1
    raise typer.Exit(1 if failed else 0)


# --- check-config -----------------------------------------------------------------------------------


@app.command("check-config")
def check_config(config: ConfigOpt = None) -> None:
    """Validate the settings (file + PASSERELLE__* environment) and print every problem found."""
    settings = _settings(config)
    problems: list[str] = []
    if settings.environment == "production" and "127.0.0.1" in settings.space.url:
        problems.append("space.url: production environment pointed at a local sandbox")
    if settings.consent.rules_file is not None:
        from passerelle.consent.rules import load_rules

        try:
            load_rules(settings.consent.rules_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"consent.rules_file: {exc}")
    if settings.http.admin_token_file is not None and not settings.http.admin_token_file.is_file():
        problems.append("http.admin_token_file: file not found")
    for line in problems:
        typer.echo(f"configuration error: {line}", err=True)
    if problems:
        raise typer.Exit(2)
    typer.echo(f"configuration OK (environment={settings.environment}, journal={settings.journal.backend})")


# --- messages ---------------------------------------------------------------------------------------


async def _with_journal(settings: Settings, fn: Any) -> Any:
    from passerelle.connector.app import open_journal

    journal = open_journal(settings)
    await journal.open()
    try:
        return await fn(journal)
    finally:
        await journal.close()


def _print(obj: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


@messages_app.command("list")
def messages_list(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    state: Annotated[list[State] | None, typer.Option(help="Filter by state (repeatable)")] = None,
    sender: Annotated[str, typer.Option(help="Sender (MSH-3^MSH-4, AE title...)")] = "",
    patient: Annotated[str, typer.Option(help="Patient identifier (INS)")] = "",
    document: Annotated[str, typer.Option(help="Document unique id")] = "",
    since: Annotated[datetime | None, typer.Option(help="Received at or after (ISO time)")] = None,
    until: Annotated[datetime | None, typer.Option(help="Received before (ISO time)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """List journal rows, newest first."""
    from passerelle.connector.admin.browser import row_summary

    settings = _settings(config, data_dir=data_dir)
    query = Query(
        states=state or (),
        sender=sender,
        patient_id=patient,
        document_id=document,
        since=since,
        until=until,
        limit=limit,
    )
    rows = asyncio.run(_with_journal(settings, lambda j: j.find(query)))
    summaries = [row_summary(r) for r in rows]
    if as_json:
        _print(summaries, True)
        return
    typer.echo("id\treceived_at\tchannel\tkind\tstate\tattempts\tmessage_id\tdocument_id\tdetail")
    for s in summaries:
        typer.echo(
            f"{s['id']}\t{s['received_at']}\t{s['channel']}\t{s['kind']}\t{s['state']}\t{s['attempts']}\t"
            f"{s['message_id']}\t{s['document_id']}\t{s['detail']}"
        )


@messages_app.command("show")
def messages_show(
    row_id: Annotated[int, typer.Argument(help="Journal row id")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """A message's whole journey: receipt, ACK, mapping, consent decision, attempts, delivery, business ACK."""
    from passerelle.connector.admin.browser import journey

    settings = _settings(config, data_dir=data_dir)
    found = asyncio.run(_with_journal(settings, lambda j: journey(j, row_id)))
    if found is None:
        typer.echo(f"no message {row_id}", err=True)
        raise typer.Exit(1)
    if as_json:
        _print(found, True)
        return
    for key in ("id", "received_at", "channel", "sender", "kind", "message_id", "state", "detail", "attempts",
                "next_due", "deadline", "document_id", "patient_id", "size"):  # fmt: skip
        typer.echo(f"{key:12} {found[key]}")
    typer.echo("journey:")
    for event in found["events"]:
        data = f"  {json.dumps(event['data'], ensure_ascii=False)}" if event["data"] else ""
        typer.echo(f"  {event['at']}  {event['kind']:10} {event['detail']}{data}")


@messages_app.command("replay")
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
    """Replay dead-lettered, refused or parked messages. A replay never duplicates a document in the space."""
    from passerelle.connector.admin.browser import replay_rows

    settings = _settings(config, data_dir=data_dir)
    actor = f"cli:{os.environ.get('USER', 'unknown')}"

    async def go(journal: Any) -> Any:
        ids = list(row_ids or [])
        if not ids:
            query = Query(
                states=state or [State.DEAD], sender=sender, patient_id=patient, document_id=document, limit=limit
            )
            ids = [r.id for r in await journal.find(query)]
            if not dry_run and not yes:
                return {"error": f"{len(ids)} rows match; add --yes to replay them, or --dry-run to look first"}
        preview = await _preview_hook(settings, journal) if dry_run else None
        if dry_run:
            return await replay_rows(journal, ids, now=datetime.now(UTC), actor=actor, dry_run=True, preview=preview)

        async def with_audit(store: Any) -> Any:
            from passerelle.observability.audit import AuditTrail

            hook = AuditTrail(store).admin_hook(actor)
            return await replay_rows(journal, ids, now=datetime.now(UTC), actor=actor, dry_run=False, audit=hook)

        return await _with_audit(settings, with_audit)

    result = asyncio.run(_with_journal(settings, go))
    _print(result, True)
    if "error" in result:
        raise typer.Exit(1)


async def _preview_hook(settings: Settings, journal: Any) -> Any:
    from passerelle.connector.dispatch.mapper import RowMapper
    from passerelle.mappings.document import Document

    mapper = RowMapper(
        journal,
        settings.hl7,
        test_environment=settings.test_environment,
        clock=lambda: datetime.now(UTC),
        oid_root=settings.oid_root,
    )

    async def preview(row: Any) -> dict[str, Any]:
        mapped = await mapper.map(row)
        docs = [mapped] if isinstance(mapped, Document) else mapped if isinstance(mapped, list) else []
        return {"documents": [d.metadata() for d in docs]} if docs else {"handled": getattr(mapped, "detail", "")}

    return preview


# --- audit ------------------------------------------------------------------------------------------


async def _with_audit(settings: Settings, fn: Any) -> Any:
    from passerelle.connector.app import open_audit_store

    store = open_audit_store(settings)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


@audit_app.command("list")
def audit_list(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    document: Annotated[str, typer.Option(help="Document unique id")] = "",
    patient: Annotated[str, typer.Option(help="Patient identifier (INS)")] = "",
    action: Annotated[
        str | None, typer.Option(help="consent-decision, delivery, refusal, dead-letter, replay, admin")
    ] = None,
    since: Annotated[datetime | None, typer.Option(help="At or after (ISO time, with offset)")] = None,
    until: Annotated[datetime | None, typer.Option(help="Before (ISO time, with offset)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    fhir: Annotated[bool, typer.Option("--fhir", help="Export as a FHIR Bundle of AuditEvent resources")] = False,
) -> None:
    """Query the audit trail (identifiers, decisions and reasons; never clinical content)."""
    from passerelle.observability.audit import AuditAction, to_audit_bundle
    from passerelle.queue.audit import AuditQuery

    settings = _settings(config, data_dir=data_dir)
    query = AuditQuery(
        since=since.astimezone(UTC) if since else None,
        until=until.astimezone(UTC) if until else None,
        document_id=document,
        patient_id=patient,
        action=AuditAction(action) if action else None,
        limit=limit,
    )
    records = asyncio.run(_with_audit(settings, lambda store: store.query(query)))
    if fhir:
        _print(to_audit_bundle(records, source_id=settings.oid_root), True)
        return
    typer.echo("id\tat\taction\toutcome\treason\tactor\trow\tdocument_id\tpatient_id")
    for r in records:
        typer.echo(
            f"{r.id}\t{r.at.isoformat()}\t{r.action.value}\t{r.outcome.value}\t{r.reason}\t{r.actor}\t"
            f"{r.row_id}\t{r.document_id}\t{r.patient_id}"
        )


def main() -> None:
    app(prog_name="passerelle")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())  # type: ignore[func-returns-value]
