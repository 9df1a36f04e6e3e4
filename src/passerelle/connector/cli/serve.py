"""``passerelle run`` and ``passerelle check-config``."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

from passerelle.connector.cli.common import load
from passerelle.connector.cli.options import ConfigOpt, DataDirOpt
from passerelle.connector.preflight import preflight
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
    """Serve until a signal; 0 after a clean stop, 2 when the settings fail the pre-flight checks (every
    problem on stderr, one line each, nothing started), 1 when a part failed to start (one line on
    stderr, everything already started stopped again) or a background task died."""
    from passerelle.connector.app import build_gateway
    from passerelle.connector.lifecycle import StartupError, describe

    if report(preflight(settings, os.environ)):
        return 2
    try:
        gateway = build_gateway(settings)
        return await gateway.run()
    except StartupError as exc:
        typer.echo(f"passerelle: cannot start: {exc}", err=True)
    except (OSError, ValueError) as exc:  # certificates, secrets and paths read while building
        typer.echo(f"passerelle: cannot start: {describe(exc)}", err=True)
    return 1


def check_config(
    config: ConfigOpt = None,
    online: Annotated[
        bool, typer.Option("--online", help="Also ask the patient space for its capability statement")
    ] = False,
) -> None:
    """Validate the settings (file + PASSERELLE__* environment) the way `run` does and print every problem
    found, one line each with the setting's path (exit code 2 when there is one)."""
    settings = load(config)
    if report(preflight(settings, os.environ, online=online)):
        raise typer.Exit(2)
    typer.echo(f"configuration OK (environment={settings.environment}, journal={settings.journal.backend})")


def report(problems: list[str]) -> bool:
    """Print each problem on stderr, one line each; True when there was any."""
    for line in problems:
        typer.echo(f"configuration error: {line}", err=True)
    return bool(problems)
