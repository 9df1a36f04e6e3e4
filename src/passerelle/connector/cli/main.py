"""The ``passerelle`` command line: one module per command group, assembled here."""

from __future__ import annotations

import sys

import typer

from passerelle.connector.cli import audit, dmp, messages, retention, serve, tools

app = typer.Typer(
    name="passerelle",
    help="Passerelle: feed HL7v2, CDA R2 and DICOM documents into patients' Mon espace santé spaces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(serve.run)
app.command()(tools.sandbox)
app.command()(tools.demo)
app.command()(tools.send)
app.command()(tools.samples)
app.command("map")(tools.map_files)
app.command("check-config")(serve.check_config)
app.add_typer(messages.app, name="messages")
app.add_typer(audit.app, name="audit")
app.add_typer(retention.app, name="retention")
dmp.register(app)


def main() -> None:
    app(prog_name="passerelle")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())  # type: ignore[func-returns-value]
