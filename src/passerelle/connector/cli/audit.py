"""``passerelle audit``: query the audit trail."""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import Annotated

import typer

from passerelle.connector.cli.common import load, print_json, with_audit
from passerelle.connector.cli.options import ConfigOpt, DataDirOpt, DocumentOpt, InitOpt, PatientOpt, SinceOpt, UntilOpt

app = typer.Typer(
    help="The audit trail: decisions, deliveries, refusals, replays, admin actions.", no_args_is_help=True
)


@app.command("list")
def audit_list(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    action: Annotated[
        str | None, typer.Option(help="consent-decision, delivery, refusal, dead-letter, replay, admin")
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    document: DocumentOpt = "",
    patient: PatientOpt = "",
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    fhir: Annotated[bool, typer.Option("--fhir", help="Export as a FHIR Bundle of AuditEvent resources")] = False,
    init: InitOpt = False,
) -> None:
    """Query the audit trail (identifiers, decisions and reasons; never clinical content)."""
    from passerelle.observability.audit import AuditAction, to_audit_bundle
    from passerelle.queue.audit import AuditQuery

    settings = load(config, data_dir=data_dir)
    query = AuditQuery(
        since=since.astimezone(UTC) if since else None,
        until=until.astimezone(UTC) if until else None,
        document_id=document,
        patient_id=patient,
        action=AuditAction(action) if action else None,
        limit=limit,
    )
    records = asyncio.run(with_audit(settings, lambda store: store.query(query), init=init))
    if fhir:
        print_json(to_audit_bundle(records, source_id=settings.oid_root))
        return
    typer.echo("id\tat\taction\toutcome\treason\tactor\trow\tdocument_id\tpatient_id")
    for r in records:
        typer.echo(
            f"{r.id}\t{r.at.isoformat()}\t{r.action.value}\t{r.outcome.value}\t{r.reason}\t{r.actor}\t"
            f"{r.row_id}\t{r.document_id}\t{r.patient_id}"
        )
