"""``passerelle run`` and ``passerelle check-config``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from passerelle.connector.cli.common import load
from passerelle.connector.cli.options import ConfigOpt, DataDirOpt
from passerelle.connector.settings import Settings


def run(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    mllp_port: Annotated[int | None, typer.Option(help="MLLP listener port (0: any free port)")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port: admin API, /metrics, intake (0: any)")] = None,
    space_url: Annotated[str | None, typer.Option(help="Patient space FHIR base URL")] = None,
) -> None:
    """Run the gateway: listeners, dispatch worker, HTTP API. Stops cleanly on SIGTERM/SIGINT."""
    from passerelle.observability.logs import setup_logging

    settings = load(
        config, data_dir=data_dir, **{"mllp.port": mllp_port, "http.port": http_port, "space.url": space_url}
    )
    setup_logging(settings.log_level)
    raise typer.Exit(asyncio.run(serve_gateway(settings)))


async def serve_gateway(settings: Settings) -> int:
    """Serve until a signal; 0 after a clean stop, 1 when a part failed to start (one line on stderr,
    everything already started stopped again) or a background task died."""
    from passerelle.connector.app import build_gateway
    from passerelle.connector.lifecycle import StartupError, describe

    try:
        gateway = build_gateway(settings)
        return await gateway.run()
    except StartupError as exc:
        typer.echo(f"passerelle: cannot start: {exc}", err=True)
    except (OSError, ValueError) as exc:  # certificates, secrets and paths read while building
        typer.echo(f"passerelle: cannot start: {describe(exc)}", err=True)
    return 1


def check_config(config: ConfigOpt = None) -> None:
    """Validate the settings (file + PASSERELLE__* environment) and print every problem found."""
    settings = load(config)
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
