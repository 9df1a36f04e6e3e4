"""DMP commands: ``passerelle dev-pki`` and the DMP side of ``map``, ``check-config``, ``run`` and ``demo``.

Registered on the main application by :func:`register`; the other commands call :func:`space_problems`
(configuration check) and :func:`write_dmp_requests` (``map --transport dmp``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from passerelle.connector.files import private_dir, write_private
from passerelle.connector.settings import Settings


def register(app: typer.Typer) -> None:
    app.command("dev-pki")(dev_pki)


def dev_pki(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the CA, AUTH_CLI, SIGN and server files")],
    structure_id: Annotated[str, typer.Option(help="IdNat_Struct written as the certificates' OU")] = "1120459876",
    organisation: Annotated[str, typer.Option(help="Organisation name (O)")] = "PASSERELLE TEST",
) -> None:
    """Write a development PKI shaped like IGC-Santé's ORG certificates (for the sandbox and tests only)."""
    from passerelle.adapters.dmp.devpki import DEV_HOMOLOGATION_ID, write_dev_pki

    pki = write_dev_pki(out, structure_id=structure_id, organisation=organisation)
    for name in (
        "ca.pem",
        "auth.pem",
        "auth.key",
        "sign.pem",
        "sign.key",
        "sign.p12",
        "sign.password",
        "server.pem",
        "server.key",
    ):
        typer.echo(str(pki.path(name)))
    typer.echo("")
    typer.echo("space:")
    typer.echo("  transport: dmp")
    typer.echo(f"  client_cert_file: {pki.auth_cert}\n  client_key_file: {pki.auth_key}\n  ca_file: {pki.ca}")
    typer.echo(
        f"  dmp:\n    structure_id: {structure_id}\n    sign_cert_file: {pki.sign_cert}\n    sign_key_file: {pki.sign_key}"
        f"\n    homologation_id: {DEV_HOMOLOGATION_ID}  # the number given at DMP referencing, in production"
    )


def write_dmp_requests(settings: Settings, files: Iterable[Path], out: Path, fmt: str | None, lab: Any) -> int:
    """``map --transport dmp``: write, per document, the exact ITI-41 request (``.iti41.http``: HTTP
    headers then the MIME body) and its parts for review (``.iti41/``). Nothing is sent. Replacements use a
    placeholder entryUUID (the real one comes from ITI-18 at delivery); deletions write the ITI-57 update
    the same way. Returns the number of refused files."""
    from passerelle.adapters.dmp.credentials import check_space, load_signing_identity
    from passerelle.adapters.dmp.requests import DmpRequests
    from passerelle.errors import PasserelleError
    from passerelle.mappings.document import Provenance
    from passerelle.mappings.preview import PreviewOptions, detect_format, map_file

    problems = check_space(settings.space)
    if problems:
        for line in problems:
            typer.echo(f"configuration error: {line}", err=True)
        raise typer.Exit(2)
    now = datetime.now(UTC)
    requests = DmpRequests(
        settings.space.url,
        settings.space.dmp,
        load_signing_identity(settings.space),
        source_id=settings.space.source_id,
        content_type=settings.space.content_type,
        now=lambda: now,
    )
    opts = PreviewOptions(
        test_environment=settings.test_environment, now=now, lab_mapper=lab, decode=settings.hl7.decode_incoming
    )
    private_dir(out)  # the requests hold the documents and the patients' identities
    refused = 0
    for path in files:
        raw = path.read_bytes()
        try:
            docs = map_file(raw, fmt or detect_format(raw), opts, Provenance(channel="preview", message_id=path.name))
        except PasserelleError as exc:
            refused += 1
            typer.echo(f"REFUSED {path.name}: {exc.reason}: {exc.message}")
            continue
        for index, doc in enumerate(docs, start=1):
            target = out / f"{path.stem}.{index}"
            _write_exchange(requests, doc, target)
            typer.echo(f"OK      {path.name}#{index} {doc.action.value} {doc.unique_id} -> {target}.iti41.http")
    return refused


def _write_exchange(requests: Any, doc: Any, target: Path) -> None:
    from email import policy
    from email.parser import BytesParser

    from passerelle.mappings.document import Action
    from passerelle.mappings.xds.ns import APPROVED
    from passerelle.mappings.xds.queries import StatusChange

    placeholder = "urn:uuid:00000000-0000-0000-0000-000000000000"
    if doc.action is Action.DELETE:
        call = requests.update_status(doc, placeholder, APPROVED, StatusChange.DELETE)
    else:
        call = requests.provide(doc, {doc.replaces: placeholder} if doc.action is Action.REPLACE else None)
    head = f"POST {call.url} HTTP/1.1\r\nContent-Type: {call.content_type}\r\nContent-Length: {len(call.body)}\r\n\r\n"
    write_private(target.parent.joinpath(f"{target.name}.iti41.http"), head.encode("ascii") + call.body)
    parts_dir = private_dir(target.parent / f"{target.name}.iti41")
    message = BytesParser(policy=policy.HTTP).parsebytes(
        f"Content-Type: {call.content_type}\r\n\r\n".encode() + call.body
    )
    index = []
    for number, part in enumerate(message.iter_parts() if message.is_multipart() else [message], start=1):
        payload = part.get_payload(decode=True)
        name = f"part{number}.{'xml' if 'xml' in part.get_content_type() else 'bin'}"
        write_private(parts_dir / name, payload if isinstance(payload, bytes) else call.body)
        index.append(
            {"file": name, "content_type": part.get("Content-Type", ""), "content_id": part.get("Content-ID", "")}
        )
    write_private(parts_dir / "parts.json", (json.dumps(index, indent=2) + "\n").encode())


def write_demo_pki(root: Path) -> Any:
    """``demo --transport dmp``: a fresh dev PKI in ``root/pki`` (its CA is the sandbox's ``dmp_ca_file``)."""
    from passerelle.adapters.dmp.devpki import write_dev_pki

    return write_dev_pki(root / "pki")


def demo_overrides(pki: Any, sandbox_url: str) -> dict[str, Any]:
    """Gateway settings for ``demo --transport dmp``: the dev PKI's SIGN pair and the sandbox's DMP
    services over loopback http (the sandbox serves them at ``/si-dmp-server/v2/services``)."""
    from passerelle.adapters.dmp.devpki import DEV_HOMOLOGATION_ID

    return {
        "space.transport": "dmp",
        "space.url": f"{sandbox_url}/si-dmp-server/v2/services",
        "space.dmp.sign_cert_file": pki.sign_cert,
        "space.dmp.sign_key_file": pki.sign_key,
        "space.dmp.structure_id": pki.structure_id,
        "space.dmp.activity_sector": "SA25",
        "space.dmp.homologation_id": DEV_HOMOLOGATION_ID,
    }
